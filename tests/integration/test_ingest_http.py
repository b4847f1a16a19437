"""``nodemeter ingest-http`` on loopback, with the real broker behind it.

A real HTTP client (``http.client``) talks to the service; what it accepted is read back
from the topic and decoded exactly, and once through the real worker into chDB. The
service runs in this process (a thread) except for the SIGTERM test, which runs the
command itself.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from worker_harness import WorkerProcess, consume_all, query, wait_caught_up

from nodemeter.codec import decode_record
from nodemeter.events import GpuSource, Meters, Record, RequestEnd, UsageEvent
from nodemeter.ingest_http.cloudevents import (
    BATCH,
    PRODUCER,
    REQUEST_END_TYPE,
    STRUCTURED,
    USAGE_TYPE,
    event_id_of,
)
from nodemeter.ingest_http.keys import ApiKey, KeyRing, digest_of
from nodemeter.ingest_http.server import IngestConfig, IngestService
from nodemeter.meter import Meter, MeterConfig

pytestmark = [pytest.mark.kafka]

ACME = "acme-0123456789abcdef-key"
GLOBEX = "globex-0123456789abcdef-key"
SLOW = "slow-0123456789abcdef-key"
SOURCE = "//svc.example/rag"
T = datetime(2026, 11, 1, 12, 0, 0, 125000, tzinfo=UTC)


def ce(ce_id: str, data: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": ce_id, "source": SOURCE, "type": USAGE_TYPE,
            "time": "2026-11-01T12:00:00.125Z", "data": data, **over}  # fmt: skip


def keyring() -> KeyRing:
    return KeyRing([
        ApiKey("acme", "acme", digest_of(ACME)),
        ApiKey("globex", "globex", digest_of(GLOBEX)),
        ApiKey("slow", "slowco", digest_of(SLOW), rate=0.5, burst=20),
    ])  # fmt: skip


def start_service(bootstrap: str, topic: str, spool: Path, **meter: Any) -> IngestService:
    m = Meter(
        MeterConfig(bootstrap_servers=bootstrap, topic=topic, spool_dir=spool,
                    report_successes=True, producer_name=PRODUCER, **meter)
    )  # fmt: skip
    config = IngestConfig(
        port=0, max_body_bytes=32 * 1024, max_events=20, rate=10_000, burst=20_000
    )
    return IngestService(config, keyring(), m).start()


@pytest.fixture
def service(kafka_bootstrap: str, topics: Any, tmp_path: Path) -> Iterator[IngestService]:
    svc = start_service(kafka_bootstrap, topics.usage, tmp_path / "spool")
    deadline = time.monotonic() + 30
    while not svc.ready():
        assert time.monotonic() < deadline, "the service never became ready"
        time.sleep(0.1)
    try:
        yield svc
    finally:
        svc.shutdown()


def call(
    svc: IngestService, method: str, path: str, body: Any = None, *, key: str | None = ACME,
    ctype: str = BATCH, headers: dict[str, str] | None = None, raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    host, port = svc.address
    conn = http.client.HTTPConnection(host, port, timeout=60)
    h = {"Content-Type": ctype, **(headers or {})}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=payload, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    ctype_out = resp.getheader("Content-Type") or ""
    parsed = json.loads(data) if ctype_out.startswith("application/json") else data.decode()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed


def test_a_batch_is_taken_event_by_event_and_lands_exactly(
    service: IngestService, kafka_bootstrap: str, topics: Any
) -> None:
    batch = [
        ce("e1", {"request_id": "r1", "node_id": "llm.answer", "model": "gpt-4o",
                  "input_tokens": 812, "output_tokens": 96, "cached_input_tokens": 512}),
        ce("e2", {"request_id": "r1", "node_id": "llm", "input_tokens": -1}),
        ce("e3", {"node_id": "llm", "api_calls": 1}, subject="globex/r9"),
        ce("e4", {"span_count": 1}, type=REQUEST_END_TYPE, subject="acme/r1"),
    ]  # fmt: skip
    status, _, body = call(service, "POST", "/v1/events", batch)
    assert status == 400
    assert body["accepted"] == [
        {"index": 0, "id": "e1", "event_id": event_id_of(SOURCE, "e1"), "outcome": "delivered"},
        {"index": 3, "id": "e4", "event_id": event_id_of(SOURCE, "e4"), "outcome": "delivered"},
    ]
    assert [(e["index"], e["id"], e["reason"]) for e in body["errors"]] == [
        (1, "e2", "negative_quantity"),
        (2, "e3", "tenant_not_allowed"),
    ]
    # one structured event, another tenant's key
    status, _, body = call(
        service, "POST", "/v1/events",
        ce("g1", {"request_id": "r2", "node_id": "ocr", "gpu_ms": 840, "gpu_type": "L4"}),
        key=GLOBEX, ctype=STRUCTURED,
    )  # fmt: skip
    assert status == 202 and [a["outcome"] for a in body["accepted"]] == ["delivered"]
    # every event of the request for another tenant: 403
    status, _, body = call(service, "POST", "/v1/events", [batch[2]], key=ACME)
    assert status == 403 and body["errors"][0]["reason"] == "tenant_not_allowed"

    # 202 came after the broker's acknowledgement: the records are on the topic now
    msgs = consume_all(kafka_bootstrap, topics.usage, expect=3, timeout=30)
    got = sorted((decode_record(m.value()) for m in msgs), key=lambda r: r.event_id)
    expected: list[Record] = [
        UsageEvent(
            event_id=event_id_of(SOURCE, "e1"), tenant="acme", request_id="r1",
            node_id="llm.answer", span_id="llm.answer", model="gpt-4o", event_time=T,
            meters=Meters(input_tokens=812, output_tokens=96, cached_input_tokens=512),
            producer=PRODUCER,
        ),
        RequestEnd(
            event_id=event_id_of(SOURCE, "e4"), tenant="acme", request_id="r1",
            root_span_id="root", span_count=1, event_time=T,
        ),
        UsageEvent(
            event_id=event_id_of(SOURCE, "g1"), tenant="globex", request_id="r2",
            node_id="ocr", span_id="ocr", event_time=T, producer=PRODUCER,
            meters=Meters(gpu_ms=840, gpu_type="L4", gpu_source=GpuSource.MEASURED),
        ),
    ]  # fmt: skip
    assert got == sorted(expected, key=lambda r: r.event_id)
    assert [m.key() for m in msgs if decode_record(m.value()).tenant == "acme"] == [b"acme/r1"] * 2


def test_keys_limits_health_and_metrics(service: IngestService) -> None:
    one = ce("x1", {"request_id": "r", "node_id": "n", "api_calls": 1})
    status, headers, body = call(service, "POST", "/v1/events", [one], key=None)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    status, _, body = call(service, "POST", "/v1/events", [one], key=ACME + "x")
    assert status == 401 and body["error"]["reason"] == "unauthorized"
    status, _, body = call(service, "POST", "/v1/events", raw=b"[" + b" " * 40_000 + b"]")
    assert status == 413 and body["error"]["reason"] == "body_too_large"
    status, _, body = call(service, "POST", "/v1/events", [one] * 21)
    assert status == 413 and body["error"]["reason"] == "too_many_events"
    status, _, body = call(service, "POST", "/v1/events", one, ctype="application/json")
    assert status == 415
    status, _, body = call(service, "POST", "/v1/events", raw=b"{oops", ctype=STRUCTURED)
    assert status == 400 and body["error"]["reason"] == "invalid_json"

    # the slow key: 0.5 events/s, burst 20; a full batch passes, the next event waits 2 s
    slow = [ce(f"s{i}", {"request_id": "r", "node_id": "n", "api_calls": 1}) for i in range(20)]
    status, _, body = call(service, "POST", "/v1/events", slow, key=SLOW)
    assert status == 202 and len(body["accepted"]) == 20  # tenant: the key's (slowco)
    status, headers, body = call(service, "POST", "/v1/events", [one], key=SLOW)
    assert status == 429 and headers["retry-after"] == "2", body
    assert call(service, "POST", "/v1/events", [one])[0] == 202  # other keys are not slowed

    assert call(service, "GET", "/healthz")[:3:2] == (200, {"status": "ok"})
    assert call(service, "GET", "/readyz")[:3:2] == (200, {"ready": True, "status": "ok"})
    status, headers, text = call(service, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = set(text.splitlines())
    for line in (
        'nodemeter_ingest_http_requests_total{code="401"} 2',
        'nodemeter_ingest_http_requests_total{code="413"} 2',
        'nodemeter_ingest_http_requests_total{code="429"} 1',
        'nodemeter_ingest_http_events_total{outcome="delivered"} 21',
        'nodemeter_ingest_http_events_total{outcome="rate_limited"} 1',
        "nodemeter_ingest_http_ready 1",
    ):
        assert line in lines, line
    assert ACME not in text and SLOW not in text


def test_with_the_broker_down_202_means_spooled_on_disk(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    svc = start_service(dead, "nodemeter.usage.v1", tmp_path / "spool", delivery_timeout_ms=1000)
    try:
        assert call(svc, "GET", "/readyz")[0] == 503
        event = ce("d1", {"request_id": "r", "node_id": "n", "input_tokens": 7})
        status, _, body = call(svc, "POST", "/v1/events", event, ctype=STRUCTURED)
        assert status == 202 and body["accepted"][0]["outcome"] == "spooled"
        assert svc.meter.spooled_records() == 1
    finally:
        report = svc.shutdown(flush_timeout=2)
    assert (report.spooled, report.lost) == (1, 0)


def test_sigterm_drains_a_request_in_flight(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "NODEMETER_INGEST_KEYS": f"acme={ACME}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodemeter.cli", "ingest-http", "--port", str(port),
         "--bootstrap", kafka_bootstrap, "--topic", topics.usage,
         "--spool-dir", str(tmp_path / "spool")],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "never ready"
            time.sleep(0.2)
        body = json.dumps(ce("t1", {"tenant": "acme", "request_id": "r", "node_id": "n",
                                    "api_calls": 3})).encode()  # fmt: skip
        head = (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\n"
                f"Content-Type: {STRUCTURED}\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        client.sendall(head + body[:10])  # the request is in flight
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the listener stops; the request in flight is still served
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).recv(1)
        client.sendall(body[10:])
        reply = client.makefile("rb").read().decode()  # the server closes after answering
        assert reply.startswith("HTTP/1.1 202"), reply
        assert "Connection: close" in reply and '"outcome":"delivered"' in reply
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    assert "stopped; 0 requests cut at the drain deadline" in err and "lost 0" in err, err
    assert ACME not in err


@pytest.mark.clickhouse
def test_events_sent_over_http_are_stored_by_the_worker_exactly(
    service: IngestService, kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    span = {"request_id": "rq", "workflow": "rag"}
    batch = [
        ce("root", {**span, "node_id": "plan", "span_id": "root", "input_tokens": 10}),
        ce("b1", {**span, "node_id": "llm", "span_id": "b1", "parent_span_id": "root",
                  "branch_path": "root/b1", "model": "gpt-4o", "input_tokens": 300,
                  "output_tokens": 40, "cached_input_tokens": 200}),
        ce("b2", {**span, "node_id": "search", "span_id": "b2", "parent_span_id": "root",
                  "branch_path": "root/b2", "api_calls": 2, "cpu_ms": 15},
           time="2026-11-01T12:00:01.5+00:00"),
    ]  # fmt: skip
    assert call(service, "POST", "/v1/events", batch)[0] == 202
    end = ce("end", {**span, "span_count": 3}, type=REQUEST_END_TYPE)
    assert call(service, "POST", "/v1/events", end, ctype=STRUCTURED)[0] == 202
    assert call(service, "POST", "/v1/events", batch[:1])[0] == 202  # a resend: a duplicate

    w = WorkerProcess(
        bootstrap=kafka_bootstrap, topic_prefix=topics.prefix, chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log", extra=("--agents", "ingest"),
    ).start()  # fmt: skip
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w)
        time.sleep(1.0)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    rows = query(
        w.url, w.database,
        "SELECT event_id, tenant, request_id, node_id, span_id, parent_span_id, branch_path, "
        "model, input_tokens, output_tokens, cached_input_tokens, api_calls, cpu_ms, "
        "toString(event_time) FROM usage_events FINAL ORDER BY span_id",
    )  # fmt: skip
    assert rows == [
        [event_id_of(SOURCE, "b1"), "acme", "rq", "llm", "b1", "root", "root/b1", "gpt-4o",
         300, 40, 200, 0, 0, "2026-11-01 12:00:00.125000"],
        [event_id_of(SOURCE, "b2"), "acme", "rq", "search", "b2", "root", "root/b2", "",
         0, 0, 0, 2, 15, "2026-11-01 12:00:01.500000"],
        [event_id_of(SOURCE, "root"), "acme", "rq", "plan", "root", "", "", "",
         10, 0, 0, 0, 0, "2026-11-01 12:00:00.125000"],
    ]  # fmt: skip
    recs = query(
        w.url, w.database,
        "SELECT request_id, complete, spans_seen, input_tokens FROM request_records FINAL",
    )  # fmt: skip
    assert recs == [["rq", True, 3, 310]]
