"""The TypeScript SDK (producers/ts): its own tests, then a request with parallel branches
sent to the real broker and read back with the worker's decoder, field by field."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from nodemeter.events import RequestEnd, UsageEvent
from nodemeter_stream.ingest.decode import Accepted, Source, classify

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

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


def test_parallel_request_reads_back_exactly(
    built: Path, kafka_bootstrap: str, topics: Any
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
