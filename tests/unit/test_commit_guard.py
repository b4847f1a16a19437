"""The commit guard on Faust's real consumer methods, driven through a fake consumer state.

``FakeConsumerState`` holds only the bookkeeping attributes that Faust's
``Consumer._add_gap`` / ``_new_offset`` read and write; the methods themselves are
faust-streaming's own (``faust_own``) or the guarded subclass's (``GuardedConsumer``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import pytest
from faust.types import TP
from intervaltree import IntervalTree

from nodemeter_stream import commit_guard
from nodemeter_stream.commit_guard import head_missing

GUARDED = "nodemeter-test-guard.usage.v1"
PLAIN = "some-app-table-changelog"


class FakeConsumerState:
    """A fake: Faust's consumer bookkeeping, plus a recording seek and earliest_offsets."""

    def __init__(self, *, earliest: int = 0) -> None:
        self._gap: defaultdict[TP, IntervalTree] = defaultdict(IntervalTree)
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self.earliest = earliest
        self.seeks: list[tuple[TP, int]] = []

    def ack(self, tp: TP, *offsets: int) -> None:
        for o in offsets:
            self._acked[tp].append(o)
            self._acked_index[tp].add(o)

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest for tp in tps}

    async def seek_wait(self, positions: dict[TP, int]) -> None:
        self.seeks.extend(positions.items())

    def highwater(self, tp: TP) -> int | None:
        return None


@pytest.fixture(autouse=True)
def guarded_topic() -> None:
    commit_guard.guard_topics(GUARDED)


def faust_method(name: str) -> Any:
    """The method as the worker's transport has it (guarded)."""
    return getattr(commit_guard.GuardedConsumer, name)


def faust_own(name: str) -> Any:
    """faust-streaming's own method (what the guard subclasses)."""
    from faust.transport.drivers.aiokafka import Consumer

    return getattr(Consumer, name)


def the_restart_seen_in_the_sigkill_test(topic: str) -> tuple[FakeConsumerState, TP]:
    """Committed 3125; the first record delivered after the seek is 3242 (prefetched)."""
    tp = TP(topic, 2)
    state = FakeConsumerState()
    state._committed_offset[tp] = 3125
    asyncio.run(faust_method("_add_gap")(state, tp, 3126, 3242))
    state.ack(tp, 3242, 3243)  # the stream processed the prefetched records
    return state, tp


def test_faust_alone_commits_past_records_nobody_processed() -> None:
    # What the guard is for: with Faust's own methods, 3125..3241 count as done.
    tp = TP(PLAIN, 2)
    state = FakeConsumerState()
    state._committed_offset[tp] = 3125
    asyncio.run(faust_own("_add_gap")(state, tp, 3126, 3242))
    state.ack(tp, 3242, 3243)
    # 3243: 3125..3242 count as done (the duplicate 3242, from the gap and the ack,
    # ends Faust's consecutive run there: the one-offset-per-commit crawl seen in logs)
    assert faust_own("_new_offset")(state, tp) == 3243


def test_unguarded_topics_keep_faust_behaviour() -> None:
    state, tp = the_restart_seen_in_the_sigkill_test(PLAIN)
    assert faust_method("_new_offset")(state, tp) == 3243


def test_guarded_topic_does_not_commit_past_the_unprocessed_head(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="nodemeter.commits"):
        state, tp = the_restart_seen_in_the_sigkill_test(GUARDED)
    assert not state._gap[tp]  # nothing counted as acknowledged
    assert "3126..3242" in caplog.text and "not delivered in order" in caplog.text
    assert faust_method("_new_offset")(state, tp) is None
    # once the skipped records are delivered again and processed, the commit moves on
    state.ack(tp, *range(3125, 3242))
    assert faust_method("_new_offset")(state, tp) == 3244


def test_guarded_topic_commits_normally_in_order() -> None:
    tp = TP(GUARDED, 0)
    state = FakeConsumerState()
    state._committed_offset[tp] = 10
    state.ack(tp, 10, 11, 12)
    assert faust_method("_new_offset")(state, tp) == 13
    # a single missing head record: Faust's check alone (> 1) would let 13 pass
    state._committed_offset[tp] = 13
    state.ack(tp, 14, 15)
    assert faust_own("_new_offset")(state, tp) == 16
    state2 = FakeConsumerState()
    state2._committed_offset[tp] = 13
    state2.ack(tp, 14, 15)
    assert faust_method("_new_offset")(state2, tp) is None


@pytest.mark.parametrize(
    ("acked", "committed", "missing"),
    [([], 5, False), ([5, 6], 5, False), ([6, 7], 5, True), ([6], None, False)],
)
def test_head_missing(acked: list[int], committed: int | None, missing: bool) -> None:
    assert head_missing(acked, committed) is missing


# --- in-order admission -----------------------------------------------------------------

P0, P1 = TP(GUARDED, 0), TP(GUARDED, 1)


def test_admit_processes_in_order_and_holds_back_what_came_too_early() -> None:
    expected: dict[TP, int] = {}
    committed = {P0: 3125, P1: 40}
    # P0: 3242 arrives first (prefetched before the seek); P1 is in order
    batch = [(P0, 3242), (P1, 40), (P0, 3243), (P1, 41)]
    keep, rewind = commit_guard.admit(batch, expected, committed.get)
    assert keep == [False, True, False, True]
    assert rewind == {P0: 3125}
    assert expected == {P1: 42}  # nothing of P0 was processed
    # after the rewind P0 comes again from 3125, in order; a replay below is processed
    keep, rewind = commit_guard.admit([(P0, 3125), (P0, 3126), (P1, 41)], expected, committed.get)
    assert keep == [True, True, True] and rewind == {}
    assert expected == {P0: 3127, P1: 42}


def test_admit_a_single_missing_head_record_is_not_let_through() -> None:
    # Faust's own check lets min(acked) == committed + 1 pass; here it is held back
    expected: dict[TP, int] = {}
    keep, rewind = commit_guard.admit([(P0, 41), (P0, 42)], expected, {P0: 40}.get)
    assert keep == [False, False] and rewind == {P0: 40}


def test_admit_without_a_start_takes_what_comes() -> None:
    expected: dict[TP, int] = {}
    keep, rewind = commit_guard.admit([(P0, 7), (P0, 9)], expected, lambda tp: None)
    assert keep == [True, False] and rewind == {P0: 8}


class FakeApp:
    """A fake faust.App: the attributes InOrder reads, and a fake consumer."""

    def __init__(self, consumer: FakeConsumerState) -> None:
        self.consumer = consumer
        self.rebalancing = False
        self.consumer_generation_id = 1
        done = asyncio.Event()
        done.set()
        self.tables = type("Tables", (), {"recovery": type("R", (), {"completed": done})()})()


class FakeEvent:
    def __init__(self, tp: TP, offset: int) -> None:
        self.message = type("M", (), {"tp": tp, "offset": offset})()


def test_in_order_holds_back_rewinds_and_starts_again_on_a_new_assignment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = FakeConsumerState(earliest=0)
    consumer._committed_offset[P0] = 3125
    app = FakeApp(consumer)
    guard = commit_guard.InOrder(app)

    async def run(*offsets: int) -> list[int]:
        kept = await guard.admit([FakeEvent(P0, o) for o in offsets])
        return [e.message.offset for e in kept]

    with caplog.at_level(logging.WARNING, logger="nodemeter.commits"):
        assert asyncio.run(run(3242, 3243)) == []
    assert consumer.seeks == [(P0, 3125)] and guard.rewinds == 1
    assert "record 3242 arrived while 3125 was next" in caplog.text
    # more records fetched before the rewind: held back, no second seek within a second
    assert asyncio.run(run(3244, 3245)) == []
    assert consumer.seeks == [(P0, 3125)] and guard.held_back == 4
    # nothing more arrives (Faust dropped the re-fetched records): the timer seeks again
    guard.clock = lambda: 10**6
    consumer.assignment = lambda: {P0}  # type: ignore[attr-defined]
    assert asyncio.run(guard.retry()) == [P0]
    assert consumer.seeks == [(P0, 3125), (P0, 3125)]
    assert asyncio.run(run(3125, 3126, 3127)) == [3125, 3126, 3127]
    assert asyncio.run(guard.retry()) == [] and guard._sought == {}  # it came
    # a stalled fetch: records behind the commit, none delivered for stall_s
    consumer._committed_offset[P0] = 3128
    consumer.highwater = lambda tp: 3140  # type: ignore[attr-defined]
    guard.clock = lambda: 10**6 + 10
    assert asyncio.run(guard.retry()) == []  # delivered 10 s ago
    guard.clock = lambda: 10**6 + guard.stall_s + 1
    assert asyncio.run(guard.retry()) == [P0] and consumer.seeks[-1] == (P0, 3128)
    consumer.highwater = lambda tp: 3128  # type: ignore[attr-defined]
    guard.clock = lambda: 10**7
    assert asyncio.run(guard.retry()) == []  # caught up: nothing to do
    # during a rebalance records pass unchecked; a new generation starts from its commits
    app.rebalancing = True
    assert asyncio.run(run(9000)) == [9000]
    app.rebalancing, app.consumer_generation_id = False, 2
    consumer._committed_offset[P0] = 3127
    assert asyncio.run(run(3127, 3128)) == [3127, 3128]
    # never committed: the first record delivered is the start
    fresh = TP(GUARDED, 5)
    kept = asyncio.run(guard.admit([FakeEvent(fresh, 12), FakeEvent(fresh, 13)]))
    assert [e.message.offset for e in kept] == [12, 13] and guard.expected[fresh] == 14


def test_in_order_goes_on_from_the_log_start_when_retention_deleted_the_head(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # committed 120, but retention deleted everything below 500: the consumer resets to
    # the log start, so 500 arrives while 120 is due, and no rewind can bring 120 back
    tp = TP(GUARDED, 1)
    consumer = FakeConsumerState(earliest=500)
    consumer._committed_offset[tp] = 120
    guard = commit_guard.InOrder(FakeApp(consumer))
    with caplog.at_level(logging.ERROR, logger="nodemeter.commits"):
        assert asyncio.run(guard.admit([FakeEvent(tp, 500), FakeEvent(tp, 501)])) == []
    assert "records 120..499" in caplog.text and "retention" in caplog.text
    assert consumer.seeks == [(tp, 500)]  # read again from the log start, in order
    kept = asyncio.run(guard.admit([FakeEvent(tp, 500), FakeEvent(tp, 501)]))
    assert [e.message.offset for e in kept] == [500, 501]
    consumer.ack(tp, 500, 501)
    assert faust_method("_new_offset")(consumer, tp) == 502


def test_the_worker_app_uses_the_guarded_consumer() -> None:
    from nodemeter_stream.app import WorkerConfig, faust_app

    app = faust_app(WorkerConfig(bootstrap="127.0.0.1:1", app_id="guard-test"))
    assert app.transport.Consumer is commit_guard.GuardedConsumer


def test_a_never_committed_partition_commits_only_from_where_its_agent_started() -> None:
    tp = TP(GUARDED, 1)
    state = FakeConsumerState()
    state.ack(tp, 11)  # a stopping stream acknowledged one record, nothing was stored
    assert faust_own("_new_offset")(state, tp) == 12  # faust alone would commit past 0..10
    assert faust_method("_new_offset")(state, tp) is None  # no start known: no commit
    state.start_offsets = {tp: 0}  # type: ignore[attr-defined]
    assert faust_method("_new_offset")(state, tp) is None  # record 0 not acknowledged
    fresh = FakeConsumerState()
    fresh.start_offsets = {tp: 0}  # type: ignore[attr-defined]
    fresh.ack(tp, *range(0, 12))  # in order from the start: commits normally
    assert faust_method("_new_offset")(fresh, tp) == 12
