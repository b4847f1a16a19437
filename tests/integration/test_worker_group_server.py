"""Two worker processes in one consumer group, one ClickHouse server (docs/scaling.md).

chDB lets one process own a path, so two workers can share a store only on a server:
this test runs where ``NODEMETER_CLICKHOUSE_URL`` names one (``http(s)://...``) and is
skipped otherwise. The first worker takes every partition; the second joins, the group
rebalances and each recovers its partitions from ``worker_state`` (the first worker's
progress of record for those it gives up); traffic is produced before and after. Every event must be stored exactly once (rows, not FINAL), and each
worker must have recovered partitions and stored events of its own.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from worker_harness import WorkerProcess, encoded, produce, usage, wait_caught_up

from nodemeter.events import UsageEvent

SERVER = os.environ.get("NODEMETER_CLICKHOUSE_URL", "")

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.clickhouse,
    pytest.mark.skipif(
        not SERVER.startswith(("http://", "https://")),
        reason="needs a ClickHouse server: NODEMETER_CLICKHOUSE_URL=http(s)://... (chDB lets "
        "one process own a path, so two workers cannot share an embedded store)",
    ),
]


@dataclass
class ServerWorker(WorkerProcess):
    """A worker process writing to the ClickHouse server instead of its own chDB path."""

    server_url: str = ""

    @property
    def url(self) -> str:
        return self.server_url


@pytest.fixture
def database() -> Iterator[tuple[Any, str]]:
    from nodemeter_stream.sink.migrate import migrate
    from nodemeter_stream.sink.store import ClickHouseConfig, connect

    cfg = ClickHouseConfig(url=SERVER, database=f"test_{uuid.uuid4().hex[:12]}")
    client = connect(cfg)
    migrate(client, verbose=False)  # once, before two workers start (each would migrate)
    try:
        yield client, cfg.database
    finally:
        client.command(f"DROP DATABASE IF EXISTS {cfg.database}")


def wait_for(worker: WorkerProcess, pattern: str, *, timeout: float = 90.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hit = re.search(pattern, worker.log())
        if hit:
            return hit
        assert worker.alive(), worker.log()[-3000:]
        time.sleep(0.3)
    raise AssertionError(f"no {pattern!r} in the worker's log:\n{worker.log()[-3000:]}")


def wait_for_members(bootstrap: str, group: str, topic: str, n: int, timeout: float = 90.0) -> None:
    """Until the group is stable with ``n`` members, each assigned partitions of ``topic``."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        seen = admin.describe_consumer_groups([group])[group].result(timeout=10)
        owning = [
            m
            for m in seen.members
            if any(tp.topic == topic for tp in m.assignment.topic_partitions)
        ]
        if seen.state == ConsumerGroupState.STABLE and len(owning) == n == len(seen.members):
            return
        time.sleep(0.5)
    raise AssertionError(f"group {group} never had {n} members owning {topic}: {seen}")


def traffic(start: int, n: int) -> list[UsageEvent]:
    return [
        usage(f"tenant-{i % 5}", f"req-{i // 4}", f"s{i % 4}", input_tokens=1 + i % 97)
        for i in range(start, start + n)
    ]


def stored_fresh(worker: WorkerProcess) -> int:
    return sum(int(n) for n in re.findall(r"batch records=\d+ fresh=(\d+)", worker.log()))


def test_two_workers_in_one_group_store_every_event_once(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, database: tuple[Any, str]
) -> None:
    client, db = database
    group = f"nodemeter-test-{uuid.uuid4().hex[:10]}"
    workers = [
        ServerWorker(
            bootstrap=kafka_bootstrap,
            topic_prefix=topics.prefix,
            chdb_path=tmp_path / f"unused-{i}",
            log_path=tmp_path / f"worker-{i}.log",
            database=db,
            app_id=group,
            extra=("--agents", "ingest"),
            server_url=SERVER,
        )
        for i in range(2)
    ]
    first, second = traffic(0, 4000), traffic(4000, 4000)
    a, b = workers
    try:
        a.start()
        produce(kafka_bootstrap, topics.usage, encoded(first))
        # its first batch recovers every partition: it is alone in the group
        wait_for(a, r"recovered partitions \[0, 1, 2, 3\]")
        b.start()
        wait_for_members(kafka_bootstrap, group, topics.usage, 2)
        produce(kafka_bootstrap, topics.usage, encoded(second))
        wait_caught_up(kafka_bootstrap, group, topics.usage, worker=b, timeout=240)
    finally:
        codes = [w.stop() for w in workers if w.proc is not None]
    assert codes == [0, 0], [w.log()[-3000:] for w in workers]

    events = first + second
    rows = client.query("SELECT event_id, count() FROM usage_events GROUP BY event_id").result_rows
    counts = {str(e): int(c) for e, c in rows}
    assert len(counts) == len(events), f"{len(events) - len(counts)} events missing"
    twice = {e: c for e, c in counts.items() if c != 1}
    assert not twice, f"{len(twice)} events stored more than once, e.g. {list(twice.items())[:5]}"
    assert set(counts) == {e.event_id for e in events}
    (total,) = client.query("SELECT sum(input_tokens) FROM usage_events").result_rows[0]
    assert int(total) == sum(e.meters.input_tokens for e in events)
    for w in workers:
        assert stored_fresh(w) > 0, f"{w.log_path.name} stored no events:\n{w.log()[-2000:]}"
    # after the rebalance, the group's partitions are split between the two
    owned = [set(re.findall(r"recovered partitions \[([\d, ]+)\]", w.log())[-1].split(", "))
             for w in workers]  # fmt: skip
    assert owned[0] and owned[1] and not owned[0] & owned[1], owned
