"""ClickHouse through clickhouse-connect (chDB by default): migrations and exact round trips."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from nodemeter_stream.ingest.rows import USAGE_EVENT_COLUMNS, usage_event_row
from nodemeter_stream.pricing.lines import PRICED_LINE_COLUMNS
from nodemeter_stream.sink.migrate import applied, discover, migrate
from nodemeter_stream.smoke import sample_events

pytestmark = pytest.mark.clickhouse


def test_migrations_are_recorded_and_idempotent(ch: Any) -> None:
    assert set(applied(ch)) == {m.version for m in discover()}
    assert migrate(ch, verbose=False) == []
    tables = {r[0] for r in ch.query("SHOW TABLES").result_rows}
    assert {"usage_events", "dead_letters", "priced_lines", "schema_migrations"} <= tables


def test_usage_events_round_trip_exactly(ch: Any) -> None:
    events = sample_events(8, tenant="t-ch")
    rows = [usage_event_row(ev, topic="x", partition=1, offset=i) for i, ev in enumerate(events)]
    ch.insert("usage_events", rows, column_names=list(USAGE_EVENT_COLUMNS))
    got = ch.query(
        "SELECT event_id, node_id, input_tokens, output_tokens, gpu_ms, cpu_ms, event_time "
        "FROM usage_events FINAL ORDER BY source_offset"
    ).result_rows
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in got] == [
        (
            e.event_id,
            e.node_id,
            e.meters.input_tokens,
            e.meters.output_tokens,
            e.meters.gpu_ms,
            e.meters.cpu_ms,
        )
        for e in events
    ]
    # microsecond-exact; clickhouse-connect returns UTC columns as naive datetimes
    assert [r[6].replace(tzinfo=UTC) for r in got] == [e.event_time for e in events]


def test_insert_deduplication_token_makes_a_retried_block_a_no_op(ch: Any) -> None:
    events = sample_events(5, tenant="t-dedupe")
    rows = [usage_event_row(ev) for ev in events]
    for _ in range(3):  # a sink retrying the same block after a timeout
        ch.insert(
            "usage_events",
            rows,
            column_names=list(USAGE_EVENT_COLUMNS),
            settings={"insert_deduplication_token": "usage:p0:0-4"},
        )
    assert ch.query("SELECT count() FROM usage_events").result_rows[0][0] == 5


def test_decimal_money_is_exact(ch: Any) -> None:
    amounts = [
        Decimal("0.000000150000"),
        Decimal("1234567.123456789012"),
        Decimal("0.1"),
        Decimal("0.2"),
    ]
    base = {
        "line_kind": "usage", "event_id": "e", "tenant": "t", "request_id": "r", "node_id": "n",
        "workflow": "w", "model": "m", "provider": "p", "meter": "input_tokens", "gpu_type": "",
        "quantity": Decimal(1), "currency": "USD", "price_book": "default",
        "price_book_version": 1, "charge_model": "flat", "tier": 0, "window_id": "2026-11",
        "window_start": datetime(2026, 11, 1, tzinfo=UTC),
        "event_time": datetime(2026, 11, 2, tzinfo=UTC), "cache_savings": Decimal(0),
        "rate_match": "exact", "input_list_cost": Decimal(0),
    }  # fmt: skip
    rows = [
        [{**base, "line_id": f"l{i}", "unit_price": a, "amount": a}[c] for c in PRICED_LINE_COLUMNS]
        for i, a in enumerate(amounts)
    ]
    ch.insert("priced_lines", rows, column_names=list(PRICED_LINE_COLUMNS))
    total = ch.query("SELECT sum(amount) FROM priced_lines").result_rows[0][0]
    assert total == sum(amounts) == Decimal("1234567.423456939012")
