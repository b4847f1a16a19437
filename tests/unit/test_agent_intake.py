"""Batches off an agent's channel queue (agents/intake.py) and the consumer's direct
delivery check (commit_guard.GuardedConsumer._delivers_now).

The queues are mode's real ``ThrowableQueue`` (the class of a Faust channel's queue)
under a real ``FlowControlEvent``; the stream, channel, events and app around them are
fakes holding only what the code reads.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from nodemeter_stream.agents.intake import ack_events, batches
from nodemeter_stream.commit_guard import GuardedConsumer


class FakeChannel:
    """A fake channel: an iterator channel (aiter returns itself) around a real queue."""

    def __init__(self, maxsize: int = 0) -> None:
        flow = FlowControlEvent(initially_suspended=False)
        self.queue: ThrowableQueue[Any] = ThrowableQueue(maxsize=maxsize, flow_control=flow)

    def __aiter__(self) -> FakeChannel:
        return self

    async def __anext__(self) -> Any:  # what makes it an async iterator (never called)
        raise AssertionError("batches() reads the queue, not the channel")


class FakeEvent:
    def __init__(self) -> None:
        self.acks = 0

    def ack(self) -> bool:
        self.acks += 1
        return True


def stream_of(chan: FakeChannel) -> Any:
    return SimpleNamespace(channel=chan)


def test_full_batches_are_handed_over_then_the_rest_after_within() -> None:
    async def scenario() -> list[list[int]]:
        chan = FakeChannel()
        for i in range(7):
            chan.queue.put_nowait(i)
        it = batches(stream_of(chan), 3, 0.05)
        return [await anext(it) for _ in range(3)]

    assert asyncio.run(scenario()) == [[0, 1, 2], [3, 4, 5], [6]]


def test_records_arriving_within_the_wait_join_the_batch() -> None:
    async def scenario() -> list[int]:
        chan = FakeChannel()
        it = batches(stream_of(chan), 100, 30.0)
        chan.queue.put_nowait(1)

        async def later() -> None:
            await asyncio.sleep(0.05)
            for i in (2, 3):
                chan.queue.put_nowait(i)
            await asyncio.sleep(0.05)
            for i in range(4, 101):  # fills the batch: handed over long before 30 s
                chan.queue.put_nowait(i)

        task = asyncio.create_task(later())
        first = await anext(it)
        await task
        return first

    assert asyncio.run(scenario()) == list(range(1, 101))


def test_an_empty_queue_waits_for_its_first_record() -> None:
    async def scenario() -> tuple[bool, list[int]]:
        chan = FakeChannel()
        it = batches(stream_of(chan), 10, 0.01)
        pending = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.1)  # ten times ``within``: nothing is handed over empty
        waiting = not pending.done()
        chan.queue.put_nowait(7)
        return waiting, await asyncio.wait_for(pending, 60)

    assert asyncio.run(scenario()) == (True, [7])


def test_draining_the_queue_resumes_every_partition_its_pressure_paused() -> None:
    async def scenario() -> tuple[list[str], list[str], list[int]]:
        chan = FakeChannel(maxsize=10)  # pressure from floor(10 / 1.25) = 8 queued
        paused: list[str] = []
        resumed: list[str] = []
        for i in range(8):
            chan.queue.put_nowait(i)
        # five partitions deliver under pressure: each is paused (fetching stops)
        for i, tp in enumerate(["p0", "p1", "p2", "p3", "p4"], start=8):
            chan.queue.put_nowait_enhanced(
                i,
                on_pressure_high=lambda tp=tp: paused.append(tp),
                on_pressure_drop=lambda tp=tp: resumed.append(tp),
            )
        batch = await anext(batches(stream_of(chan), 100, 0.02))
        return paused, resumed, batch

    paused, resumed, batch = asyncio.run(scenario())
    assert batch == list(range(13))
    assert paused == ["p0", "p1", "p2", "p3", "p4"]
    # get_nowait() resumes one partition at each of sizes 4..1; the fifth only
    # resumes because the batch endorses the drop when it finds the queue empty
    assert sorted(resumed) == paused


def test_an_error_thrown_into_the_channel_is_raised() -> None:
    async def scenario() -> None:
        chan = FakeChannel()
        chan.queue.put_nowait(1)
        it = batches(stream_of(chan), 10, 5.0)
        await chan.queue.throw(RuntimeError("decode failed upstream"))
        await anext(it)

    with pytest.raises(RuntimeError, match="decode failed upstream"):
        asyncio.run(scenario())


def test_stopping_the_actor_ends_the_batches() -> None:
    async def scenario() -> list[list[int]]:
        chan = FakeChannel()
        chan.queue.put_nowait(1)
        got = []
        async for batch in batches(stream_of(chan), 1, 5.0):
            got.append(batch)
            # what faust.agents.actor.Actor.cancel() does
            chan.queue._throw(StopAsyncIteration())
        return got

    assert asyncio.run(scenario()) == [[1]]


@pytest.mark.parametrize(("size", "within"), [(0, 1.0), (10, 0.0), (10, -1.0)])
def test_a_batch_policy_that_cannot_work_is_refused(size: int, within: float) -> None:
    async def scenario() -> None:
        await anext(batches(stream_of(FakeChannel()), size, within))

    with pytest.raises(ValueError, match="max_size must be >= 1 and within > 0"):
        asyncio.run(scenario())


def test_ack_events_acks_each_event_once() -> None:
    events = [FakeEvent() for _ in range(3)]
    ack_events(events)
    assert [e.acks for e in events] == [1, 1, 1]


# --- the consumer: deliver directly only when the conductor cannot wait --------------


def fake_consumer(
    *, flow_active: bool = True, locked: bool = False, buffered: int = 0, full: bool = False
) -> tuple[Any, str]:
    """A fake consumer for ``_delivers_now``: the app's flow control, conductor lock,
    producer buffer and the queue of one channel of the partition."""
    flow = FlowControlEvent(initially_suspended=not flow_active)
    lock = asyncio.Lock()
    if locked:
        lock._locked = True  # type: ignore[attr-defined]  # held by a subscription change
    queue: ThrowableQueue[int] = ThrowableQueue(maxsize=2, flow_control=flow)
    if full:
        queue.force_put_nowait(1)
        queue.force_put_nowait(2)
    tp = "usage-0"
    conductor = SimpleNamespace(
        _tp_to_callback_lock=lock, _tp_index={tp: [SimpleNamespace(queue=queue)]}
    )
    producer = SimpleNamespace(buffer=fake_buffer(buffered, threaded=False))
    app = SimpleNamespace(flow_control=flow, topics=conductor, producer=producer)
    return SimpleNamespace(app=app), tp


def fake_buffer(pending: int, *, threaded: bool) -> Any:
    """A fake of Faust's ProducerBuffer: ``pending`` sends queued where the app's
    ``producer_threaded`` setting puts them (real asyncio queues)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(pending):
        queue.put_nowait(i)
    if threaded:
        return SimpleNamespace(queue=queue, pending=asyncio.Queue(), max_messages=100)
    return SimpleNamespace(queue=None, pending=queue, max_messages=100)


@pytest.mark.parametrize(
    ("state", "direct"),
    [
        ({}, True),
        ({"buffered": 100}, True),
        ({"flow_active": False}, False),
        ({"locked": True}, False),
        ({"buffered": 101}, False),
        ({"full": True}, False),
    ],
)
def test_a_record_is_delivered_directly_only_when_nothing_can_make_it_wait(
    state: dict[str, Any], direct: bool
) -> None:
    consumer, tp = fake_consumer(**state)
    assert GuardedConsumer._delivers_now(consumer, tp, threaded=False) is direct


@pytest.mark.parametrize("threaded", [False, True])
def test_the_producer_backlog_is_what_faust_counts_as_the_buffer_size(threaded: bool) -> None:
    from faust.transport.producer import ProducerBuffer

    from nodemeter_stream.commit_guard import producer_backlog

    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=threaded))
    assert producer_backlog(buffer, threaded=threaded) == buffer.size == 0  # threaded: no queue yet
    target = asyncio.Queue()
    for i in range(3):
        target.put_nowait(i)
    if threaded:
        buffer.queue = target
    else:
        buffer.pending = target
    assert producer_backlog(buffer, threaded=threaded) == buffer.size == 3
    # the fake used above counts as Faust does
    assert producer_backlog(fake_buffer(7, threaded=threaded), threaded=threaded) == 7


def test_the_raw_schema_hands_over_the_bytes_that_arrived() -> None:
    import faust

    from nodemeter_stream.agents.intake import RawSchema

    made: list[tuple[Any, ...]] = []
    app = SimpleNamespace(create_event=lambda *a: made.append(a) or a)
    message = SimpleNamespace(key=b"acme", value=b"\xc3\x01\x00", headers=[("h", b"1")])
    decode = RawSchema().compile(app)
    asyncio.run(decode(message, propagate=True))
    assert made == [(b"acme", b"\xc3\x01\x00", [("h", b"1")], message)]
    # what Faust's own raw schema gives for the same message
    real = faust.App("nodemeter-raw-schema-test")
    own = asyncio.run(
        faust.Schema(key_serializer="raw", value_serializer="raw").decode(real, message)
    )
    assert (own.key, own.value) == (b"acme", b"\xc3\x01\x00")
