"""The ingest agent's wiring against embedded ClickHouse (chDB), without a broker.

Through Faust's ``agent.test_context()`` (the consumer's assignment stubbed: the Gate
reads it on recovery) and, for crash and timer cases, ``Ingest.process`` and
``Ingest.sweep`` called directly with fake events. Kafka sends go to recording fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from faust.types import TP

import nodemeter_stream.agents.ingest as ingest_module
from nodemeter.codec import decode_payload, encode_record
from nodemeter.events import Meters, RequestEnd, UsageEvent, event_id_for, request_end_id
from nodemeter_stream.app import WorkerConfig, build_app
from nodemeter_stream.ingest import forward
from nodemeter_stream.sink.clickhouse import Block, ClickHouseSink
from nodemeter_stream.sink.progress import PartitionProgress
from nodemeter_stream.sink.store import ClickHouseConfig

T = datetime(2026, 11, 1, tzinfo=UTC)
T_MS = int(T.timestamp() * 1000)


def delivered() -> asyncio.Future[None]:
    """A send future that has already completed (what a broker acknowledgement gives)."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class FakeTopic:
    """Records what the agent sends instead of producing to Kafka."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_soon(self, **kw: Any) -> asyncio.Future[None]:
        self.sent.append(kw)
        return delivered()


@dataclass(frozen=True)
class FakeMessage:
    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass(frozen=True)
class FakeEvent:
    key: bytes
    value: bytes
    message: FakeMessage


def ev(span: str, tokens: int, *, req: str = "r1", tenant: str = "acme") -> UsageEvent:
    return UsageEvent(
        event_id=event_id_for(tenant, req, span, 0),
        tenant=tenant,
        request_id=req,
        node_id=f"node-{span}",
        span_id=span,
        event_time=T,
        meters=Meters(input_tokens=tokens),
    )


def end(n: int, *, req: str = "r1") -> RequestEnd:
    return RequestEnd(
        event_id=request_end_id("acme", req),
        tenant="acme",
        request_id=req,
        root_span_id="root",
        span_count=n,
        event_time=T,
    )


@dataclass
class Wired:
    worker: Any
    sink: ClickHouseSink
    ingest: Any
    log: list[str]  # "write:<tables>" / "ack", in the order they happened
    acked: list[int]

    @property
    def topic(self) -> str:
        return str(self.worker.config.topics.usage)

    def events(self, records: Iterable[Any], *, start: int = 0, partition: int = 0) -> list[Any]:
        return [
            FakeEvent(b"acme/r", encode_record(r), FakeMessage(self.topic, partition, start + i))
            for i, r in enumerate(records)
        ]

    def run(self, scenario: Callable[[], Awaitable[Any]]) -> Any:
        async def go() -> Any:
            await self.sink.start()
            return await scenario()

        return asyncio.run(go())

    async def rows(self, sql: str) -> list[Any]:
        return await self.sink.query(sql)


@pytest.fixture
def wired(clickhouse_config: ClickHouseConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[Wired]:
    cfg = WorkerConfig.for_tests(
        bootstrap="127.0.0.1:9",  # never contacted: test_context has no broker
        clickhouse=clickhouse_config,
        batch_seconds=0.05,
        batch_size=100,
    )
    sink = ClickHouseSink(clickhouse_config, retry_initial_s=0.01, retry_max_s=0.05)
    worker = build_app(cfg, sink=sink)
    ingest = worker.extras["ingest"]
    ingest.dlq, ingest.by_tenant = FakeTopic(), FakeTopic()
    # test_context starts no consumer: the Gate reads this assignment on recovery
    assignment = {TP(cfg.topics.usage, 0)}
    monkeypatch.setattr(worker.app.consumer, "assignment", lambda: assignment)
    w = Wired(worker, sink, ingest, [], [0])

    real_write = sink.write

    async def logged_write(blocks: Iterable[Block]) -> None:
        blocks = list(blocks)
        await real_write(blocks)
        w.log.append("write:" + ",".join(sorted({b.table for b in blocks if b.rows})))

    monkeypatch.setattr(sink, "write", logged_write)
    real_ack_events = ingest_module.ack_events

    def logged_ack_events(events: Any) -> None:
        events = list(events)
        real_ack_events(events)
        w.log.append("ack")
        w.acked[0] += len(events)

    monkeypatch.setattr(ingest_module, "ack_events", logged_ack_events)
    yield w

    async def drop() -> None:
        await sink.query(f"DROP DATABASE IF EXISTS {clickhouse_config.database}")
        await sink.close()

    asyncio.run(drop())


async def put_all(w: Wired, messages: list[tuple[bytes, bytes]]) -> None:
    agent = w.worker.extras["ingest_agent"]
    async with agent.test_context() as ctx:
        for key, value in messages:
            # wait=False: put(wait=True) waits on a stream processor, and the agent takes
            # its batches off the channel's queue (agents/intake.py), not through the
            # stream's iterator that runs processors
            await ctx.put(key=key, value=value, wait=False)
        # the batch is handed over after batch_seconds; wait for it to be stored
        for _ in range(500):
            if w.acked[0] >= len(messages):
                break
            await asyncio.sleep(0.02)


def count(rows: list[Any]) -> int:
    return int(rows[0][0])


# --- through the Faust agent ------------------------------------------------------------


def test_agent_routes_stores_dedupes_and_merges(wired: Wired) -> None:
    w = wired
    records: list[UsageEvent | RequestEnd] = [ev("a", 3), ev("b", 4), ev("a", 3), end(2)]
    msgs = [(b"acme/r1", encode_record(r)) for r in records]
    msgs.append((b"x", b"\xc3\x01bad"))

    async def scenario() -> dict[str, list[Any]]:
        await put_all(w, msgs)
        return {
            "usage": await w.rows("SELECT event_id, source_offset FROM usage_events"),
            "dead": await w.rows("SELECT reason, source_offset, payload FROM dead_letters"),
            "records": await w.rows(
                "SELECT request_id, complete, spans_seen FROM request_records FINAL"
            ),
            "nodes": await w.rows("SELECT node_id, input_tokens FROM request_nodes FINAL"),
        }

    got = w.run(scenario)
    assert sorted(got["usage"]) == sorted([(ev("a", 3).event_id, 0), (ev("b", 4).event_id, 1)])
    assert [(r[0], r[1]) for r in got["dead"]] == [("truncated", 4)]
    assert got["records"] == [("r1", True, 2)]  # complete
    assert sorted(got["nodes"]) == [("node-a", 3), ("node-b", 4)]
    # forwarded: one record for the tenant holding the two first-seen events, same bytes,
    # with their positions on the usage topic
    (fwd,) = w.ingest.by_tenant.sent
    assert fwd["key"] == b"acme"
    assert forward.decode(fwd["value"]) == [
        forward.Entry(0, 0, encode_record(ev("a", 3))),
        forward.Entry(0, 1, encode_record(ev("b", 4))),
    ]
    (dl,) = w.ingest.dlq.sent
    assert dict(dl["headers"])["reason"] == b"truncated"
    assert decode_payload(dl["value"])[1]["payload"] == b"\xc3\x01bad"
    assert w.worker.metrics.duplicates._value.get() == 1


def test_batches_are_acked_only_after_their_progress_is_stored(wired: Wired) -> None:
    w = wired
    agent = w.worker.extras["ingest_agent"]
    assert agent.concurrency == 1  # see docs/worker.md: no commit past unfinished work
    msgs = [(b"acme/r1", encode_record(ev(f"s{i}", 1))) for i in range(250)]

    async def scenario() -> tuple[int, list[Any]]:
        await put_all(w, msgs)
        n = count(await w.rows("SELECT count() FROM usage_events"))
        progress = await w.rows(
            "SELECT partition, offset FROM worker_state FINAL WHERE scope = 'progress'"
        )
        return n, progress

    n, progress = w.run(scenario)
    assert w.acked[0] == 250 and n == 250
    assert progress == [(0, 249)]
    acks = [i for i, x in enumerate(w.log) if x == "ack"]
    assert len(acks) >= 3  # batch_size=100 -> at least three batches
    # each batch: intent, effects, then states + progress, and only then the ack
    start = 0
    for i in acks:
        writes = w.log[start:i]
        assert writes[0] == "write:worker_state" and writes[-1] == "write:worker_state", writes
        assert "write:usage_events" in writes
        start = i + 1


# --- one batch at a time (Ingest.process / Ingest.sweep) --------------------------------


def recovered_empty(w: Wired) -> None:
    """What an assignment of partition 0 with nothing stored gives."""
    w.ingest.recovered([0], [])
    w.ingest.gate.progress = {0: PartitionProgress()}


def test_a_batch_applied_again_in_doubt_stores_each_event_once(wired: Wired) -> None:
    w, ingest = wired, wired.ingest
    ingest.clock = lambda: T_MS + 1000  # recent events: memory alone would vouch for them
    records = [ev("a", 3), ev("b", 4), ev("c", 5, req="r2"), end(2)]
    batch = w.events(records)
    hourly_sql = "SELECT sum(events), sum(input_tokens) FROM usage_hourly"

    async def scenario() -> dict[str, Any]:
        recovered_empty(w)
        first = await ingest.process(batch)
        before = (
            count(await w.rows("SELECT count() FROM usage_events")),
            await w.rows(hourly_sql),
            count(await w.rows("SELECT count() FROM request_records")),
        )
        # a crash after the effects, before states + progress were stored: the next
        # worker starts from the states before the batch, with the batch in doubt
        recovered_empty(w)
        ingest.gate.progress[0] = PartitionProgress(applied=-1, doubt_until=len(batch) - 1)
        second = await ingest.process(batch)
        after = (
            count(await w.rows("SELECT count() FROM usage_events")),
            await w.rows(hourly_sql),
            count(await w.rows("SELECT count() FROM request_records")),
        )
        return {"first": first, "second": second, "before": before, "after": after}

    got = w.run(scenario)
    assert got["before"] == (3, [(3, 12)], 1)
    assert got["after"] == got["before"]  # nothing stored twice, rollup unchanged
    second = got["second"]
    assert ingest.lookups == 3  # the batch in doubt was looked up
    # stored by these very records: fresh (merged, forwarded) but not inserted again
    assert len(second.fresh) == 4 and not second.duplicates
    assert second.usage_to_insert() == []
    # forwarded again, the same entries: pricing skips them by their ingest offsets
    first_fwd, second_fwd = ingest.by_tenant.sent
    assert first_fwd["value"] == second_fwd["value"]
    assert ingest.gate.progress[0] == PartitionProgress(applied=3, doubt_until=-1)


def test_a_resend_is_a_duplicate_by_memory_or_by_the_event_index(wired: Wired) -> None:
    w, ingest = wired, wired.ingest
    now = [T_MS + 1000]
    ingest.clock = lambda: now[0]

    async def scenario() -> tuple[Any, Any, int]:
        recovered_empty(w)
        await ingest.process(w.events([ev("a", 3)]))
        recent = await ingest.process(w.events([ev("a", 3)], start=1))  # memory knows it
        # much later, the request long forgotten: only ClickHouse can tell
        now[0] += int(ingest.cfg.request_retention_s * 1000) * 2
        ingest.states.clear()
        old = await ingest.process(w.events([ev("a", 3)], start=2))
        return recent, old, count(await w.rows("SELECT count() FROM usage_events"))

    recent, old, n = w.run(scenario)
    assert len(recent.duplicates) == 1 and not recent.fresh
    assert len(old.duplicates) == 1 and not old.fresh  # stored by another record (offset 0)
    assert n == 1
    assert len(ingest.by_tenant.sent) == 1  # forwarded once


def test_worker_state_holds_request_states_and_progress_after_a_batch(wired: Wired) -> None:
    w, ingest = wired, wired.ingest
    ingest.clock = lambda: T_MS + 1000
    group = w.worker.config.app_id

    async def scenario() -> tuple[list[Any], list[Any]]:
        recovered_empty(w)
        await ingest.process(w.events([ev("a", 1), ev("b", 2, req="r2"), end(1, req="r2")]))
        states = await w.rows(
            "SELECT key, partition, open FROM worker_state FINAL "
            f"WHERE scope = 'request' AND group_id = '{group}' ORDER BY key"
        )
        marks = await w.rows(
            "SELECT scope, partition, first_offset, offset FROM worker_state FINAL "
            f"WHERE scope IN ('progress', 'intent') AND group_id = '{group}' ORDER BY scope"
        )
        return states, marks

    states, marks = w.run(scenario)
    assert states == [("acme/r1", 0, 1), ("acme/r2", 0, 0)]  # r2 closed by its end
    assert marks == [("intent", 0, 0, 2), ("progress", 0, 0, 2)]


def test_a_new_worker_recovers_states_and_progress_from_worker_state(
    wired: Wired, clickhouse_config: ClickHouseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, ingest = wired, wired.ingest
    ingest.clock = lambda: T_MS + 1000
    # the next worker of the same group, on the same store
    nxt = build_app(w.worker.config, sink=w.sink)
    monkeypatch.setattr(nxt.app.consumer, "assignment", lambda: {TP(w.topic, 0)})
    successor = nxt.extras["ingest"]

    async def scenario() -> None:
        recovered_empty(w)
        await ingest.process(w.events([ev("a", 1), ev("b", 2)]))
        await successor.gate.recover()

    w.run(scenario)
    assert successor.gate.progress == {0: PartitionProgress(applied=1, doubt_until=-1)}
    assert successor.states.keys() == {"acme/r1"}
    assert successor.states["acme/r1"].has(ev("b", 2).event_id)
    assert successor.gate.order.start_at == {TP(w.topic, 0): 2}


def test_request_timeout_closes_as_incomplete_via_the_sweep(wired: Wired) -> None:
    w, ingest = wired, wired.ingest
    now = [T_MS + 1000]
    ingest.clock = lambda: now[0]

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        recovered_empty(w)
        await ingest.process(w.events([ev("a", 5, req="r9")]))
        early = await w.rows("SELECT request_id FROM request_records")
        now[0] += int(w.worker.config.request_timeout_s * 1000)
        await ingest.sweep()
        records = await w.rows("SELECT request_id, complete FROM request_records FINAL")
        state = await w.rows("SELECT key, open FROM worker_state FINAL WHERE scope = 'request'")
        return early, records, state

    early, records, state = w.run(scenario)
    assert early == []
    assert records == [("r9", False)]  # incomplete
    assert state == [("acme/r9", 0)]  # stored closed
    assert ingest.states["acme/r9"].closed


def test_sweep_drops_closed_requests_past_the_retention_from_memory(wired: Wired) -> None:
    w, ingest = wired, wired.ingest
    now = [T_MS + 1000]
    ingest.clock = lambda: now[0]

    async def scenario() -> None:
        recovered_empty(w)
        await ingest.process(w.events([ev("a", 1, req="r7"), end(1, req="r7")]))
        assert ingest.states["acme/r7"].closed
        await ingest.sweep()
        assert "acme/r7" in ingest.states  # closed, but within the retention
        now[0] += int(w.worker.config.request_retention_s * 1000) + 1
        await ingest.sweep()

    w.run(scenario)
    assert ingest.states == {}
