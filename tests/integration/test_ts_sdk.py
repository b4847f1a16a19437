"""The TypeScript SDK (producers/ts): its own tests; a request with parallel branches sent
to the real broker, read back with the worker's decoder field by field, then merged and
priced by the real worker into chDB; an outage: records spooled while the broker is
unreachable reach it exactly once afterwards, from the next run and from the same process;
and TLS with SASL configured from the environment, on a broker's SASL_SSL listener.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
import zlib
from collections import Counter, defaultdict
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
from nodemeter_stream.topics import Topics, ensure_topics

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

TS = Path(__file__).resolve().parents[2] / "producers" / "ts"
NODE = shutil.which("node")
NPM = shutil.which("npm")


def _h(*parts: str, n: int) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:n]


@pytest.fixture(scope="module")
def built() -> Path:
    """producers/ts with its dependencies (``make node-deps`` installs them) and built."""
    if NODE is None or NPM is None:
        pytest.skip("node/npm are not installed: the TypeScript SDK cannot run here")
    if not (TS / "node_modules").is_dir():
        subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=TS, check=True, timeout=300)
    subprocess.run([NPM, "run", "-s", "build"], cwd=TS, check=True, timeout=300)
    return TS


def test_npm_test_passes(built: Path) -> None:
    assert NPM is not None
    out = subprocess.run(
        [NPM, "test"], cwd=built, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "# fail 0" in out.stdout


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


# acme on the default book at list prices: no credit grant, so each line is rate x quantity
TENANTS_YAML = """
defaults:
  price_book: default
  time_zone: UTC
  billing_window: month
tenants:
  acme:
    price_book: default
    time_zone: UTC
    billing_window: month
"""


def _price_books(tmp_path: Path) -> Path:
    books = tmp_path / "books"
    books.mkdir()
    shutil.copy(EXAMPLES_DIR / "default.yaml", books / "default.yaml")
    (books / "tenants.yaml").write_text(TENANTS_YAML)
    return books


def _charge(rate: Rate, total: int) -> Decimal:
    """What a window total of one meter costs (the charge models this traffic meets)."""
    paid = max(total - rate.included_units, 0)
    if rate.charge is ChargeModel.FLAT:
        return rate.unit_price * paid
    assert rate.charge is ChargeModel.PACKAGE, rate
    return rate.package_price * (-(-paid // rate.package_size))


def _expected_lines(books: Path, usage: list[UsageEvent]) -> dict[tuple[str, str], Decimal]:
    """Amount per (node, meter) from the book's rates, computed here from the decoded events."""
    cfg = load_config(books)
    plan = cfg.plan_for("acme")
    per_node: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    window: dict[str, tuple[Rate, int]] = {}
    for u in usage:
        for meter, q in u.meters.quantities().items():
            found = cfg.resolve(
                plan.price_book,
                meter=meter,
                model=u.model or "",
                provider=u.provider or "",
                gpu_type=u.meters.gpu_type if meter == "gpu_ms" else "",
                at=u.event_time,
            )
            assert found is not None, (u.node_id, meter)
            _, rate = found
            if rate.charge is ChargeModel.FLAT:
                per_node[(u.node_id, meter)] += rate.unit_price * q
            else:  # package: priced on the window's total; here inside the included units
                rate0, total = window.get(meter, (rate, 0))
                window[meter] = (rate0, total + q)
                per_node[(u.node_id, meter)] += Decimal(0)
    for meter, (rate, total) in window.items():
        assert total <= rate.included_units and _charge(rate, total) == 0, (meter, total)
    return dict(per_node)


def test_parallel_request_reads_back_merges_and_prices_exactly(
    built: Path, kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    assert NODE is not None
    request_id = uuid.uuid4().hex
    proc = subprocess.run(
        [NODE, "examples/parallel.js", topics.usage, request_id],
        cwd=built,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"NODEMETER_KAFKA_BOOTSTRAP": kafka_bootstrap, "PATH": str(Path(NODE).parent)},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    msgs = _consume(kafka_bootstrap, topics.usage, 5)
    assert len(msgs) == 5

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
    assert isinstance(records[-1], RequestEnd)
    usage = [r for r in records if isinstance(r, UsageEvent)]

    root = _h(request_id, "__root__", n=16)
    split = _h(request_id, root, "", "split", "0", n=16)
    b1 = _h(request_id, root, "1", "llm.summarize", "0", n=16)
    b2 = _h(request_id, root, "2", "llm.summarize", "0", n=16)
    merge = _h(request_id, root, "", "merge", "0", n=16)
    by_node = {(u.node_id, u.branch_path): u for u in usage}
    assert sorted(by_node) == [
        ("llm.summarize", "1"),
        ("llm.summarize", "2"),
        ("merge", ""),
        ("split", ""),
    ]
    assert by_node[("split", "")].span_id == split
    assert by_node[("merge", "")].span_id == merge
    for i, span_id in ((1, b1), (2, b2)):
        u = by_node[("llm.summarize", str(i))]
        assert u.span_id == span_id
        assert u.parent_span_id == root
        assert (u.model, u.provider, u.workflow) == ("gpt-4o", "openai", "map-reduce")
        assert (u.meters.input_tokens, u.meters.output_tokens, u.meters.cached_input_tokens) == (
            100 * i,
            10 * i,
            i,
        )
        assert u.producer == "nodemeter-ts/0.1.0"
    for u in usage:
        assert u.tenant == "acme" and u.request_id == request_id and u.sequence == 0
        assert u.event_id == _h("acme", request_id, u.span_id, "0", n=32)
        assert u.status == "OK" and u.billable is True
    assert by_node[("split", "")].meters.cpu_ms == 3
    end = records[-1]
    assert (end.root_span_id, end.span_count, end.status, end.workflow) == (
        root,
        4,
        "OK",
        "map-reduce",
    )
    assert end.event_id == _h("acme", request_id, "__end__", "0", n=32)

    # The worker merges the request and prices it: exact rows in chDB, nothing dead-lettered.
    books = _price_books(tmp_path)
    expected = _expected_lines(books, usage)
    w = WorkerProcess(
        bootstrap=kafka_bootstrap,
        topic_prefix=topics.prefix,
        chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log",
        extra=("--agents", "ingest,pricing"),
        env={"NODEMETER_PRICEBOOKS": str(books)},
    )
    w.start()
    try:
        # ingest acks a batch only once its forwards are on the usage-by-tenant topic
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w)
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage_by_tenant, worker=w)
        time.sleep(1.5)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    total = {
        f: sum(getattr(u.meters, f) for u in usage)
        for f in ("input_tokens", "output_tokens", "cached_input_tokens", "cpu_ms", "api_calls")
    }
    assert total == {  # what the example records
        "input_tokens": 300,
        "output_tokens": 30,
        "cached_input_tokens": 3,
        "cpu_ms": 3,
        "api_calls": 2,
    }
    recs = query(
        w.url,
        w.database,
        "SELECT request_id, complete, expected_spans, spans_seen, root_span_id, status, "
        "input_tokens, output_tokens, cached_input_tokens, cpu_ms, api_calls "
        "FROM request_records FINAL",
    )
    assert recs == [[request_id, 1, 4, 4, root, "OK", *total.values()]]
    nodes = query(
        w.url,
        w.database,
        "SELECT node_id, events, input_tokens, output_tokens, cached_input_tokens, cpu_ms, "
        "api_calls FROM request_nodes FINAL ORDER BY node_id",
    )
    want_nodes: dict[str, list[int]] = {}
    for u in usage:
        row = want_nodes.setdefault(u.node_id, [0] * 6)
        m = u.meters
        for i, v in enumerate(
            (1, m.input_tokens, m.output_tokens, m.cached_input_tokens, m.cpu_ms, m.api_calls)
        ):
            row[i] += v
    assert nodes == [[n, *v] for n, v in sorted(want_nodes.items())]
    assert want_nodes["llm.summarize"][:2] == [2, 300]  # both branches merged into one node

    lines = query(
        w.url,
        w.database,
        "SELECT node_id, meter, request_id, line_kind, count(), toString(sum(quantity)), "
        "toString(sum(amount)), any(currency) FROM priced_lines FINAL "
        "GROUP BY node_id, meter, request_id, line_kind ORDER BY node_id, meter",
    )
    amounts = {(n, m): Decimal(a) for n, m, *_, a, _cur in lines}
    assert amounts == expected
    assert {(r, k, c) for _, _, r, k, _, _, _, c in lines} == {(request_id, "usage", "USD")}
    qty = {(n, m): int(q) for n, m, _, _, _, q, _, _ in lines}
    assert qty == {
        (u.node_id, m): sum(
            x.meters.quantities().get(m, 0) for x in usage if x.node_id == u.node_id
        )
        for u in usage
        for m in u.meters.quantities()
    }
    assert sum(expected.values()) > 0
    (dups,) = query(w.url, w.database, "SELECT count() = uniqExact(line_id) FROM priced_lines")
    assert dups[0] in (1, True), "a priced line was inserted twice"
    per_node = query(
        w.url,
        w.database,
        "SELECT node_id, toString(sum(amount)) FROM request_node_costs "
        f"WHERE request_id = '{request_id}' GROUP BY node_id ORDER BY node_id",
    )
    cost_by_node: dict[str, Decimal] = defaultdict(Decimal)
    for (node, _), amount in expected.items():
        cost_by_node[node] += amount
    assert {n: Decimal(a) for n, a in per_node} == dict(cost_by_node)
    (dead,) = query(w.url, w.database, "SELECT count() FROM dead_letters")
    assert dead == [0]


# --- outage: the broker unreachable, the records spooled, then delivered exactly once --------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _outage_js(*args: str, bootstrap: str, spool: Path) -> subprocess.Popen[str]:
    assert NODE is not None
    env = {
        **os.environ,
        "NODEMETER_KAFKA_BOOTSTRAP": bootstrap,
        "NODEMETER_SPOOL_DIR": str(spool),
    }
    return subprocess.Popen(
        [NODE, "examples/outage.js", *args],
        cwd=TS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _run_js(*args: str, bootstrap: str, spool: Path) -> dict[str, int]:
    proc = _outage_js(*args, bootstrap=bootstrap, spool=spool)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-4000:]
    stats: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return stats


def _spooled(spool: Path) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) of every record in the TS spool files."""
    out = []
    for f in sorted((spool / "ts").glob("*.spool")):
        assert f.stat().st_mode & 0o077 == 0  # records name tenants: owner only
        for line in f.read_text().splitlines():
            r = json.loads(line)
            # c: the CRC-32 of the line without its c member (producers/ts/README.md)
            body = line[: line.rindex(',"c":')] + "}"
            assert r["c"] == zlib.crc32(body.encode()), line
            out.append((r["t"], base64.b64decode(r["k"]), base64.b64decode(r["v"])))
    return out


def _check_exactly_once(
    bootstrap: str, topic: str, partitions: int, spooled: list[tuple[str, bytes, bytes]]
) -> None:
    msgs = _consume(bootstrap, topic, len(spooled), timeout=60)
    assert len(msgs) == len(spooled)  # _consume waits a second more: no late copies
    assert sorted((m.topic(), m.key(), m.value()) for m in msgs) == sorted(spooled)
    ids: Counter[str] = Counter()
    for m in msgs:
        assert m.partition() == zlib.crc32(m.key()) % partitions
        got = classify(
            m.value(),
            key=m.key(),
            source=Source(topic=m.topic(), partition=m.partition(), offset=m.offset()),
        )
        assert isinstance(got, Accepted), got
        ids[got.record.event_id] += 1
    assert len(ids) == len(spooled) and set(ids.values()) == {1}


N_REQUESTS = 25  # one usage event and one request end each


def test_unreachable_broker_spools_and_the_next_run_delivers_once(
    built: Path, kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    closed = f"127.0.0.1:{_free_port()}"  # nothing listens there
    first = _run_js("emit", topics.usage, str(N_REQUESTS), bootstrap=closed, spool=spool)
    want = 2 * N_REQUESTS
    assert (first["produced"], first["delivered"], first["spooled"], first["failed"]) == (
        want,
        0,
        want,
        0,
    )
    assert first["left"] >= 1
    spooled = _spooled(spool)
    assert len(spooled) == want and {t for t, _, _ in spooled} == {topics.usage}
    assert {k for _, k, _ in spooled} == {f"acme/ts-outage-{i}".encode() for i in range(N_REQUESTS)}

    # the next run, with the broker reachable, replays the spool and empties it
    second = _run_js("replay", topics.usage, bootstrap=kafka_bootstrap, spool=spool)
    assert (second["sent"], second["replayed"], second["left"]) == (want, want, 0), second
    assert list((spool / "ts").iterdir()) == []
    # a run after that finds nothing to send
    third = _run_js("replay", topics.usage, bootstrap=kafka_bootstrap, spool=spool)
    assert (third["sent"], third["left"]) == (0, 0), third
    _check_exactly_once(kafka_bootstrap, topics.usage, topics.partitions, spooled)


def test_damaged_spool_line_is_skipped_and_every_other_record_delivered(
    built: Path, kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    """A byte of a spool file flipped between runs (the line still JSON, only its checksum
    tells): the next run delivers every other record once, the ones of that file before and
    after the damage included, counts and names the damaged line, keeps the file in
    quarantine/ as found, and leaves nothing to replay."""
    spool = tmp_path / "spool"
    closed = f"127.0.0.1:{_free_port()}"
    first = _run_js("emit", topics.usage, str(N_REQUESTS), bootstrap=closed, spool=spool)
    want = 2 * N_REQUESTS
    assert (first["spooled"], first["failed"]) == (want, 0), first
    spooled = _spooled(spool)
    assert len(spooled) == want
    # the file with the most records; a base64 character of its middle record's value
    files = sorted((spool / "ts").glob("*.spool"))
    target = max(files, key=lambda f: len(f.read_bytes().splitlines()))
    lines = target.read_bytes().splitlines(keepends=True)
    mid = len(lines) // 2
    hit = json.loads(lines[mid])
    start = lines[mid].index(b'"v":"') + 5 + 8
    old = lines[mid][start : start + 1]
    lines[mid] = lines[mid][:start] + (b"B" if old == b"A" else b"A") + lines[mid][start + 1 :]
    json.loads(lines[mid])  # still JSON: the old format would have sent the wrong bytes
    damaged = b"".join(lines)
    target.write_bytes(damaged)
    lost = (hit["t"], base64.b64decode(hit["k"]), base64.b64decode(hit["v"]))

    proc = _outage_js("replay", topics.usage, bootstrap=kafka_bootstrap, spool=spool)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-4000:]
    second = json.loads(out.strip().splitlines()[-1])
    assert (second["sent"], second["replayed"], second["damaged"], second["quarantined"]) == (
        want - 1,
        want - 1,
        1,
        1,
    ), second
    assert second["left"] == 0
    assert f"spool file {target.name} line {mid + 1} damaged (checksum mismatch)" in err, err
    assert sorted(p.name for p in (spool / "ts").iterdir()) == ["quarantine"]
    kept = spool / "ts" / "quarantine" / f"{target.name}.damaged"
    assert kept.read_bytes() == damaged and kept.stat().st_mode & 0o077 == 0
    rest = list(spooled)
    rest.remove(lost)
    # the records of the damaged file around the damaged line are among those delivered
    assert len(lines) >= 3  # one file here: the sends fail for longer than the emits take
    around = {json.loads(lines[mid - 1])["k"], json.loads(lines[mid + 1])["k"]}
    assert around <= {base64.b64encode(k).decode() for _, k, _ in rest}
    _check_exactly_once(kafka_bootstrap, topics.usage, topics.partitions, rest)


def test_broker_coming_up_later_gets_the_spool_from_the_same_process(
    built: Path, tmp_path: Path
) -> None:
    """The process emits while its broker is not up yet and stays up: its replay timer
    sends the spool once the broker (a dedicated one, started late) and its topics exist."""
    from nodemeter_stream.devenv import kafka

    cfg = kafka.KafkaDevConfig(
        port=_free_port(), controller_port=_free_port(), home=tmp_path / "kafka"
    )
    bootstrap = f"127.0.0.1:{cfg.port}"
    topics = Topics(prefix=f"o{uuid.uuid4().hex[:8]}.")
    spool = tmp_path / "spool"
    want = 2 * N_REQUESTS
    proc = _outage_js(
        "emit", topics.usage, str(N_REQUESTS), "240000", bootstrap=bootstrap, spool=spool
    )
    try:
        assert proc.stdout is not None
        spooled_line = json.loads(proc.stdout.readline())  # printed once flush() settled
        assert (spooled_line["delivered"], spooled_line["spooled"]) == (0, want), spooled_line
        spooled = _spooled(spool)
        assert len(spooled) == want
        up = kafka.up(cfg)
        assert up == bootstrap or up.endswith(f":{cfg.port}"), up
        ensure_topics(up, topics)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-4000:]
        stats = json.loads(out.strip().splitlines()[-1])
        assert (stats["delivered"], stats["spooled"], stats["replayed"], stats["left"]) == (
            0,
            want,
            want,
            0,
        ), stats
        assert list((spool / "ts").iterdir()) == []
        _check_exactly_once(up, topics.usage, topics.partitions, spooled)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        kafka.down(cfg)


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_broker_stopped_mid_traffic_then_every_event_arrives(built: Path, tmp_path: Path) -> None:
    """As the Python SDK's outage test: a dedicated broker stops while the process keeps
    serving requests and starts again; every event id arrives, a copy only with the same
    bytes (a record in flight at the stop may be written and also spooled)."""
    from nodemeter_stream.devenv import kafka

    cfg = kafka.KafkaDevConfig(
        port=_free_port(), controller_port=_free_port(), home=tmp_path / "kafka"
    )
    bootstrap = kafka.up(cfg)
    topics = Topics(prefix=f"o{uuid.uuid4().hex[:8]}.")
    spool, stop = tmp_path / "spool", tmp_path / "stop"
    proc: subprocess.Popen[str] | None = None
    try:
        ensure_topics(bootstrap, topics)
        proc = _outage_js("traffic", topics.usage, str(stop), bootstrap=bootstrap, spool=spool)
        lines: list[dict[str, Any]] = []

        def read() -> None:
            assert proc is not None and proc.stdout is not None
            for line in proc.stdout:
                lines.append(json.loads(line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        last = lambda key: lines[-1][key] if lines else 0  # noqa: E731
        _wait(lambda: last("delivered") >= 100, 60, "deliveries before the outage")
        kafka.down(cfg)
        before = last("emitted")
        _wait(lambda: last("spooled") >= 40, 90, "records spooled during the outage")
        kafka.up(cfg)
        time.sleep(1.0)
        stop.touch()
        proc.wait(240)
        reader.join(10)
        err = proc.stderr.read() if proc.stderr else ""
        assert proc.returncode == 0, err[-4000:]
        final = lines[-1]
        assert final.get("final") is True, final
        assert final["emitted"] > before + 20  # the caller kept going while the broker was down
        assert (final["failed"], final["left"]) == (0, 0), final
        assert final["replayed"] == final["spooled"] >= 40, final
        assert final["delivered"] + final["spooled"] == final["produced"] == 2 * final["emitted"]

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": uuid.uuid4().hex,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([topics.usage])
        expected = 2 * final["emitted"]
        counts: Counter[str] = Counter()
        payloads: dict[str, set[bytes]] = defaultdict(set)
        requests: Counter[str] = Counter()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            msg: Any = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got = classify(
                    msg.value(),
                    key=msg.key(),
                    source=Source(
                        topic=msg.topic(), partition=msg.partition(), offset=msg.offset()
                    ),
                )
                assert isinstance(got, Accepted), got
                if got.record.event_id not in counts:
                    requests[got.record.request_id] += 1
                counts[got.record.event_id] += 1
                payloads[got.record.event_id].add(msg.value())
            elif len(counts) >= expected:
                break  # an idle poll after everything arrived: no late copies either
        consumer.close()
        assert len(counts) == expected, (len(counts), expected, final)  # nothing lost
        assert all(len(p) == 1 for p in payloads.values())  # a copy has the same bytes
        copies = sum(c - 1 for c in counts.values())
        assert copies <= final["spooled"], (copies, final)
        assert set(requests) == {f"ts-traffic-{i}" for i in range(final["emitted"])}
        assert set(requests.values()) == {2}  # a usage event and a request end each
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
        kafka.down(cfg)


# --- TLS and SASL from the environment (NODEMETER_KAFKA_*), on a secured broker -------------

SCRAM_USER = ("alice", f"alice-{uuid.uuid4().hex[:12]}")
PLAIN_USER = ("bob", f"bob-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The secured dev broker (conftest): its SASL_SSL bootstrap and CA."""
    from conftest import secured_dev_broker

    with secured_dev_broker(
        tmp_path_factory.mktemp("kafka-secured-ts"),
        scram_users=dict([SCRAM_USER]),
        plain_users=dict([PLAIN_USER]),
    ) as broker:
        yield broker


def _base_env() -> dict[str, str]:
    """This process's environment without any Kafka security setting of its own."""
    from nodemeter.kafka_security import CONFIG_FILE_VAR, KEYS

    return {k: v for k, v in os.environ.items() if k not in (*KEYS, CONFIG_FILE_VAR)}


def _parallel_js(
    topic: str, request_id: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run(
        [NODE, "examples/parallel.js", topic, request_id],
        cwd=TS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(
    ("mechanism", "user", "via_file"),
    [
        ("SCRAM-SHA-512", SCRAM_USER, False),
        ("SCRAM-SHA-256", SCRAM_USER, False),
        ("PLAIN", PLAIN_USER, True),
    ],
    ids=["scram-sha-512", "scram-sha-256", "plain-config-file"],
)
def test_tls_and_sasl_from_the_environment(
    built: Path,
    secured_broker: tuple[str, Path],
    tmp_path: Path,
    mechanism: str,
    user: tuple[str, str],
    via_file: bool,
) -> None:
    """The example, configured only from NODEMETER_KAFKA_* (PLAIN: through the file
    NODEMETER_KAFKA_CONFIG names), sends over SASL_SSL with the host name checked; the
    records are read back from the broker and decode."""
    from nodemeter.kafka_security import KafkaSecurity

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
    topics = Topics(prefix=f"ts{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, topics, security=sec)
    if via_file:
        conf = tmp_path / "kafka.env"
        conf.write_text(
            "# the broker's credentials\n"
            + "".join(f"export {k}={v}\n" for k, v in security.items())
        )
        env = {**_base_env(), "NODEMETER_KAFKA_CONFIG": str(conf)}
    else:
        env = {**_base_env(), **security}
    request_id = uuid.uuid4().hex
    proc = _parallel_js(topics.usage, request_id, {**env, "NODEMETER_KAFKA_BOOTSTRAP": bootstrap})
    assert proc.returncode == 0, proc.stderr[-4000:]
    msgs = _consume(bootstrap, topics.usage, 5, security=sec.librdkafka())
    assert len(msgs) == 5
    key = f"acme/{request_id}".encode()
    records = []
    for m in msgs:
        assert m.key() == key
        assert m.partition() == zlib.crc32(key) % topics.partitions
        got = classify(
            m.value(),
            key=m.key(),
            source=Source(topic=m.topic(), partition=m.partition(), offset=m.offset()),
        )
        assert isinstance(got, Accepted), got
        records.append(got.record)
    assert isinstance(records[-1], RequestEnd)
    assert sorted(r.node_id for r in records if isinstance(r, UsageEvent)) == [
        "llm.summarize",
        "llm.summarize",
        "merge",
        "split",
    ]


def test_wrong_password_is_refused_and_nothing_delivered(
    built: Path, secured_broker: tuple[str, Path]
) -> None:
    """The broker refuses the credentials: the example fails within seconds, the error
    names SASL and the variables to check, the password is in no output, and the topic
    stays empty."""
    from nodemeter.kafka_security import KafkaSecurity

    bootstrap, ca = secured_broker
    wrong = f"not-the-password-{uuid.uuid4().hex[:8]}"
    right = {
        "NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "NODEMETER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "NODEMETER_KAFKA_SASL_USERNAME": SCRAM_USER[0],
        "NODEMETER_KAFKA_SASL_PASSWORD": SCRAM_USER[1],
        "NODEMETER_KAFKA_SSL_CA_FILE": str(ca),
    }
    sec = KafkaSecurity.from_values(right)
    topics = Topics(prefix=f"ts{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, topics, security=sec)
    env = {
        **_base_env(),
        **right,
        "NODEMETER_KAFKA_SASL_PASSWORD": wrong,
        "NODEMETER_KAFKA_BOOTSTRAP": bootstrap,
    }
    started = time.monotonic()
    bad = _parallel_js(topics.usage, uuid.uuid4().hex, env)
    took = time.monotonic() - started
    assert bad.returncode == 1, (bad.returncode, bad.stderr[-3000:])
    assert "SASL" in bad.stderr, bad.stderr[-3000:]
    assert (
        f"Kafka authentication failed at {bootstrap} (SASL_SSL, SCRAM-SHA-512 as 'alice'"
        in bad.stderr
    ), bad.stderr[-3000:]
    assert "check NODEMETER_KAFKA_SASL_USERNAME ('alice')" in bad.stderr, bad.stderr[-3000:]
    assert wrong not in bad.stderr + bad.stdout
    assert took < 60, took  # refused, not retried until some timeout
    assert _consume(bootstrap, topics.usage, 1, timeout=5.0, security=sec.librdkafka()) == []


def test_certificate_from_another_ca_is_refused_naming_tls(
    built: Path, secured_broker: tuple[str, Path], tmp_path: Path
) -> None:
    """NODEMETER_KAFKA_SSL_CA_FILE names a CA that did not sign the broker's certificate:
    the handshake fails, and the error says so and names that file."""
    from nodemeter_stream.devenv import kafka

    bootstrap, _ = secured_broker
    other_ca, _ = kafka.make_ca(tmp_path)
    env = {
        **_base_env(),
        "NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "NODEMETER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "NODEMETER_KAFKA_SASL_USERNAME": SCRAM_USER[0],
        "NODEMETER_KAFKA_SASL_PASSWORD": SCRAM_USER[1],
        "NODEMETER_KAFKA_SSL_CA_FILE": str(other_ca),
        "NODEMETER_KAFKA_BOOTSTRAP": bootstrap,
    }
    bad = _parallel_js(f"ts{uuid.uuid4().hex[:8]}.nodemeter.usage.v1", uuid.uuid4().hex, env)
    assert bad.returncode == 1, (bad.returncode, bad.stderr[-3000:])
    assert f"Kafka TLS handshake failed at {bootstrap}" in bad.stderr, bad.stderr[-3000:]
    assert f"NODEMETER_KAFKA_SSL_CA_FILE={other_ca}" in bad.stderr, bad.stderr[-3000:]
    assert SCRAM_USER[1] not in bad.stderr + bad.stdout
