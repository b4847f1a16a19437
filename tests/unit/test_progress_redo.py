"""Re-forming the batch in doubt whole (sink/progress.exact_redo, agents/effects.Gate).

Pure rules on rows, and the Gate on fakes (the consumer, app and store of
tests/unit/test_gate_in_order.py): a batch cut off by a crash is applied again with
exactly its records, before anything after it, so its blocks go out under the same
insert tokens with the same rows (docs/worker.md, "A batch cut off inside an insert").
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from faust.types import TP
from test_gate_in_order import TOPIC, FakeApp, FakeConsumer, FakeEvent

from nodemeter_stream import commit_guard
from nodemeter_stream.agents.effects import Gate, spans_of
from nodemeter_stream.sink.progress import (
    INTENT,
    PROGRESS,
    PartitionProgress,
    StateRow,
    batch_of,
    exact_redo,
    intent_rows,
    recover,
)

SPANS = {(TOPIC, 0): (5, 7), (TOPIC, 1): (3, 3)}


def intent_row(p: int, version: int, first: int, last: int, value: str) -> StateRow:
    return StateRow(INTENT, TOPIC, p, "", version, last, first, False, value)


def test_each_intent_row_names_the_whole_batch() -> None:
    rows = intent_rows("g", SPANS)
    assert [(r[3], r[7], r[6]) for r in rows] == [(0, 5, 7), (1, 3, 3)]
    assert {r[9] for r in rows} == {json.dumps({"batch": [[0, 5, 7], [1, 3, 3]]})}
    assert batch_of(str(rows[0][9])) == ((0, 5, 7), (1, 3, 3))
    # a batch that dropped what was stored names nothing: never re-formed exactly
    assert {r[9] for r in intent_rows("g", SPANS, whole=False)} == {""}


def test_an_unreadable_or_old_intent_names_no_batch() -> None:
    for value in ("", "{", '{"other": 1}', '{"batch": [[0, 1]]}', '{"batch": 3}'):
        assert batch_of(value) is None, value


def test_recovery_keeps_the_batch_of_the_intent_in_doubt_only() -> None:
    whole = json.dumps({"batch": [[0, 5, 7], [1, 3, 3]]})
    got = recover(
        [
            StateRow(PROGRESS, TOPIC, 0, "", 10, 4, -1, False, ""),
            intent_row(0, 11, 5, 7, whole),
            StateRow(PROGRESS, TOPIC, 1, "", 10, 2, -1, False, ""),
            intent_row(1, 11, 3, 3, whole),
            StateRow(PROGRESS, TOPIC, 2, "", 12, 9, -1, False, ""),
            intent_row(2, 11, 8, 9, json.dumps({"batch": [[2, 8, 9]]})),  # recorded
        ]
    )
    assert got[(TOPIC, 0)] == PartitionProgress(4, 7, ((0, 5, 7), (1, 3, 3)))
    assert got[(TOPIC, 1)] == PartitionProgress(2, 3, ((0, 5, 7), (1, 3, 3)))
    assert got[(TOPIC, 2)] == PartitionProgress(9, -1, None)


BATCH = ((0, 5, 7), (1, 3, 3))


def test_a_batch_in_doubt_is_re_formed_only_when_all_of_it_is_here() -> None:
    both = {0: PartitionProgress(4, 7, BATCH), 1: PartitionProgress(2, 3, BATCH)}
    assert exact_redo(both) == BATCH
    assert exact_redo({**both, 2: PartitionProgress(9, -1)}) == BATCH  # others applied
    # partition 1 went to another worker: this one cannot re-form the batch
    assert exact_redo({0: both[0], 2: PartitionProgress(9, -1)}) is None
    # rows of an older version (no batch named), or ranges that do not match
    assert exact_redo({0: PartitionProgress(4, 7), 1: PartitionProgress(2, 3)}) is None
    assert exact_redo({0: PartitionProgress(5, 7, BATCH), 1: both[1]}) is None
    # nothing in doubt
    assert exact_redo({0: PartitionProgress(7, -1), 1: PartitionProgress(3, -1)}) is None


class IntentStore:
    """A fake store: worker_state rows saying batch 0:5..7 + 1:3..3 was begun, not done."""

    group = "g"

    async def load(self, topic: str, partitions: Any, **_: Any) -> list[StateRow]:
        whole = json.dumps({"batch": [[0, 5, 7], [1, 3, 3]]})
        return [
            StateRow(PROGRESS, topic, 0, "", 10, 4, -1, False, ""),
            intent_row(0, 11, 5, 7, whole),
            StateRow(PROGRESS, topic, 1, "", 10, 2, -1, False, ""),
            intent_row(1, 11, 3, 3, whole),
        ]


class Event(FakeEvent):
    def __init__(self, partition: int, offset: int) -> None:
        super().__init__(offset)
        self.message = type("M", (), {"tp": TP(TOPIC, partition), "topic": TOPIC,
                                      "partition": partition, "offset": offset})()  # fmt: skip


class TwoPartitions(FakeConsumer):
    """The fake consumer of test_gate_in_order, assigned partitions 0 and 1."""

    def __init__(self) -> None:
        super().__init__()
        self._committed_offset = {TP(TOPIC, 0): 5, TP(TOPIC, 1): 3}

    def assignment(self) -> set[Any]:
        return set(self._committed_offset)


def gate_on_two_partitions() -> tuple[FakeApp, Gate]:
    commit_guard.guard_topics(TOPIC)
    app = FakeApp()
    app.consumer = TwoPartitions()
    FakeEvent.consumer = app.consumer
    gate = Gate(app, "price_usage", store=IntentStore(), topic=TOPIC, scopes=(),  # type: ignore[arg-type]
                on_recover=lambda parts, rows: None)  # fmt: skip
    return app, gate


def shape(admitted: list[tuple[list[Any], bool]]) -> list[tuple[list[tuple[int, int]], bool]]:
    return [([(e.message.partition, e.message.offset) for e in b], r) for b, r in admitted]


def test_the_gate_holds_everything_until_the_batch_in_doubt_is_whole() -> None:
    _, gate = gate_on_two_partitions()

    async def scenario() -> list[Any]:
        steps = []
        # 0:5 and 0:6: nothing yet, 0:7 and 1:3 missing
        steps.append(shape(await gate.admit([Event(0, 5), Event(0, 6)])))
        # 0:6 again (a replay), 0:7 and a record after the batch (0:8): held, still
        # waiting for 1:3
        steps.append(shape(await gate.admit([Event(0, 6), Event(0, 7), Event(0, 8)])))
        # 1:3 and 1:4: the batch in doubt whole, as a redo, then what came after it
        steps.append(shape(await gate.admit([Event(1, 3), Event(1, 4)])))
        # and from then on, ordinary batches
        steps.append(shape(await gate.admit([Event(0, 9)])))
        return steps

    steps = asyncio.run(scenario())
    assert steps[0] == [] and steps[1] == []
    assert steps[2] == [([(0, 5), (0, 6), (0, 7), (1, 3)], True), ([(0, 8), (1, 4)], False)]
    assert steps[3] == [([(0, 9)], False)]


def test_a_batch_in_doubt_that_does_not_come_whole_goes_as_an_ordinary_one() -> None:
    _, gate = gate_on_two_partitions()

    async def scenario() -> list[Any]:
        assert await gate.admit([Event(0, 5), Event(0, 6)]) == []
        gate.redo_wait_s = 0.0  # waited long enough: 1:3 never came
        return shape(await gate.admit([Event(0, 7), Event(0, 8)]))

    assert asyncio.run(scenario()) == [([(0, 5), (0, 6), (0, 7)], False), ([(0, 8)], False)]


def test_the_records_held_behind_a_batch_in_doubt_are_bounded() -> None:
    _, gate = gate_on_two_partitions()
    gate.held_max = 2

    async def scenario() -> list[Any]:
        assert await gate.admit([Event(0, 5), Event(0, 6), Event(0, 7), Event(0, 8)]) == []
        # 1:3 still missing and a third later record held: no more waiting
        return shape(await gate.admit([Event(0, 9), Event(0, 10)]))

    assert asyncio.run(scenario()) == [
        ([(0, 5), (0, 6), (0, 7)], False),
        ([(0, 8), (0, 9), (0, 10)], False),
    ]


def test_only_a_batch_that_dropped_nothing_is_whole() -> None:
    _, gate = gate_on_two_partitions()

    async def scenario() -> tuple[bool, bool, bool]:
        await gate.admit([Event(0, 5)])  # recovers: 0:5..7 and 1:3 in doubt
        doubtful = spans_of([Event(0, 5)])
        return (
            gate.whole(doubtful, False),
            gate.whole(doubtful, True),
            gate.whole(spans_of([Event(0, 8)]), False),
        )

    assert asyncio.run(scenario()) == (False, True, True)
