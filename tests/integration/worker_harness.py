"""Helpers for the worker's integration tests: traffic, a worker subprocess, read-back.

The worker runs as its own process (``python -m nodemeter_stream.worker_cli``) with its
own ``chdb://`` path; chDB lets one process own a path, so results are read back in a
separate short-lived process after the worker stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nodemeter.codec import encode_record, record_key
from nodemeter.events import (
    GpuSource,
    Meters,
    Record,
    RequestEnd,
    UsageEvent,
    event_id_for,
    request_end_id,
)
from nodemeter_stream import offsets
from nodemeter_stream.offsets import committed, end_offsets

__all__ = ["committed", "end_offsets"]  # re-exported for the tests

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def usage(
    tenant: str,
    request_id: str,
    span: str,
    *,
    node: str = "llm",
    seq: int = 0,
    input_tokens: int = 0,
    output_tokens: int = 0,
    gpu_ms: int = 0,
    cpu_ms: int = 0,
    branch: str = "",
    parent: str | None = None,
    at: datetime = T0,
) -> UsageEvent:
    return UsageEvent(
        event_id=event_id_for(tenant, request_id, span, seq),
        tenant=tenant,
        request_id=request_id,
        node_id=node,
        span_id=span,
        parent_span_id=parent,
        branch_path=branch,
        sequence=seq,
        workflow="wf",
        event_time=at,
        meters=Meters(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            gpu_ms=gpu_ms,
            gpu_type="A100" if gpu_ms else "",
            gpu_source=GpuSource.MEASURED if gpu_ms else GpuSource.NONE,
            cpu_ms=cpu_ms,
        ),
    )


def end(tenant: str, request_id: str, span_count: int, *, at: datetime = T0) -> RequestEnd:
    return RequestEnd(
        event_id=request_end_id(tenant, request_id),
        tenant=tenant,
        request_id=request_id,
        root_span_id="root",
        span_count=span_count,
        event_time=at + timedelta(seconds=1),
        workflow="wf",
    )


def encoded(records: Iterable[Record]) -> list[tuple[bytes, bytes]]:
    return [(record_key(r), encode_record(r)) for r in records]


def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
        }
    )
    for key, value in messages:
        while True:
            try:
                p.produce(topic, value=value, key=key)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    assert left == 0, f"{left} messages not delivered"


def wait_caught_up(
    bootstrap: str,
    group: str,
    topic: str,
    *,
    timeout: float = 120.0,
    worker: WorkerProcess | None = None,
) -> float:
    """Wait until the group's committed offsets reach the topic's end; return seconds waited."""
    try:
        return offsets.wait_caught_up(
            bootstrap, group, [topic], timeout=timeout,
            alive=(worker.alive if worker is not None else None),
        )  # fmt: skip
    except offsets.NotCaughtUpError as exc:
        tail = worker.log()[-5000:] if worker is not None else ""
        raise AssertionError(f"{exc}\n{tail}") from exc


def consume_all(bootstrap: str, topic: str, *, expect: int, timeout: float = 60.0) -> list[Any]:
    """Read a topic from the start until ``expect`` messages (or timeout)."""
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                if len(out) >= expect:
                    break
                continue
            out.append(msg)
        return out
    finally:
        c.close()


@dataclass
class WorkerProcess:
    bootstrap: str
    topic_prefix: str
    chdb_path: Path
    log_path: Path
    database: str = "nodemeter"
    app_id: str = field(default_factory=lambda: f"nodemeter-test-{uuid.uuid4().hex[:10]}")
    extra: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    python_args: Sequence[str] = ("-m",)  # e.g. ("-m", "cProfile", "-o", FILE, "-m")
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment

    @property
    def url(self) -> str:
        return f"chdb://{self.chdb_path}"

    def start(self) -> WorkerProcess:
        args = [
            sys.executable,
            *self.python_args,
            "nodemeter_stream.worker_cli",
            "--bootstrap",
            self.bootstrap,
            "--url",
            self.url,
            "--database",
            self.database,
            "--topic-prefix",
            self.topic_prefix,
            "--app-id",
            self.app_id,
            "--session-timeout",
            "6",
            "--heartbeat-interval",
            "1",
            "--batch-seconds",
            "0.3",
            "--sweep-interval",
            "0.5",
            *self.extra,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        return self

    def stop(self, *, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


_QUERY = """
import json, sys
from nodemeter_stream.sink.store import ClickHouseConfig, connect
cfg = ClickHouseConfig(url=sys.argv[1], database=sys.argv[2])
client = connect(cfg, create_database=False)
out = [list(r) for r in client.query(sys.argv[3]).result_rows]
print(json.dumps(out, default=str))
"""


def query(url: str, database: str, sql: str) -> list[list[Any]]:
    """Run a query in a fresh process (the worker must have stopped: chDB path ownership)."""
    res = subprocess.run(
        [sys.executable, "-c", _QUERY, url, database, sql],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise RuntimeError(f"query failed: {res.stderr[-3000:]}")
    rows: list[list[Any]] = json.loads(res.stdout.strip().splitlines()[-1])
    return rows
