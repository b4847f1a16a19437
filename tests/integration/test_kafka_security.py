"""TLS + SASL for real (issue 13, part 1): a broker with a SASL_SSL listener, its CA and
certificate made here with openssl, SCRAM-SHA-512 and PLAIN users.

The SDK emits, the worker (a real subprocess) stores into chDB exactly, and ``nodemeter
alerts tail`` and ``ensure_topics`` work, every client configured only through the
``NODEMETER_KAFKA_*`` variables. A wrong password and an untrusted certificate each give
an error naming the cause within seconds, for the SDK, ``ensure_topics``, ``alerts tail``
and the worker.

One secured broker for the module (a separate one: the rest of the suite keeps its
plain broker).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from worker_harness import WorkerProcess, query, usage, wait_caught_up

from nodemeter.errors import KafkaSecurityError
from nodemeter.kafka_security import CONFIG_FILE_VAR, KEYS, KafkaSecurity
from nodemeter.meter import Meter, MeterConfig
from nodemeter_stream.topics import Topics, ensure_topics

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

ALICE = ("alice", f"alice-{uuid.uuid4().hex[:12]}")  # SCRAM-SHA-512 (and -256)
BOB = ("bob", f"bob-{uuid.uuid4().hex[:12]}")  # PLAIN
WRONG = "not-the-password-4711"


def _free_port() -> int:
    from conftest import free_port

    return free_port()


@dataclass(frozen=True)
class Secured:
    bootstrap: str  # the SASL_SSL listener
    ca_file: Path  # the CA that signed the broker's certificate
    rogue_ca: Path  # a CA that did not
    home: Path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    for tool in ("openssl", "java"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is needed for the secured dev broker")
    from nodemeter_stream.devenv import kafka

    home = tmp_path_factory.mktemp("kafka-secured")
    cfg = kafka.KafkaDevConfig(
        port=_free_port(),
        controller_port=_free_port(),
        sasl_ssl_port=_free_port(),
        home=home,
        scram_users=dict([ALICE]),
        plain_users=dict([BOB]),
    )
    kafka.up(cfg)
    rogue, _ = kafka.make_ca(tmp_path_factory.mktemp("rogue-ca"), name="someone else's CA")
    try:
        assert cfg.sasl_ssl_bootstrap is not None
        yield Secured(cfg.sasl_ssl_bootstrap, cfg.ca_file, rogue, home)
    finally:
        kafka.down(cfg)


def security_env(
    s: Secured,
    *,
    user: tuple[str, str] = ALICE,
    mechanism: str = "SCRAM-SHA-512",
    ca: Path | None = None,
    password_file: Path | None = None,
) -> dict[str, str]:
    env = {
        "NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "NODEMETER_KAFKA_SASL_MECHANISM": mechanism,
        "NODEMETER_KAFKA_SASL_USERNAME": user[0],
        "NODEMETER_KAFKA_SSL_CA_FILE": str(ca or s.ca_file),
        "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME": "true",
    }
    if password_file is not None:
        password_file.write_text(user[1] + "\n")
        env["NODEMETER_KAFKA_SASL_PASSWORD_FILE"] = str(password_file)
    else:
        env["NODEMETER_KAFKA_SASL_PASSWORD"] = user[1]
    return env


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set this process's NODEMETER_KAFKA_* security variables (only those given)."""
    for key in (*KEYS, CONFIG_FILE_VAR):
        monkeypatch.delenv(key, raising=False)

    def apply(values: dict[str, str]) -> dict[str, str]:
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        return values

    return apply


def worker(s: Secured, topics: Topics, tmp_path: Path, env: dict[str, str]) -> WorkerProcess:
    return WorkerProcess(
        bootstrap=s.bootstrap,
        topic_prefix=topics.prefix,
        chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log",
        extra=("--agents", "ingest"),
        env=env,
    )


def test_sdk_worker_and_cli_round_trip_over_sasl_ssl_scram(
    secured: Secured,
    env: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confluent_kafka import Producer

    from nodemeter.cli import main
    from nodemeter.kafkalog import with_logger
    from nodemeter_stream.pricing import BudgetAlert
    from nodemeter_stream.pricing.budgets import alert_id
    from nodemeter_stream.pricing.records import encode_alert

    env(security_env(secured))
    topics = Topics(prefix=f"s{uuid.uuid4().hex[:8]}.")
    ensure_topics(secured.bootstrap, topics, timeout=20)

    # the SDK: only the environment says how to reach the broker
    events = [
        usage(f"tenant-{i % 3}", f"req-{i:03d}", "root", input_tokens=i + 1, cpu_ms=2 * i)
        for i in range(120)
    ]
    meter = Meter(
        MeterConfig(
            bootstrap_servers=secured.bootstrap, topic=topics.usage, spool_dir=tmp_path / "spool"
        )
    )
    try:
        meter.check_connection(timeout=15)
        for ev in events:
            meter.emit(ev)
        assert meter.flush(30) == 0
        assert meter.stats.failed == 0 and meter.stats.spooled == 0
    finally:
        meter.close()

    # the worker, a subprocess, with the password in a file this time (and so here)
    monkeypatch.delenv("NODEMETER_KAFKA_SASL_PASSWORD")
    wenv = env(security_env(secured, password_file=tmp_path / "sasl-password"))
    w = worker(secured, topics, tmp_path, wenv).start()
    try:
        wait_caught_up(secured.bootstrap, w.app_id, topics.usage, worker=w, timeout=120)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    log = w.log()
    assert ALICE[1] not in log
    assert "SASL_SSL, SCRAM-SHA-512 as 'alice'" in log  # the start line says how it connects
    want: dict[str, list[int]] = {}
    for ev in events:
        row = want.setdefault(ev.tenant, [0, 0, 0])
        row[0] += 1
        row[1] += ev.meters.input_tokens
        row[2] += ev.meters.cpu_ms
    got = query(
        w.url,
        w.database,
        "SELECT tenant, count(), sum(input_tokens), sum(cpu_ms) FROM usage_events FINAL "
        "GROUP BY tenant",
    )
    assert {r[0]: [int(x) for x in r[1:]] for r in got} == want

    # a CLI: an alert written through the secured listener, read by `nodemeter alerts tail`
    start, end_ = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    alert = BudgetAlert(
        alert_id=alert_id("tenant-0", "monthly", "2026-11", 80),
        tenant="tenant-0", budget="monthly", workflow="", window_id="2026-11",
        window_start=start, window_end=end_, threshold_percent=80,
        budget_amount=Decimal("100"), spent=Decimal("80"), currency="USD",
        hard_limit=False, crossed_at=start, event_id="e80",
    )  # fmt: skip
    p = Producer(with_logger({"bootstrap.servers": secured.bootstrap}))
    k, v = encode_alert(alert)
    p.produce(topics.budget_alerts, key=k, value=v)
    assert p.flush(30) == 0
    capsys.readouterr()
    rc = main(["alerts", "tail", "--bootstrap", secured.bootstrap, "--topic-prefix", topics.prefix,
               "--from-beginning", "--max", "1", "--idle-timeout", "20"])  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1
    assert "tenant-0 budget=monthly window=2026-11 threshold=80%" in out[0]


def test_plain_mechanism_with_an_explicit_configuration(
    secured: Secured, env: Any, tmp_path: Path
) -> None:
    """PLAIN through KafkaSecurity objects given in code (nothing in the environment)."""
    env({})
    sec = KafkaSecurity(
        protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username=BOB[0],
        sasl_password=BOB[1],
        ssl_ca_file=str(secured.ca_file),
    )
    topics = Topics(prefix=f"p{uuid.uuid4().hex[:8]}.")
    ensure_topics(secured.bootstrap, topics, timeout=20, security=sec)
    meter = Meter(
        MeterConfig(
            bootstrap_servers=secured.bootstrap,
            topic=topics.usage,
            spool_dir=tmp_path / "spool",
            kafka_security=sec,
        )
    )
    try:
        meter.check_connection(timeout=15)
        meter.emit(usage("acme", "req-plain", "root", input_tokens=5))
        assert meter.flush(30) == 0 and meter.stats.spooled == 0
    finally:
        meter.close()


CASES = {
    "wrong-password": ({"password": WRONG}, "Kafka authentication failed"),
    "untrusted-certificate": ({"rogue": True}, "Kafka TLS handshake failed"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_clients_fail_fast_naming_the_cause(
    case: str, secured: Secured, env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    how, cause = CASES[case]
    user = (ALICE[0], str(how.get("password", ALICE[1])))
    values = env(
        security_env(secured, user=user, ca=secured.rogue_ca if how.get("rogue") else None)
    )
    hint = "NODEMETER_KAFKA_SASL_PASSWORD" if "password" in how else "NODEMETER_KAFKA_SSL_CA_FILE"
    topics = Topics(prefix=f"f{uuid.uuid4().hex[:8]}.")

    # ensure_topics: an error naming the cause well before its 30 s timeout
    t0 = time.monotonic()
    with pytest.raises(KafkaSecurityError) as info:
        ensure_topics(secured.bootstrap, topics, timeout=30)
    assert time.monotonic() - t0 < 10
    assert str(info.value).startswith(cause) and hint in str(info.value)
    assert ALICE[1] not in str(info.value) and WRONG not in str(info.value)

    # a CLI: `alerts tail` (no idle timeout: it would wait forever) stops with the error
    from nodemeter.cli import main

    capsys.readouterr()
    t0 = time.monotonic()
    rc = main(["alerts", "tail", "--bootstrap", secured.bootstrap, "--topic-prefix", topics.prefix])
    err = capsys.readouterr().err
    assert rc == 1 and time.monotonic() - t0 < 10
    assert f"error: {cause}" in err and ALICE[1] not in err and WRONG not in err

    # the SDK: check_connection raises, flush returns within its timeout, nothing is lost
    meter = Meter(
        MeterConfig(
            bootstrap_servers=secured.bootstrap, topic=topics.usage, spool_dir=tmp_path / "spool"
        )
    )
    try:
        t0 = time.monotonic()
        with pytest.raises(KafkaSecurityError, match=cause):
            meter.check_connection(timeout=20)
        assert time.monotonic() - t0 < 10
        assert meter.connection_error is not None and hint in str(meter.connection_error)
        meter.emit(usage("acme", "req-refused", "root", input_tokens=1))
        t0 = time.monotonic()
        assert meter.flush(2.0) == 1
        assert time.monotonic() - t0 < 4
    finally:
        t0 = time.monotonic()
        meter.close()
    assert time.monotonic() - t0 < 8  # no 10 s flush against a broker that refuses us
    assert meter.stats.lost == 0 and meter.spooled_records() + meter.stats.spooled >= 1

    # the worker: exits non-zero within seconds, its last words naming the cause
    w = worker(secured, topics, tmp_path, values).start()
    assert w.proc is not None
    t0 = time.monotonic()
    rc = w.proc.wait(60)
    elapsed = time.monotonic() - t0
    log = w.log()
    assert rc != 0, log[-3000:]
    assert elapsed < 30, f"{elapsed:.0f} s\n{log[-3000:]}"
    assert f"nodemeter worker: error: {cause}" in log, log[-3000:]
    assert ALICE[1] not in log and WRONG not in log
