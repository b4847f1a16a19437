"""``nodemeter reconcile``'s SQL on chDB: a known store, then one fault at a time.

Also: the audit trail's retention, read from the migrated engine (raw usage kept at
least 90 days for reconciliation, design notes).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodemeter_stream.analytics import reconcile
from nodemeter_stream.analytics import reconcile_store as facts
from nodemeter_stream.ingest.tally import Tally
from nodemeter_stream.sink.progress import STATE_COLUMNS, TALLY, progress_rows, tally_rows
from nodemeter_stream.topics import Topics

pytestmark = pytest.mark.clickhouse

TOPIC = "t.nodemeter.usage.v1"
T = datetime(2026, 11, 2, 10, tzinfo=UTC)
EPOCH, FAR = datetime(1970, 1, 1, tzinfo=UTC), datetime(2299, 1, 1, tzinfo=UTC)
EVENT_COLS = ["event_id", "tenant", "request_id", "node_id", "span_id", "input_tokens",
              "output_tokens", "gpu_ms", "custom", "billable", "event_time", "source_topic",
              "source_partition", "source_offset"]  # fmt: skip
LINE_COLS = ["line_id", "line_kind", "event_id", "tenant", "request_id", "node_id", "workflow",
             "model", "provider", "meter", "quantity", "unit_price", "amount", "price_book",
             "price_book_version", "charge_model", "tier", "window_id", "window_start",
             "event_time"]  # fmt: skip
DEAD_COLS = ["source_topic", "source_partition", "source_offset", "reason", "detail", "tenant",
             "record_key", "payload"]  # fmt: skip


def event(eid: str, offset: int, *, tenant: str = "acme", inp: int = 0, out: int = 0,
          gpu: int = 0, custom: dict[str, int] | None = None, billable: bool = True) -> list[Any]:  # fmt: skip
    return [eid, tenant, "r1", "llm", eid, inp, out, gpu, custom or {}, billable,
            T + timedelta(minutes=offset), TOPIC, 0, offset]  # fmt: skip


def usage_line(eid: str, meter: str, qty: int, tier: int = 0, *, tenant: str = "acme",
               offset: int = 0) -> list[Any]:  # fmt: skip
    return [f"{eid}/{meter}/{tier}", "usage", eid, tenant, "r1", "llm", "wf", "m", "p", meter,
            qty, 0, 0, "book", 1, "graduated", tier, "2026-11",
            datetime(2026, 11, 1, tzinfo=UTC), T + timedelta(minutes=offset)]  # fmt: skip


@pytest.fixture
def known(ch: Any) -> Any:
    """acme: e0 (input 100 over two tiers, output 10), e1 (gpu 5, custom pages 2),
    e2 not billable (no lines); umbrella e3 refused by pricing (its dead letter at the
    event's position); a malformed record at offset 4 (an ingest dead letter); and
    the worker's tallies and progress for offsets 0..5 (offset 5 a duplicate of e0)."""
    ch.insert("usage_events", [
        event("e0", 0, inp=100, out=10),
        event("e1", 1, gpu=5, custom={"pages": 2}),
        event("e2", 2, inp=7, billable=False),
        event("e3", 3, tenant="umbrella", inp=50),
    ], column_names=EVENT_COLS)  # fmt: skip
    ch.insert("priced_lines", [
        usage_line("e0", "input_tokens", 60, 0), usage_line("e0", "input_tokens", 40, 1),
        usage_line("e0", "output_tokens", 10), usage_line("e1", "gpu_ms", 5, offset=1),
        usage_line("e1", "custom:pages", 2, offset=1),
    ], column_names=LINE_COLS)  # fmt: skip
    ch.insert("dead_letters", [
        [TOPIC, 0, 3, "unknown_tenant", "no plan", "umbrella", "", ""],
        [TOPIC, 0, 4, "malformed", "not avro", "", "", "xx"],
    ], column_names=DEAD_COLS)  # fmt: skip
    rows = [*tally_rows("g", {(TOPIC, 0): Tally(first=0, last=3, records=4, events=4)}),
            *tally_rows("g", {(TOPIC, 0): Tally(first=4, last=5, records=2, dead_letters=1,
                                                duplicates=1)}),
            *progress_rows("g", {(TOPIC, 0): (4, 5)})]  # fmt: skip
    ch.insert("worker_state", rows, column_names=list(STATE_COLUMNS))
    return ch


def billed(client: Any, tenant: str = "") -> list[reconcile.Result]:
    q, cov, refused = facts.billed_facts(client, tenant=tenant, start=EPOCH, end=FAR)
    return reconcile.billed_checks(q, cov, refused=refused)


def test_stored_equals_billed_on_the_known_store(known: Any) -> None:
    q, cov, refused = facts.billed_facts(known, tenant="", start=EPOCH, end=FAR)
    assert sorted((m.tenant, m.window_id, m.meter, m.stored, m.billed) for m in q) == [
        ("acme", "2026-11", "custom:pages", 2, 2),
        ("acme", "2026-11", "gpu_ms", 5, 5),
        ("acme", "2026-11", "input_tokens", 100, 100),
        ("acme", "2026-11", "output_tokens", 10, 10),
    ]
    assert [(c.tenant, c.events, c.unbilled) for c in cov] == [("acme", 2, 0)]
    assert refused == {"umbrella": 1}
    out = reconcile.billed_checks(q, cov, refused=refused)
    assert [(c.scope, c.ok) for c in out] == [("acme all history", True),
                                              ("umbrella all history", True)]  # fmt: skip


def test_a_missing_priced_line_is_bad(known: Any) -> None:
    known.insert("usage_events", [event("e9", 9, inp=3)], column_names=EVENT_COLS)
    bad = [c for c in billed(known) if not c.ok]
    assert [c.scope for c in bad] == ["acme all history", "acme window (no lines) input_tokens"]
    assert "1 of 3 without (e.g. e9)" in str(bad[0].actual)
    assert (bad[1].expected, bad[1].actual) == (3, 0)
    # the period filter: e9 lies outside the first minute, e0 inside
    _, cov, _ = facts.billed_facts(known, tenant="acme", start=T, end=T + timedelta(minutes=1))
    assert [(c.events, c.unbilled) for c in cov] == [(1, 0)]


def test_a_quantity_mismatch_is_bad(known: Any) -> None:
    # the same line re-stored with another quantity: FINAL keeps the newer one
    known.insert("priced_lines", [usage_line("e0", "output_tokens", 9)], column_names=LINE_COLS)
    bad = [c for c in billed(known, "acme") if not c.ok]
    assert [(c.scope, c.expected, c.actual) for c in bad] == [
        ("acme window 2026-11 output_tokens", 10, 9)
    ]


def test_emitted_equals_stored_counts_and_a_deleted_event(known: Any) -> None:
    views = facts.partition_views(known, group="g", topic=TOPIC, offsets={0: (0, 6)})
    assert [(v.applied, [(t.first, t.last) for t in v.tallies]) for v in views] == [
        (5, [(0, 3), (4, 5)])
    ]
    r, notes = reconcile.checked_range(views[0])
    assert r is not None and notes == []
    stored, dead = facts.stored_counts(known, TOPIC, [r])
    assert (stored, dead) == ({0: 4}, {0: 1})  # the pricing dead letter is not ingest's
    out = reconcile.emitted_checks([r], stored=stored, dead_stored=dead, dead_topic=None,
                                   topic=TOPIC)  # fmt: skip
    assert all(c.ok for c in out), out
    known.command("DELETE FROM usage_events WHERE event_id = 'e1'")
    stored, dead = facts.stored_counts(known, TOPIC, [r])
    out = reconcile.emitted_checks([r], stored=stored, dead_stored=dead, dead_topic=None,
                                   topic=TOPIC)  # fmt: skip
    assert [(c.what, c.expected, c.actual) for c in out if not c.ok] == [
        ("stored events = usage_events FINAL at those offsets", 4, 3)
    ]
    assert facts.groups_with_progress(known, TOPIC) == ["g"]
    # the analysts' view of the same rows (migration 080)
    sums = (
        "SELECT sum(records), sum(events), sum(duplicates), sum(dead_letters) FROM ingest_tallies"
    )
    assert known.query(sums).result_rows == [(6, 4, 1, 1)]


# --- retention of the audit trail -----------------------------------------------------

_UNIT_DAYS = {"Day": 1, "Week": 7, "Month": 28, "Quarter": 89, "Year": 365}


def ttl_clauses(engine_full: str) -> list[tuple[int, str]]:
    """(days, WHERE condition or '') of each TTL clause in an engine_full text (months
    counted at their shortest)."""
    m = re.search(r"\bTTL (.*?)(?: SETTINGS |$)", engine_full)
    if m is None:
        return []
    out = []
    for clause in re.split(r",\s*(?=toDateTime|\w+\s*\+)", m.group(1)):
        n = re.search(r"toInterval(Day|Week|Month|Quarter|Year)\((\d+)\)", clause)
        assert n is not None, clause
        where = clause.split(" WHERE ", 1)[1] if " WHERE " in clause else ""
        out.append((int(n.group(2)) * _UNIT_DAYS[n.group(1)], where))
    return out


def test_raw_usage_priced_lines_tallies_and_dlq_are_kept_90_days(ch: Any) -> None:
    engines = dict(ch.query(
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name IN ('usage_events', 'priced_lines', 'dead_letters', 'worker_state')"
    ).result_rows)  # fmt: skip
    for table in ("usage_events", "dead_letters"):
        clauses = ttl_clauses(engines[table])
        assert clauses and all(days >= 90 for days, _ in clauses), (table, clauses)
    # priced_lines: no TTL at all (kept until deleted): the money of record
    assert "TTL" not in engines["priced_lines"]
    tally = [d for d, where in ttl_clauses(engines["worker_state"]) if f"'{TALLY}'" in where]
    assert len(tally) == 1 and tally[0] >= 90, engines["worker_state"]
    dlq_ms = int(Topics(prefix="").all()[Topics(prefix="").dlq]["retention.ms"])
    assert dlq_ms >= 90 * 24 * 3600 * 1000
    assert ttl_clauses("X TTL toDateTime(t) + toIntervalMonth(2) SETTINGS y") == [(56, "")]
