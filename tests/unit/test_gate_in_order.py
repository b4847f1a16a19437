"""The agents' Gate and its in-order guard together, on fakes of Faust's app and consumer.

Reproduces a livelock seen in the broker-kill fault test (torture loop 8, and again on
its first run in a loop of that test alone): after the broker came back, the group
rebalanced; the Gate recovered progress 2 (start at 3) and the batch holding record 3
was processed while the rebalance was still under way (the guard lets such records pass
unchecked). Once settled, the guard started the partition at the recovered start, 3,
held back 4.. and rewound to 3 every second; the Gate skipped 3 each time as already
applied, so the guard never saw it and the partition never moved again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP

from nodemeter_stream import commit_guard
from nodemeter_stream.agents.effects import Gate, spans_of
from nodemeter_stream.sink.progress import PROGRESS, StateRow

TOPIC = "nodemeter-test-gate.usage-by-tenant.v1"
P0 = TP(TOPIC, 0)


class FakeConsumer:
    """A fake consumer: assignment, committed offsets, recorded seeks, Faust's acks."""

    def __init__(self) -> None:
        self._committed_offset: dict[TP, int | None] = {P0: 3}
        self.seeks: list[tuple[TP, int]] = []
        self.acked: list[int] = []

    def assignment(self) -> set[TP]:
        return {P0}

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: 0 for tp in tps}

    async def seek_wait(self, positions: dict[TP, int]) -> None:
        self.seeks.extend(positions.items())

    def highwater(self, tp: TP) -> int | None:
        return 20


class FakeApp:
    """A fake faust.App: what Gate and InOrder read, and a timer decorator."""

    def __init__(self) -> None:
        self.consumer = FakeConsumer()
        self.rebalancing = False
        self.consumer_generation_id = 3
        done = asyncio.Event()
        done.set()
        self.tables = type("Tables", (), {"recovery": type("R", (), {"completed": done})()})()

    def timer(self, *_: Any, **__: Any) -> Any:
        return lambda fn: fn


class FakeStore:
    """A fake StateStore: the progress rows of record say offset 2 is applied."""

    async def load(self, topic: str, partitions: Any, **_: Any) -> list[StateRow]:
        return [StateRow(PROGRESS, topic, 0, "", 1, 2, 0, False, "")]


class FakeEvent:
    """A fake event: acking it (by its message, as ``ack_all`` does) records its offset in
    the fake consumer's acks."""

    consumer: FakeConsumer | None = None  # set by setup()

    def __init__(self, offset: int) -> None:
        self.message = type("M", (), {"tp": P0, "topic": TOPIC, "partition": 0, "offset": offset})()

    def ack(self) -> bool:
        assert self.consumer is not None
        self.consumer.acked.append(self.message.offset)
        return True


def setup() -> tuple[FakeApp, Gate]:
    commit_guard.guard_topics(TOPIC)
    app = FakeApp()
    FakeEvent.consumer = app.consumer
    gate = Gate(app, "price_usage", store=FakeStore(), topic=TOPIC, scopes=(),  # type: ignore[arg-type]
                on_recover=lambda parts, rows: None)  # fmt: skip
    return app, gate


def offsets(admitted: list[tuple[list[Any], bool]]) -> list[int]:
    """The offsets of the batches ``Gate.admit`` hands over (none is a redo here)."""
    assert not any(redo for _, redo in admitted)
    return [e.message.offset for batch, _ in admitted for e in batch]


def test_a_record_applied_during_the_rebalance_does_not_stall_its_partition() -> None:
    app, gate = setup()

    async def admit(*offs: int) -> list[int]:
        return offsets(await gate.admit([FakeEvent(o) for o in offs]))

    async def scenario() -> None:
        # the rebalance is still under way: record 3 passes unchecked and is applied
        app.rebalancing = True
        batch = [FakeEvent(3)]
        assert offsets(await gate.admit(batch)) == [3]
        gate.applied(spans_of(batch))
        # settled: the next records are taken in order, with no rewind to 3
        app.rebalancing = False
        assert await admit(4, 5) == [4, 5]
        assert app.consumer.seeks == []
        # a re-delivered applied record is skipped (acked) and does not hold anything back
        assert await admit(3, 6) == [6]
        assert app.consumer.acked == [3] and app.consumer.seeks == []

    asyncio.run(scenario())


def test_a_skipped_applied_record_moves_the_guard_past_it() -> None:
    # the guard is waiting for 3 (its start), 3 comes again but is already applied
    app, gate = setup()

    async def scenario() -> None:
        assert offsets(await gate.admit([FakeEvent(3)])) == [3]
        gate.applied(spans_of([FakeEvent(3)]))
        gate.order.expected.clear()  # as a new generation of the guard would
        gate.order.start_at[P0] = 3  # the stale start of the old code
        kept = offsets(await gate.admit([FakeEvent(3), FakeEvent(4)]))
        assert kept == [4] and app.consumer.seeks == []

    asyncio.run(scenario())
