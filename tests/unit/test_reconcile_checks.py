"""``nodemeter reconcile``'s comparisons and the worker's tallies (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from nodemeter.events import Meters, RequestEnd, UsageEvent
from nodemeter_stream.analytics.reconcile import (
    BILLED,
    EMITTED,
    ROLLUPS,
    Check,
    CheckedRange,
    Coverage,
    MeterQuantity,
    PartitionView,
    add_statement_checks,
    billed_checks,
    checked_range,
    checked_ranges_line,
    emitted_checks,
    exit_status,
    rollup_results,
)
from nodemeter_stream.ingest.decode import Accepted, DeadLetter, Source
from nodemeter_stream.ingest.plan import plan_batch
from nodemeter_stream.ingest.tally import Tally, tally_batch
from nodemeter_stream.sink.progress import TALLY, ranges, tally_rows

T = datetime(2026, 11, 1, tzinfo=UTC)
TOPIC = "nodemeter.usage.v1"


def tally(
    first: int, last: int, events: int = 0, dup: int = 0, dead: int = 0, other: int = 0
) -> Tally:
    n = events + dup + dead + other
    return Tally(first=first, last=last, records=n, events=events, duplicates=dup,
                 dead_letters=dead, other=other)  # fmt: skip


# --- the worker's tally ---------------------------------------------------------------


def _event(eid: str, req: str = "r1") -> UsageEvent:
    return UsageEvent(event_id=eid, tenant="acme", request_id=req, node_id="llm", span_id=eid,
                      event_time=T, meters=Meters(input_tokens=5))  # fmt: skip


def test_a_batch_tally_counts_every_record_once_per_partition() -> None:
    def src(p: int, o: int) -> Source:
        return Source(topic=TOPIC, partition=p, offset=o)

    end = RequestEnd(event_id="end1", tenant="acme", request_id="r1", root_span_id="e1",
                     span_count=2, event_time=T)  # fmt: skip
    items = [
        Accepted(record=_event("e1"), source=src(0, 10), payload=b""),
        Accepted(record=_event("e1"), source=src(0, 11), payload=b""),  # duplicate
        DeadLetter(reason="malformed", detail="", source=src(0, 12), key=b"", payload=b""),
        Accepted(record=end, source=src(0, 13), payload=b""),
        Accepted(record=_event("e2", "r2"), source=src(1, 7), payload=b""),
        Accepted(record=_event("e3", "r3"), source=src(1, 8), payload=b""),  # stored before
    ]
    plan = plan_batch(
        items, get_state=lambda _k: None, stored={("acme", "e3"): (TOPIC, 1, 8)},
        now_ms=0, timeout_s=60,
    )  # fmt: skip
    spans = ranges((i.source.topic, i.source.partition, i.source.offset) for i in items)
    got = tally_batch(plan, spans)
    assert got == {
        (TOPIC, 0): Tally(first=10, last=13, records=4, events=1, duplicates=1,
                          dead_letters=1, other=1),
        (TOPIC, 1): Tally(first=7, last=8, records=2, events=2),
    }  # fmt: skip
    for t in got.values():
        assert t.records == t.accounted == t.span
    rows = tally_rows("g", got)
    assert [(r[1], r[3], r[4], r[6], r[7]) for r in rows] == [
        (TALLY, 0, "00000000000000000010", 13, 10),
        (TALLY, 1, "00000000000000000007", 8, 7),
    ]
    assert Tally.from_json(10, 13, str(rows[0][9])) == got[(TOPIC, 0)]


def test_an_offset_delivered_twice_in_one_batch_is_one_record() -> None:
    """After a rebalance Faust can deliver an offset twice in one take: the plan sees the
    second copy as a duplicate, but the topic holds one record there."""
    src = Source(topic=TOPIC, partition=0, offset=20)
    again = Accepted(record=_event("e1"), source=src, payload=b"")
    items = [again, Accepted(record=_event("e1"), source=src, payload=b""),
             Accepted(record=_event("e2"), source=Source(topic=TOPIC, partition=0, offset=21),
                      payload=b"")]  # fmt: skip
    plan = plan_batch(items, get_state=lambda _k: None, stored={}, now_ms=0, timeout_s=60)
    assert len(plan.duplicates) == 1  # the plan's view: a duplicate of the first copy
    spans = ranges((i.source.topic, i.source.partition, i.source.offset) for i in items)
    (got,) = tally_batch(plan, spans).values()
    assert got == Tally(first=20, last=21, records=2, events=2)
    assert got.records == got.span == got.accounted


# --- emitted = stored -----------------------------------------------------------------


def test_the_checked_range_starts_at_the_first_tally_within_retention() -> None:
    view = PartitionView(partition=0, earliest=5, end=30, applied=25,
                         tallies=[tally(0, 9, 10), tally(10, 19, 10), tally(20, 25, 6)])  # fmt: skip
    r, notes = checked_range(view)
    assert r is not None and (r.first, r.last) == (10, 25) and r.records == 16
    assert [t.first for t in r.tallies] == [10, 20] and r.gaps() == []
    assert any("0..4 are past the topic's retention" in n for n in notes)
    assert any("5..9 were applied without tallies" in n for n in notes)
    assert any("4 record(s) after offset 25 not applied yet" in n for n in notes)


def test_a_store_written_before_tallies_is_left_out_and_said_so() -> None:
    r, notes = checked_range(PartitionView(partition=2, earliest=0, end=8, applied=7))
    assert r is None
    assert notes == ["p2: offsets 0..7 were applied without tallies (a worker before "
                     "migration 080): not checked"]  # fmt: skip


def _ranges() -> list[CheckedRange]:
    return [
        CheckedRange(0, 0, 9, [tally(0, 4, 3, 1, 1), tally(5, 9, 4, 0, 0, 1)]),
        CheckedRange(1, 0, 3, [tally(0, 3, 4)]),
    ]


def test_emitted_equals_stored_when_every_count_agrees() -> None:
    out = emitted_checks(_ranges(), stored={0: 7, 1: 4}, dead_stored={0: 1},
                         dead_topic={0: 1, 1: 0}, topic=TOPIC)  # fmt: skip
    assert [c.ok for c in out] == [True] * 4 and exit_status(out) == 0
    assert all(c.check == EMITTED for c in out)
    assert out[0].expected == out[0].actual == 14
    assert checked_ranges_line(_ranges(), TOPIC) == (
        f"emitted = stored checked {TOPIC} offsets p0:0..9 p1:0..3"
    )
    assert "11 stored + 1 dead letters + 1 duplicates + 1 request ends" in out[0].what


def test_deleted_events_and_lost_dead_letters_are_bad() -> None:
    out = emitted_checks(_ranges(), stored={0: 7, 1: 2}, dead_stored={},
                         dead_topic={0: 1}, topic=TOPIC)  # fmt: skip
    bad = [c for c in out if not c.ok]
    assert [c.what for c in bad] == [
        "stored events = usage_events FINAL at those offsets",
        "dead letters = dead_letters FINAL at those offsets",
    ]
    assert (bad[0].expected, bad[0].actual) == (11, 9) and "p1 4/2" in bad[0].hint
    assert exit_status(out) == 1
    text = "\n".join(line for c in bad for line in c.render())
    assert text.startswith("BAD emitted = stored") and "expected 11, actual 9" in text


def test_offsets_without_a_tally_are_a_gap() -> None:
    r = CheckedRange(0, 0, 9, [tally(0, 3, 4), tally(7, 9, 3)])
    assert r.gaps() == [(4, 6)]
    out = emitted_checks([r], stored={0: 7}, dead_stored={}, dead_topic=None, topic=TOPIC)
    assert len(out) == 3  # no DLQ check when the DLQ was not read
    assert not out[0].ok and (out[0].expected, out[0].actual) == (10, 7)
    assert "p0:4..6" in out[0].hint


def test_progress_past_the_topic_end_is_bad() -> None:
    r, _ = checked_range(PartitionView(partition=0, earliest=0, end=3, applied=9,
                                       tallies=[tally(0, 9, 10)]))  # fmt: skip
    assert r is not None and r.beyond_end
    out = emitted_checks([r], stored={0: 10}, dead_stored={}, dead_topic=None, topic=TOPIC)
    assert not out[0].ok and "topic was recreated" in out[0].hint


# --- stored = billed ------------------------------------------------------------------


def test_billed_agrees_in_one_line_per_tenant() -> None:
    q = [MeterQuantity("acme", "2026-11", "input_tokens", 100, 100),
         MeterQuantity("acme", "2026-11", "gpu_ms", 7, 7)]  # fmt: skip
    out = billed_checks(q, [Coverage("acme", 3)], refused={"umbrella": 4})
    assert [(c.scope, c.ok) for c in out] == [("acme all history", True),
                                              ("umbrella all history", True)]  # fmt: skip
    assert "3 billable events; 2 meter-windows in 1 window(s) agree" in str(out[0].actual)
    assert "4 refused by pricing" in str(out[1].actual)


def test_a_missing_line_and_a_quantity_mismatch_are_bad() -> None:
    q = [MeterQuantity("acme", "2026-11", "input_tokens", 100, 90),
         MeterQuantity("acme", "", "output_tokens", 5, 0),
         MeterQuantity("globex", "2026-11", "cpu_ms", 3, 3)]  # fmt: skip
    cov = [Coverage("acme", 4, 1, ["ev-9"]), Coverage("globex", 1)]
    out = billed_checks(q, cov)
    bad = [c for c in out if not c.ok]
    assert [c.scope for c in bad] == ["acme all history", "acme window 2026-11 input_tokens",
                                      "acme window (no lines) output_tokens"]  # fmt: skip
    assert "1 of 4 without (e.g. ev-9)" in str(bad[0].actual)
    assert (bad[1].expected, bad[1].actual) == (100, 90)
    assert all(c.check == BILLED for c in out) and [c.ok for c in out][-1]


# --- lines = rollups, the statement hook ----------------------------------------------


def test_rollup_checks_per_tenant_and_the_statement_hook() -> None:
    checks = [Check("acme", "USD", "amount: priced_lines = cost_hourly", D("1.5"), D("1.5")),
              Check("globex", "USD", "amount: priced_lines = cost_hourly", D(5), D(4))]  # fmt: skip
    out = rollup_results(checks)
    assert [(c.scope, c.ok) for c in out] == [("acme all history", True), ("globex USD", False)]
    assert "nodemeter rebuild" in out[1].hint and out[1].check == ROLLUPS
    assert [c.scope for c in rollup_results(checks, tenant="acme")] == ["acme all history"]
    assert add_statement_checks(out) is out and len(out) == 2
