"""The Go SDK (producers/go): its own tests (`go test`), then a request with parallel
branches sent to the real broker, read back with the worker's decoder field by field,
and merged by the real worker into ClickHouse."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from worker_harness import WorkerProcess, query, wait_caught_up

from nodemeter.events import RequestEnd, UsageEvent
from nodemeter_stream.ingest.decode import Accepted, Source, classify

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

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


def _consume(bootstrap: str, topic: str, n: int, timeout: float = 30.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
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

    # The worker merges the request: one complete record, exact totals per node.
    w = WorkerProcess(
        bootstrap=kafka_bootstrap,
        topic_prefix=topics.prefix,
        chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log",
        extra=("--agents", "ingest"),
    )
    w.start()
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w)
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
    (dead,) = query(w.url, w.database, "SELECT count() FROM dead_letters")
    assert dead == [0]
