"""Faust wiring of the ingest agent with ``agent.test_context()`` (no broker, fake sink)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest

import nodemeter_stream.agents.ingest as ingest_module
from nodemeter.codec import decode_payload, encode_record
from nodemeter.events import Meters, RequestEnd, UsageEvent, event_id_for, request_end_id
from nodemeter_stream.app import WorkerConfig, build_app
from nodemeter_stream.sink.clickhouse import Block
from nodemeter_stream.sink.store import ClickHouseConfig

T = datetime(2026, 11, 1, tzinfo=UTC)


class FakeSink:
    """Records blocks instead of writing to ClickHouse; can fail a few times first."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.blocks: list[Block] = []
        self.fail_first = fail_first
        self.attempts = 0
        self.metrics: Any = None
        self.log: list[str] = []  # "write" / "ack" in the order they happened
        self.acked = 0

    async def start(self) -> None:
        return None

    async def write(self, blocks: Iterable[Block]) -> None:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            raise ConnectionError("clickhouse down")
        self.blocks.extend(b for b in blocks if b.rows)
        self.log.append("write")

    def rows(self, table: str) -> list[Any]:
        return [r for b in self.blocks if b.table == table for r in b.rows]

    def stop(self) -> None:
        return None


def delivered() -> asyncio.Future[None]:
    """A send future that has already completed (what a broker acknowledgement gives)."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class FakeTopic:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_soon(self, **kw: Any) -> asyncio.Future[None]:
        self.sent.append(kw)
        return delivered()


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


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch) -> Any:
    cfg = WorkerConfig.for_tests(
        bootstrap="127.0.0.1:9",  # never contacted: test_context has no broker
        clickhouse=ClickHouseConfig(url="chdb://memory", database="unused"),
        batch_seconds=0.05,
        batch_size=100,
    )
    sink = FakeSink()
    worker = build_app(cfg, sink=sink)
    ingest = worker.extras["ingest"]
    ingest.dlq, ingest.by_tenant = FakeTopic(), FakeTopic()
    # no producer in test_context: changelog sends are delivered at once
    ingest.seen.table.send_changelog = lambda *a, **k: delivered()
    ingest.requests.table.send_changelog = lambda *a, **k: delivered()
    real_ack_all = ingest_module.ack_all

    async def logged_ack_all(stream: Any, events: Any) -> None:
        events = list(events)
        await real_ack_all(stream, events)
        sink.log.append("ack")
        sink.acked += len(events)

    monkeypatch.setattr(ingest_module, "ack_all", logged_ack_all)
    return worker, sink, ingest


async def put_all(agent: Any, sink: FakeSink, messages: list[tuple[bytes, bytes]]) -> Any:
    async with agent.test_context() as ctx:
        for key, value in messages:
            await ctx.put(key=key, value=value)
        # noack_take hands the batch over after batch_seconds; wait for it to be written
        for _ in range(250):
            if sink.acked >= len(messages):
                break
            await asyncio.sleep(0.02)
        return ctx


def test_agent_routes_stores_dedupes_and_merges(wired: Any) -> None:
    worker, sink, ingest = wired
    agent = worker.extras["ingest_agent"]
    records: list[UsageEvent | RequestEnd] = [ev("a", 3), ev("b", 4), ev("a", 3), end(2)]
    msgs = [(b"acme/r1", encode_record(r)) for r in records]
    msgs.append((b"x", b"\xc3\x01bad"))
    asyncio.run(put_all(agent, sink, msgs))
    usage = sink.rows("usage_events")
    assert sorted(r[0] for r in usage) == sorted([ev("a", 3).event_id, ev("b", 4).event_id])
    assert [r[3] for r in sink.rows("dead_letters")] == ["truncated"]
    (record,) = sink.rows("request_records")
    assert record[1] == "r1" and record[3] is True  # complete
    assert sorted((r[2], r[12]) for r in sink.rows("request_nodes")) == [
        ("node-a", 3),
        ("node-b", 4),
    ]
    # forwarded: the two first-seen usage events, keyed by tenant, same bytes
    assert [m["key"] for m in ingest.by_tenant.sent] == [b"acme", b"acme"]
    assert ingest.by_tenant.sent[0]["value"] == encode_record(ev("a", 3))
    (dl,) = ingest.dlq.sent
    assert dict(dl["headers"])["reason"] == b"truncated"
    assert decode_payload(dl["value"])[1]["payload"] == b"\xc3\x01bad"
    # the dedupe table holds what was stored; a resend is dropped
    assert ingest.is_seen(ev("a", 3).event_id)
    assert worker.metrics.duplicates._value.get() == 1


def test_batches_are_acked_only_after_the_sink_acknowledged(wired: Any) -> None:
    worker, sink, _ = wired
    agent = worker.extras["ingest_agent"]
    assert agent.concurrency == 1  # see docs/worker.md: no commit past unfinished work
    msgs = [(b"acme/r1", encode_record(ev(f"s{i}", 1))) for i in range(250)]
    asyncio.run(put_all(agent, sink, msgs))
    assert sink.acked == 250
    assert sink.log[0] == "write" and "ack" in sink.log
    # strictly alternating: each batch written, then acked
    assert sink.log == ["write", "ack"] * (len(sink.log) // 2)
    assert len(sink.log) >= 6  # batch_size=100 -> at least three batches
    assert len(sink.rows("usage_events")) == 250


def test_request_timeout_closes_as_incomplete_via_the_sweep(wired: Any) -> None:
    worker, sink, ingest = wired
    agent = worker.extras["ingest_agent"]
    now = [1_000_000]
    ingest.clock = lambda: now[0]
    asyncio.run(put_all(agent, sink, [(b"acme/r9", encode_record(ev("a", 5, req="r9")))]))
    assert sink.rows("request_records") == []
    now[0] += int(worker.config.request_timeout_s * 1000)
    asyncio.run(ingest.sweep())
    (record,) = sink.rows("request_records")
    assert record[1] == "r9" and record[3] is False  # incomplete
    assert ingest.get_state("acme/r9").closed


def test_sweep_expires_dedupe_marks_after_the_ttl(wired: Any) -> None:
    worker, sink, ingest = wired
    agent = worker.extras["ingest_agent"]
    now = [5_000_000]
    ingest.clock = lambda: now[0]
    a = ev("a", 1, req="r7")
    asyncio.run(put_all(agent, sink, [(b"acme/r7", encode_record(a))]))
    assert ingest.is_seen(a.event_id)
    now[0] += worker.config.dedupe_ttl_s * 1000 + 1
    assert not ingest.is_seen(a.event_id)  # past the TTL it no longer counts...
    ingest._next_housekeeping_ms = 0
    asyncio.run(ingest.sweep())
    assert ingest.seen.get(a.event_id) is None  # ...and the sweep drops it (with a tombstone)


def test_dedupe_marks_are_sent_only_once_the_request_states_are_on_the_broker(
    wired: Any,
) -> None:
    # The two tables are separate changelogs. A crash that kept a mark but lost the state
    # holding its event would turn the replayed event into a duplicate that is never
    # merged (its request would never get a record), so the states must be delivered
    # before any mark of the batch is sent.
    worker, sink, ingest = wired
    agent = worker.extras["ingest_agent"]
    order: list[str] = []
    state_futures: list[asyncio.Future[None]] = []

    def send_state(*a: Any, **k: Any) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        # the broker acknowledges a little later
        loop.call_later(0.05, lambda: fut.done() or fut.set_result(None))
        fut.add_done_callback(lambda _: order.append("state delivered"))
        order.append("state sent")
        state_futures.append(fut)
        return fut

    def send_mark(*a: Any, **k: Any) -> asyncio.Future[None]:
        order.append("mark sent")
        assert all(f.done() for f in state_futures), "a mark was sent before its state"
        return delivered()

    ingest.requests.table.send_changelog = send_state
    ingest.seen.table.send_changelog = send_mark
    records = [ev("a", 1, req="r1"), ev("b", 2, req="r2"), ev("c", 3, req="r3")]
    asyncio.run(put_all(agent, sink, [(b"acme/r", encode_record(r)) for r in records]))
    assert sink.acked == 3
    assert order.count("mark sent") == 3 and order.count("state sent") == 3
    first_mark = order.index("mark sent")
    assert order[:first_mark].count("state delivered") == 3, order
