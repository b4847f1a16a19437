"""The Go SDK (producers/go): its own tests (`go test`), then a request with parallel
branches sent to the real broker, read back with the worker's decoder field by field,
merged and priced by the real worker (ingest and pricing, the example price books) into
ClickHouse. The priced lines are checked against amounts computed here from the book's
rates and the known quantities, in Decimal."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from worker_harness import WorkerProcess, query, wait_caught_up

from nodemeter.events import RequestEnd, UsageEvent
from nodemeter_stream.ingest.decode import Accepted, Source, classify
from nodemeter_stream.pricing import load_config
from nodemeter_stream.pricing.book import EXAMPLES_DIR, ChargeModel, Rate
from nodemeter_stream.pricing.windows import window_for, zone

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

GO_DIR = Path(__file__).resolve().parents[2] / "producers" / "go"
GO = shutil.which("go")


def _h(*parts: str, n: int) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:n]


def _go(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert GO is not None
    return subprocess.run(
        [GO, *args], cwd=GO_DIR, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def emitter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's dependencies (``make go-deps`` downloads them too) and the example built."""
    if GO is None:
        pytest.skip("go is not installed: the Go SDK cannot be built here")
    dl = _go("mod", "download")
    assert dl.returncode == 0, dl.stderr[-4000:]
    exe = tmp_path_factory.mktemp("go") / "parallel"
    build = _go("build", "-o", str(exe), "./examples/parallel")
    assert build.returncode == 0, build.stderr[-4000:]
    return exe


def test_go_test_passes(emitter: Path) -> None:
    out = _go("test", "-count=1", "-v", "./...")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    # the vector tests ran, not just compiled
    for name in ("TestUsageEventVectors", "TestInvalidRecordVectors", "TestRequestVectors"):
        assert f"--- PASS: {name}" in out.stdout


def _consume(
    bootstrap: str,
    topic: str,
    n: int,
    timeout: float = 30.0,
    *,
    security: dict[str, str] | None = None,
) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **(security or {}),
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
        extra = time.monotonic() + 1.0  # anything beyond n would be a duplicate
        while time.monotonic() < extra:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        consumer.close()
    return out


def test_parallel_request_reads_back_and_merges_exactly(
    emitter: Path, kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    request_id = uuid.uuid4().hex
    proc = subprocess.run(
        [str(emitter), topics.usage, request_id],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NODEMETER_KAFKA_BOOTSTRAP": kafka_bootstrap},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    msgs = _consume(kafka_bootstrap, topics.usage, 6)
    assert len(msgs) == 6

    key = f"acme/{request_id}".encode()
    records: list[UsageEvent | RequestEnd] = []
    for m in msgs:
        assert m.key() == key
        # librdkafka's consistent_random: the partition the Python SDK would pick
        assert m.partition() == zlib.crc32(key) % topics.partitions
        got = classify(
            m.value(),
            key=m.key(),
            source=Source(topic=m.topic(), partition=m.partition(), offset=m.offset()),
        )
        assert isinstance(got, Accepted), got
        records.append(got.record)
    # one partition, in order: the request end comes last
    end = records[-1]
    assert isinstance(end, RequestEnd)
    usage = [r for r in records if isinstance(r, UsageEvent)]

    root = _h(request_id, "__root__", n=16)
    by_node = {(u.node_id, u.branch_path): u for u in usage}
    assert sorted(by_node) == [
        ("llm.summarize", "1"),
        ("llm.summarize", "2"),
        ("llm.summarize", "3"),
        ("merge", ""),
        ("plan", ""),
    ]
    for (node, path), u in by_node.items():
        assert u.span_id == _h(request_id, root, path, node, "0", n=16)
        assert u.parent_span_id == root
        assert u.event_id == _h("acme", request_id, u.span_id, "0", n=32)
        assert (u.tenant, u.request_id, u.sequence, u.workflow) == (
            "acme",
            request_id,
            0,
            "map-reduce",
        )
        assert (u.status, u.billable, u.producer) == ("OK", True, "nodemeter-go/0.1.0")
        assert dict(u.attributes) == {"lang": "go"}
    for i in (1, 2, 3):
        u = by_node[("llm.summarize", str(i))]
        assert (u.model, u.provider) == ("gpt-4o", "openai")
        # prompt_tokens 101 i, cached i: input counts the uncached part only
        m = u.meters
        assert (m.input_tokens, m.output_tokens, m.cached_input_tokens, m.api_calls) == (
            100 * i,
            10 * i,
            i,
            1,
        )
    merge = by_node[("merge", "")]
    assert (merge.model, merge.provider) == ("claude-sonnet-4", "anthropic")
    mm = merge.meters
    assert (mm.input_tokens, mm.output_tokens, mm.cached_input_tokens, mm.cache_write_tokens) == (
        50,
        5,
        20,
        10,
    )
    plan = by_node[("plan", "")]
    assert (plan.meters.cpu_ms, plan.model, plan.provider) == (3, None, None)
    assert (end.event_id, end.root_span_id, end.span_count, end.status, end.workflow) == (
        _h("acme", request_id, "__end__", "0", n=32),
        root,
        5,
        "OK",
        "map-reduce",
    )

    # The worker merges and prices the request: ingest and pricing, the example books.
    w = WorkerProcess(
        bootstrap=kafka_bootstrap,
        topic_prefix=topics.prefix,
        chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log",
        extra=("--agents", "ingest,pricing"),
        env={"NODEMETER_PRICEBOOKS": str(EXAMPLES_DIR), "NODEMETER_PRICING_TICK_S": "0"},
    )
    w.start()
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w)
        # ingest commits a batch once its forward is on the broker, pricing once
        # ClickHouse acknowledged its lines: caught up on both, everything is stored
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage_by_tenant, worker=w)
        time.sleep(1.5)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    recs = query(
        w.url,
        w.database,
        "SELECT request_id, complete, expected_spans, spans_seen, root_span_id, status, "
        "input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, cpu_ms, api_calls "
        "FROM request_records FINAL",
    )
    assert recs == [[request_id, 1, 5, 5, root, "OK", 650, 65, 26, 10, 3, 4]]
    nodes = query(
        w.url,
        w.database,
        "SELECT node_id, events, input_tokens, cached_input_tokens FROM request_nodes FINAL "
        "ORDER BY node_id",
    )
    assert nodes == [["llm.summarize", 3, 600, 6], ["merge", 1, 50, 20], ["plan", 1, 0, 0]]

    lines = query(
        w.url,
        w.database,
        "SELECT event_id, line_kind, node_id, model, provider, meter, toString(quantity), "
        "toString(unit_price), toString(amount), toString(cache_savings), charge_model, tier, "
        "price_book, price_book_version, window_id, currency FROM priced_lines FINAL "
        f"WHERE request_id = '{request_id}'",
    )
    priced = sorted(
        (e, kind, node, model, prov, meter, int(q), D(p), D(a), D(cs), ch, int(t), book, int(v), wid, cur)
        for e, kind, node, model, prov, meter, q, p, a, cs, ch, t, book, v, wid, cur in lines
    )  # fmt: skip
    assert priced == expected_lines("acme", usage)
    (dead,) = query(w.url, w.database, "SELECT count() FROM dead_letters")
    assert dead == [0]


D = Decimal
PricedRow = tuple[str, str, str, str, str, str, int, Decimal, Decimal, Decimal, str, int, str, int, str, str]  # fmt: skip


def _pieces(rate: Rate, position: int, qty: int) -> list[tuple[str, int, int, Decimal]]:
    """(charge model, tier, quantity, unit price) for ``qty`` units at window ``position``:
    included units first, then a flat price, or graduated tiers by position."""
    out: list[tuple[str, int, int, Decimal]] = []
    free = max(0, min(position + qty, rate.included_units) - position)
    if free:
        out.append(("included", 0, free, D(0)))
    lo, end = position + free, position + qty
    if lo == end:
        return out
    if rate.charge is ChargeModel.FLAT:
        out.append(("flat", 0, end - lo, rate.unit_price))
        return out
    assert rate.charge is ChargeModel.GRADUATED, rate  # the rates this request reaches
    floor = 0
    for i, tier in enumerate(rate.tiers, 1):
        top = end if tier.up_to is None else min(end, tier.up_to)
        if top > max(lo, floor):
            out.append(("graduated", i, top - max(lo, floor), tier.unit_price))
        floor = tier.up_to if tier.up_to is not None else end
        if floor >= end:
            break
    return out


def expected_lines(tenant: str, usage: list[UsageEvent]) -> list[PricedRow]:
    """The priced lines of ``usage``, from the example books' rates, computed here: one
    line per meter and tier, amount = quantity x unit price; cached input tokens with
    their saving against the model's input price; then the tenant's credit grant,
    consumed first (a credit line of minus the event's gross while the grant lasts)."""
    cfg = load_config(EXAMPLES_DIR)
    plan = cfg.plan_for(tenant)
    tz = zone(plan.time_zone)
    position: dict[tuple[str, str, str], int] = defaultdict(int)
    grant_used: dict[str, Decimal] = defaultdict(Decimal)
    out: list[PricedRow] = []
    for u in sorted(usage, key=lambda e: (e.event_time, e.event_id)):
        win = window_for(u.event_time, plan.billing_window, tz)
        model, provider = u.model or "", u.provider or ""
        gross = D(0)
        for meter, qty in sorted(u.meters.quantities().items()):
            found = cfg.resolve(plan.price_book, meter=meter, model=model, provider=provider,
                                gpu_type="", at=u.event_time)  # fmt: skip
            assert found is not None, (meter, model)
            version, rate = found
            saving_price = None
            if meter == "cached_input_tokens":
                inp = cfg.resolve(plan.price_book, meter="input_tokens", model=model,
                                  provider=provider, gpu_type="", at=u.event_time)  # fmt: skip
                assert inp is not None and inp[1].charge is ChargeModel.FLAT
                saving_price = inp[1].unit_price
            key = (meter, model, provider)
            for charge, tier, q, price in _pieces(rate, position[key], qty):
                amount = price * q
                saving = (saving_price * q - amount) if saving_price is not None else D(0)
                out.append((u.event_id, "usage", u.node_id, model, provider, meter, q, price,
                            amount, saving, charge, tier, version.book, version.version,
                            win.window_id, "USD"))  # fmt: skip
                gross += amount
            position[key] += qty
        gv = cfg.grant_version(plan.price_book, win.start, win.end)
        grant = gv.credit_grant if gv is not None else D(0)
        credit = min(gross, grant - grant_used[win.window_id])
        if credit > 0:
            assert gv is not None
            grant_used[win.window_id] += credit
            out.append((u.event_id, "credit", u.node_id, model, provider, "credit_grant", 0,
                        D(0), -credit, D(0), "credit", 0, gv.book, gv.version, win.window_id,
                        "USD"))  # fmt: skip
    return sorted(out)


# --- TLS and SASL from the environment (ConfigFromEnv), on a secured broker -----------

SCRAM_USER = ("alice", f"alice-{uuid.uuid4().hex[:12]}")
PLAIN_USER = ("bob", f"bob-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The secured dev broker (conftest): its SASL_SSL bootstrap and CA."""
    from conftest import secured_dev_broker

    with secured_dev_broker(
        tmp_path_factory.mktemp("kafka-secured-go"),
        scram_users=dict([SCRAM_USER]),
        plain_users=dict([PLAIN_USER]),
    ) as broker:
        yield broker


@pytest.mark.parametrize(
    ("mechanism", "user"),
    [("SCRAM-SHA-512", SCRAM_USER), ("SCRAM-SHA-256", SCRAM_USER), ("PLAIN", PLAIN_USER)],
)
def test_tls_and_sasl_from_the_environment(
    emitter: Path,
    secured_broker: tuple[str, Path],
    tmp_path: Path,
    mechanism: str,
    user: tuple[str, str],
) -> None:
    from nodemeter.kafka_security import CONFIG_FILE_VAR, KEYS, KafkaSecurity
    from nodemeter_stream.topics import Topics, ensure_topics

    bootstrap, ca = secured_broker
    password_file = tmp_path / "password"
    password_file.write_text(user[1] + "\n")
    security = {
        "NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "NODEMETER_KAFKA_SASL_MECHANISM": mechanism,
        "NODEMETER_KAFKA_SASL_USERNAME": user[0],
        "NODEMETER_KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "NODEMETER_KAFKA_SSL_CA_FILE": str(ca),
        "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME": "true",
    }
    sec = KafkaSecurity.from_values(security)
    topics = Topics(prefix=f"go{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, topics, security=sec)
    request_id = uuid.uuid4().hex
    base = {k: v for k, v in os.environ.items() if k not in (*KEYS, CONFIG_FILE_VAR)}
    proc = subprocess.run(
        [str(emitter), topics.usage, request_id],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, **security, "NODEMETER_KAFKA_BOOTSTRAP": bootstrap},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    msgs = _consume(bootstrap, topics.usage, 6, security=sec.librdkafka())
    assert len(msgs) == 6
    key = f"acme/{request_id}".encode()
    assert {m.key() for m in msgs} == {key}
    records = [_record(m) for m in msgs]  # each decodes and validates
    assert sum(isinstance(r, RequestEnd) for r in records) == 1


def test_wrong_password_is_refused_not_delivered(
    emitter: Path, secured_broker: tuple[str, Path], tmp_path: Path
) -> None:
    """The broker refuses the credentials: nothing is delivered, the example fails after
    franz-go's delivery timeout (30 s) naming SASL, and the password is not printed."""
    from nodemeter.kafka_security import CONFIG_FILE_VAR, KEYS

    bootstrap, ca = secured_broker
    wrong = "not-the-password-4711"
    topic = f"go{uuid.uuid4().hex[:8]}.nodemeter.usage.v1"
    base = {k: v for k, v in os.environ.items() if k not in (*KEYS, CONFIG_FILE_VAR)}
    security = {
        "NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "NODEMETER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "NODEMETER_KAFKA_SASL_USERNAME": SCRAM_USER[0],
        "NODEMETER_KAFKA_SASL_PASSWORD": wrong,
        "NODEMETER_KAFKA_SSL_CA_FILE": str(ca),
    }
    bad = subprocess.run(
        [str(emitter), topic, uuid.uuid4().hex],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, **security, "NODEMETER_KAFKA_BOOTSTRAP": bootstrap},
    )
    assert bad.returncode != 0
    assert "SASL" in bad.stderr, bad.stderr[-3000:]
    assert wrong not in bad.stderr + bad.stdout


def _record(m: Any) -> UsageEvent | RequestEnd:
    source = Source(topic=m.topic(), partition=m.partition(), offset=m.offset())
    got = classify(m.value(), key=m.key(), source=source)
    assert isinstance(got, Accepted), got
    return got.record
