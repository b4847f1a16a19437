"""Rebuild SQL (golden) and the rollup registry against the migrations (pure)."""

from __future__ import annotations

import re

import pytest

from nodemeter_stream.analytics.errors import RebuildError
from nodemeter_stream.analytics.rebuild import (
    INDEXES,
    ROLLUPS,
    Rollup,
    insert_statement,
    partition_settings,
    rollup,
)
from nodemeter_stream.sink.migrate import discover

R = Rollup("cost_hourly", "cost_hourly_mv", "priced_lines")


def test_insert_statement_golden() -> None:
    select = "SELECT tenant, sum(amount) AS amount FROM nm.priced_lines GROUP BY tenant"
    assert insert_statement(R, database="nm", view_select=select) == (
        "INSERT INTO nm.cost_hourly SELECT tenant, sum(amount) AS amount "
        "FROM nm.priced_lines GROUP BY tenant"
    )


def test_partition_settings_golden() -> None:
    assert partition_settings(R, database="nm", partition="202611") == {
        "final": 1,
        "additional_table_filters": "{'nm.priced_lines': '_partition_id = ''202611'''}",
        "insert_deduplicate": 0,
    }


def test_partition_ids_are_checked() -> None:
    with pytest.raises(RebuildError):
        partition_settings(R, database="nm", partition="2026'; DROP")


def test_every_rollup_is_created_by_a_migration_with_its_view() -> None:
    text = "\n".join(m.text for m in discover())
    for r in (*ROLLUPS, *INDEXES):
        assert re.search(rf"CREATE (TABLE IF NOT EXISTS|OR REPLACE TABLE) {r.table}\b", text), (
            r.table
        )
        view = re.search(
            rf"CREATE MATERIALIZED VIEW IF NOT EXISTS {r.view} TO {r.table} AS(.*?);", text, re.S
        )
        assert view, r.view
        assert re.search(rf"FROM {r.source}\b", view.group(1)), r.view


def test_every_materialized_view_in_the_migrations_is_rebuildable() -> None:
    text = "\n".join(m.text for m in discover())
    views = set(re.findall(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)", text))
    mine = {r.view for r in (*ROLLUPS, *INDEXES)}
    # views of other workstreams may exist; every view on priced_lines/usage_events is ours
    for v in views - mine:
        body = re.search(rf"VIEW IF NOT EXISTS {v}\b(.*?);", text, re.S)
        assert body and not re.search(r"FROM (priced_lines|usage_events)\b", body.group(1)), v


def test_rollup_lookup() -> None:
    assert rollup("usage_hourly").source == "usage_events"
    with pytest.raises(RebuildError, match="not a rollup"):
        rollup("priced_lines")
