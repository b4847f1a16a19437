"""Merging a request's spans: order- and duplicate-insensitive, completeness, corrections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from nodemeter.events import (
    Meters,
    RequestEnd,
    Status,
    UsageEvent,
    event_id_for,
    request_end_id,
)
from nodemeter_stream.ingest.merge import (
    RequestState,
    apply,
    build_record,
    due,
    from_us,
    purgeable,
    to_us,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def span(i: int, *, node: str, branch: str, tokens: int, parent: str = "root") -> UsageEvent:
    return UsageEvent(
        event_id=event_id_for("acme", "r1", f"s{i}", 0),
        tenant="acme",
        request_id="r1",
        node_id=node,
        span_id=f"s{i}",
        parent_span_id=parent,
        branch_path=branch,
        workflow="wf",
        event_time=T0 + timedelta(milliseconds=i),
        meters=Meters(input_tokens=tokens, cpu_ms=i),
        status=Status.ERROR if tokens == 13 else Status.OK,
    )


def the_end(count: int) -> RequestEnd:
    return RequestEnd(
        event_id=request_end_id("acme", "r1"),
        tenant="acme",
        request_id="r1",
        root_span_id="root",
        span_count=count,
        event_time=T0 + timedelta(seconds=5),
        workflow="wf",
    )


def merged(records: list[UsageEvent | RequestEnd], *, now_ms: int = 1000) -> RequestState:
    state: RequestState | None = None
    for r in records:
        state = apply(state, r, now_ms=now_ms, partition=1)
    assert state is not None
    return state


spans_strategy = st.lists(
    st.tuples(
        st.sampled_from(["plan", "search", "llm", "rerank"]),
        st.sampled_from(["a", "b", "a.c"]),
        st.integers(0, 50),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(spans_strategy, st.data())
def test_any_interleaving_and_duplication_gives_the_same_record(
    spec: list[tuple[str, str, int]], data: st.DataObject
) -> None:
    events = [span(i, node=n, branch=b, tokens=t) for i, (n, b, t) in enumerate(spec)]
    records: list[UsageEvent | RequestEnd] = [*events, the_end(len(events))]
    reference = build_record(merged(records))
    dupes = data.draw(st.lists(st.sampled_from(records), max_size=10))
    shuffled = data.draw(st.permutations(records + dupes))
    got = build_record(merged(list(shuffled), now_ms=data.draw(st.integers(1, 10**9))))
    assert got == reference
    assert got.complete and got.revision == len(events) + 1
    # per-node totals add up to the request totals and to the inputs
    assert sum(n.quantities.get("input_tokens", 0) for n in got.nodes) == sum(t for *_, t in spec)
    assert got.quantities.get("input_tokens", 0) == sum(t for *_, t in spec)


def test_record_shape_per_node_path_branches_and_status() -> None:
    events = [
        span(0, node="plan", branch="", tokens=5),
        span(1, node="search", branch="a", tokens=7),
        span(2, node="search", branch="b", tokens=13),
        span(3, node="llm", branch="", tokens=11),
    ]
    rec = build_record(merged([*events, the_end(4)]))
    assert rec.node_path == ("plan", "search", "llm")
    assert rec.branch_paths == ("", "a", "b")
    search = next(n for n in rec.nodes if n.node_id == "search")
    assert search.spans == 2 and search.quantities["input_tokens"] == 20
    assert search.status == "ERROR" and rec.status == "ERROR"
    assert rec.started_at_us == to_us(T0) and from_us(rec.ended_at_us) == T0 + timedelta(seconds=5)
    assert {s.span_id for s in rec.span_tree} == {"s0", "s1", "s2", "s3"}
    assert rec.has_end and rec.expected_spans == 4 and rec.spans_seen == 4


def test_incomplete_until_every_counted_span_arrived() -> None:
    events = [span(i, node="llm", branch="", tokens=1) for i in range(3)]
    state = merged([events[0], the_end(3), events[2]])
    assert not state.complete
    assert due(state, now_ms=1000, timeout_s=60) is None
    state = apply(state, events[1], now_ms=2000, partition=1)
    emission = due(state, now_ms=2000, timeout_s=60)
    assert emission is not None and emission.record.complete and not emission.record.is_correction
    assert emission.state.closed and emission.state.emitted_revision == 4


def test_timeout_closes_as_incomplete_and_a_late_span_yields_a_correction() -> None:
    events = [span(i, node="llm", branch="", tokens=10) for i in range(3)]
    state = merged([events[0], events[1], the_end(3)], now_ms=1_000)
    assert due(state, now_ms=1_000 + 59_999, timeout_s=60) is None
    closed = due(state, now_ms=61_000, timeout_s=60)
    assert closed is not None
    assert not closed.record.complete and closed.record.revision == 3
    assert closed.record.quantities["input_tokens"] == 20
    state = closed.state
    assert due(state, now_ms=62_000, timeout_s=60) is None  # nothing new
    # a duplicate after close changes nothing
    assert apply(state, events[0], now_ms=63_000, partition=1) == state
    late = apply(state, events[2], now_ms=64_000, partition=1)
    fix = due(late, now_ms=64_000, timeout_s=60)
    assert fix is not None
    assert fix.record.is_correction and fix.record.complete
    assert fix.record.revision == 4 > closed.record.revision
    assert fix.record.quantities["input_tokens"] == 30  # the late span counted once


def test_a_stray_resend_after_purge_has_a_lower_revision() -> None:
    events = [span(i, node="llm", branch="", tokens=10) for i in range(3)]
    full = build_record(merged([*events, the_end(3)]))
    stray = build_record(merged([events[1]]))
    assert stray.revision < full.revision  # ReplacingMergeTree(revision) keeps the full one


def test_purge_only_after_retention_and_once_written() -> None:
    state = merged([span(0, node="llm", branch="", tokens=1), the_end(1)])
    assert not purgeable(state, now_ms=10**9, retention_s=10)  # never written
    emitted = due(state, now_ms=5_000, timeout_s=60)
    assert emitted is not None
    assert not purgeable(emitted.state, now_ms=14_000, retention_s=10)
    assert purgeable(emitted.state, now_ms=15_000, retention_s=10)


def test_state_json_round_trip() -> None:
    state = merged([span(0, node="llm", branch="x", tokens=3), the_end(2)])
    assert RequestState.from_json(state.to_json()) == state
