"""Rollups: fed on insert, rebuilt from the base tables, reconciled to the unit (chDB)."""

from __future__ import annotations

import io
from decimal import Decimal as D
from typing import Any

import pytest
from analytics_data import (
    insert_events,
    insert_lines,
    known_events,
    known_lines,
    line,
    load_known,
    t,
)

from nodemeter_stream.analytics import queries
from nodemeter_stream.analytics.errors import RebuildError
from nodemeter_stream.analytics.progress import StderrProgress
from nodemeter_stream.analytics.rebuild import ROLLUPS, rebuild
from nodemeter_stream.analytics.reconcile import run_checks, summary

pytestmark = pytest.mark.clickhouse

SNAPSHOTS = {
    "cost_hourly": "SELECT hour, tenant, workflow, node_id, model, meter, currency, line_kind, "
    "sum(quantity), sum(amount), sum(lines) FROM cost_hourly GROUP BY ALL ORDER BY ALL",
    "cost_minutely": "SELECT minute, tenant, workflow, node_id, model, meter, currency, "
    "line_kind, price_book, price_book_version, sum(quantity), sum(amount), sum(cache_savings), "
    "sum(input_list_cost), sum(lines), min(first_event), max(last_event) FROM cost_minutely "
    "GROUP BY ALL ORDER BY ALL",
    "tenant_spend_daily": "SELECT day, tenant, currency, line_kind, sum(amount), sum(lines) "
    "FROM tenant_spend_daily GROUP BY ALL ORDER BY ALL",
    "request_node_costs": "SELECT tenant, request_id, node_id, currency, max(workflow), "
    "sum(amount), sum(lines), min(first_event), max(last_event) FROM request_node_costs "
    "GROUP BY tenant, request_id, node_id, currency ORDER BY ALL",
    "request_costs_by_start": "SELECT tenant, start_hour, request_id, currency, sum(amount), "
    "sum(lines), min(first_event) FROM request_costs_by_start GROUP BY ALL ORDER BY ALL",
    "usage_hourly": "SELECT hour, tenant, node_id, gpu_source, billable, sum(events), "
    "sum(gpu_ms), sum(input_tokens) FROM usage_hourly GROUP BY ALL ORDER BY ALL",
}


def snapshot(ch: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {name: ch.query(sql).result_rows for name, sql in SNAPSHOTS.items()}


def mismatches(ch: Any) -> list[dict[str, Any]]:
    return [r for r in queries.run(ch, "reconcile").dicts() if not r["ok"]]


def test_snapshots_cover_every_rollup() -> None:
    assert set(SNAPSHOTS) == {r.table for r in ROLLUPS}


def test_rebuild_gives_the_same_rollups_as_the_views(ch: Any) -> None:
    load_known(ch)
    fed_on_insert = snapshot(ch)
    assert all(fed_on_insert.values())
    out = io.StringIO()
    results = rebuild(ch, progress=StderrProgress(out, clock=iter(range(1000)).__next__))
    assert snapshot(ch) == fed_on_insert
    assert mismatches(ch) == []
    by_table = {r.table: r for r in results}
    # priced lines span 2 months (Oct, Nov); 12 lines read; usage events 10
    assert (by_table["cost_hourly"].partitions, by_table["cost_hourly"].source_rows) == (2, 12)
    assert by_table["usage_hourly"].source_rows == 10
    log = out.getvalue()
    assert "[rebuild cost_hourly] 2/2 partition 202611: 11 rows" in log
    assert log.count("\n") == len(ROLLUPS) * 3  # start line + one per partition, per rollup


def test_rebuild_twice_is_idempotent(ch: Any) -> None:
    load_known(ch)
    rebuild(ch)
    first = snapshot(ch)
    rebuild(ch)
    assert snapshot(ch) == first


def test_rebuild_covers_history_from_before_the_rollup_was_filled(ch: Any) -> None:
    load_known(ch)
    for r in ROLLUPS:  # as if the rollups were created after the data arrived
        ch.command(f"TRUNCATE TABLE {r.table}")
    assert {m["check"] for m in mismatches(ch)} >= {"amount: priced_lines = cost_hourly"}
    rebuild(ch)
    assert mismatches(ch) == []
    total = ch.query("SELECT sum(amount) FROM cost_hourly WHERE tenant = 'acme'").result_rows
    assert total == [(D("0.342125"),)]


def test_duplicate_line_is_flagged_by_reconcile_and_fixed_by_rebuild(ch: Any) -> None:
    load_known(ch)
    # the r1 GPU line priced again later (same line_id, a new block): priced_lines
    # collapses it (ReplacingMergeTree, read with FINAL), the views counted it twice
    dup = [r for r in known_lines() if r[5] == "gpu.rerank" and r[4] == "r1"]
    extra = line(
        request_id="r3", node_id="n", meter="api_calls", quantity=1, unit_price="0.5", at=t(4, 9)
    )
    insert_lines(ch, [*dup, extra])
    bad = mismatches(ch)
    assert {(m["tenant"], m["check"]) for m in bad} == {
        ("acme", "amount: priced_lines = cost_hourly"),
        ("acme", "amount: priced_lines = cost_minutely"),
        ("acme", "amount: priced_lines = tenant_spend_daily"),
        ("acme", "amount: priced_lines = request_node_costs"),
        ("acme", "amount: priced_lines with a request = request_costs_by_start"),
        ("acme", "lines: priced_lines = cost_hourly"),
        ("acme", "lines: priced_lines = cost_minutely"),
    }
    assert {m["actual"] - m["expected"] for m in bad} == {D("0.025"), D(1)}
    text = summary(run_checks(ch))
    assert "MISMATCH acme USD amount: priced_lines = cost_hourly: expected 0.8421" in text
    assert text.endswith("7 mismatch(es): run `nodemeter rebuild`")
    rebuild(
        ch,
        [
            "cost_hourly",
            "cost_minutely",
            "tenant_spend_daily",
            "request_node_costs",
            "request_costs_by_start",
        ],
    )
    assert mismatches(ch) == []


def test_duplicate_event_is_fixed_by_rebuild(ch: Any) -> None:
    load_known(ch)
    insert_events(ch, [r for r in known_events() if r[0] == "e1"])
    assert [m["check"] for m in mismatches(ch)] == ["events: usage_events = usage_hourly"]
    rebuild(ch, ["usage_hourly"])
    assert mismatches(ch) == []


def test_retried_insert_is_a_no_op_in_the_rollups(ch: Any) -> None:
    """The sink retries a block with the same insert_deduplication_token: the views must
    not count it again. The rollup tables carry a deduplication window, so with
    deduplicate_blocks_in_dependent_materialized_views (on by default since ClickHouse
    24.x; set it on older servers) the retried block is dropped there too."""
    rows = [
        line(
            request_id="rx",
            node_id="n",
            meter="api_calls",
            quantity=3,
            unit_price="0.5",
            at=t(5, 8),
        )
    ]
    for _ in range(3):
        insert_lines(ch, rows, insert_deduplication_token="lines:p0:0-0")
    assert ch.query("SELECT count() FROM priced_lines").result_rows == [(1,)]
    assert mismatches(ch) == []
    for table in (
        "cost_hourly",
        "cost_minutely",
        "tenant_spend_daily",
        "request_node_costs",
        "request_costs_by_start",
    ):
        assert ch.query(f"SELECT sum(amount) FROM {table}").result_rows == [(D("1.5"),)]


def test_a_different_block_with_identical_rollup_rows_is_counted(ch: Any) -> None:
    # two distinct lines that roll up to identical rows must not be taken for a retry
    for i in range(2):
        row = line(
            request_id="r",
            node_id="n",
            meter="api_calls",
            quantity=1,
            unit_price="1",
            at=t(5, 8),
            line_id=f"L{i}",
        )
        insert_lines(ch, [row])
    assert ch.query("SELECT sum(amount), sum(lines) FROM cost_hourly").result_rows == [(D(2), 2)]
    assert mismatches(ch) == []


def test_rebuild_of_an_unknown_table_is_a_clear_error(ch: Any) -> None:
    with pytest.raises(RebuildError, match="not a rollup"):
        rebuild(ch, ["priced_lines"])


def test_rebuild_of_empty_base_tables(ch: Any) -> None:
    results = rebuild(ch)
    assert [(r.partitions, r.rows) for r in results] == [(0, 0)] * len(ROLLUPS)
