"""The SDK against the real broker: what the context API emits is read back exactly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from nodemeter.codec import decode_record, encode_record
from nodemeter.context import current_span
from nodemeter.events import Record, RequestEnd, UsageEvent, event_id_for
from nodemeter.meter import Meter, MeterConfig

pytestmark = pytest.mark.kafka


def consume(bootstrap: str, topic: str, n: int, timeout: float = 30.0) -> list[Any]:
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
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
        # a little longer: anything beyond n would be a duplicate
        extra_deadline = time.monotonic() + 1.0
        while time.monotonic() < extra_deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        consumer.close()
    return out


def test_context_api_events_read_back_exactly(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    sent: list[Record] = []

    def recording_encoder(record: Record) -> bytes:
        sent.append(record)
        return encode_record(record)

    cfg = MeterConfig(
        bootstrap_servers=kafka_bootstrap, topic=topics.usage, spool_dir=tmp_path / "spool"
    )
    meter = Meter(cfg, encoder=recording_encoder)

    @meter.node("llm.summarize", model="gpt-4o", provider="openai")
    async def summarize(i: int) -> None:
        span = current_span()
        assert span is not None
        span.record_openai(
            {
                "usage": {
                    "prompt_tokens": 100 + i,
                    "completion_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 64},
                }
            }
        )

    async def one_request(r: int) -> None:
        async with meter.request(tenant=f"tenant-{r % 3}", request_id=f"req-{r}", workflow="rag"):
            with meter.node("retrieve") as s:
                s.record(api_calls=1, cpu_ms=3, custom={"documents": 12})
            await asyncio.gather(*(summarize(i) for i in range(3)))
            with meter.node("gpu.rerank") as s:
                s.record(gpu_ms=41, gpu_type="L4", gpu_source="ESTIMATED")

    async def main() -> None:
        await asyncio.gather(*(one_request(r) for r in range(10)))

    asyncio.run(main())
    assert meter.flush(30) == 0
    meter.close()
    assert meter.stats.delivered == len(sent) == 10 * 6 and meter.stats.spooled == 0

    msgs = consume(kafka_bootstrap, topics.usage, len(sent))
    got = {(r := decode_record(m.value())).event_id: r for m in msgs}
    assert len(msgs) == len(sent)  # none duplicated
    assert got == {r.event_id: r for r in sent}  # every field decoded exactly
    # a request's records share a partition, and its end record comes after its events
    by_request: dict[str, list[tuple[int, int, Record]]] = {}
    for m in msgs:
        rec = decode_record(m.value())
        assert m.key() == f"{rec.tenant}/{rec.request_id}".encode()
        by_request.setdefault(rec.request_id, []).append((m.partition(), m.offset(), rec))
    for rows in by_request.values():
        assert len({p for p, _, _ in rows}) == 1
        rows.sort(key=lambda x: x[1])
        assert isinstance(rows[-1][2], RequestEnd) and rows[-1][2].span_count == 5
        assert sorted(r.branch_path for _, _, r in rows[:-1] if isinstance(r, UsageEvent)) == [
            "",
            "",
            "1",
            "2",
            "3",
        ]


def test_emit_cli_sends_json_lines(kafka_bootstrap: str, topics: Any, tmp_path: Path) -> None:
    lines = [
        {
            "tenant": "acme",
            "request_id": "cli-1",
            "node_id": f"step{i}",
            "meters": {"cpu_ms": i + 1},
        }
        for i in range(5)
    ]
    lines.append({"type": "request_end", "tenant": "acme", "request_id": "cli-1", "span_count": 5})
    stdin = "\n".join(json.dumps(x) for x in lines) + "\n{broken\n"
    env = {**os.environ, "NODEMETER_KAFKA_BOOTSTRAP": kafka_bootstrap}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodemeter.cli",
            "emit",
            "--topic",
            topics.usage,
            "--spool-dir",
            str(tmp_path / "spool"),
        ],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # one line rejected
    assert "line 7: invalid_json" in proc.stderr and "6 sent, 1 rejected" in proc.stderr
    msgs = consume(kafka_bootstrap, topics.usage, 6)
    ids = Counter(decode_record(m.value()).event_id for m in msgs)
    expected = {event_id_for("acme", "cli-1", f"step{i}", 0) for i in range(5)}
    assert set(ids) - expected == {decode_record(msgs[-1].value()).event_id}
    assert expected <= set(ids) and all(c == 1 for c in ids.values())
