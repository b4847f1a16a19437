"""Rebuild rollup tables from their base tables.

The rollups (cost_hourly, cost_minutely, tenant_spend_daily, request_node_costs,
request_costs_by_start, usage_hourly) are
fed by materialized views when rows are inserted into priced_lines / usage_events;
they never see history from before they existed, and a fixed bug in a view does not
fix rows already written. :func:`rebuild` recomputes a rollup from scratch:

1. read the view's own SELECT from ``system.tables`` (one definition, in the
   migration; nothing duplicated here),
2. ``TRUNCATE`` the rollup,
3. run ``INSERT INTO rollup <the view's SELECT>`` once per partition (month) of the
   base table, with ``final = 1`` so duplicates collapsed by ReplacingMergeTree are
   counted once even before merges, reporting progress after each partition.

Stop the worker (or pause its sink) while rebuilding: an insert landing during the
rebuild may be counted twice or not at all. With embedded chDB the CLI owns the
store path anyway, so the worker cannot be running on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nodemeter_stream.analytics.errors import RebuildError
from nodemeter_stream.analytics.progress import Progress, no_progress


@dataclass(frozen=True)
class Rollup:
    table: str  # the rollup (target of the view)
    view: str  # the materialized view that feeds it on insert
    source: str  # the base table the view reads


ROLLUPS: tuple[Rollup, ...] = (
    Rollup("cost_hourly", "cost_hourly_mv", "priced_lines"),
    Rollup("cost_minutely", "cost_minutely_mv", "priced_lines"),
    Rollup("tenant_spend_daily", "tenant_spend_daily_mv", "priced_lines"),
    Rollup("request_node_costs", "request_node_costs_mv", "priced_lines"),
    Rollup("request_costs_by_start", "request_costs_by_start_mv", "priced_lines"),
    Rollup("usage_hourly", "usage_hourly_mv", "usage_events"),
)

# Views on the base tables that feed an index, not a rollup: no money or usage is summed
# in them, so reconcile and rebuild leave them alone (the worker's dedupe index, one row
# per stored event, sql/migrations/040_worker_state.sql).
INDEXES: tuple[Rollup, ...] = (Rollup("event_index", "event_index_mv", "usage_events"),)


@dataclass(frozen=True)
class RebuildResult:
    table: str
    partitions: int
    source_rows: int  # rows read from the base table (before FINAL collapses duplicates)
    rows: int  # rows in the rollup afterwards


def rollup(name: str) -> Rollup:
    for r in ROLLUPS:
        if r.table == name:
            return r
    raise RebuildError(f"{name!r} is not a rollup; rollups: {', '.join(r.table for r in ROLLUPS)}")


def insert_statement(r: Rollup, *, database: str, view_select: str) -> str:
    """The INSERT a rebuild runs per partition (pinned by golden tests)."""
    return f"INSERT INTO {database}.{r.table} {view_select}"


def partition_settings(r: Rollup, *, database: str, partition: str) -> dict[str, Any]:
    """Query settings that restrict the view's SELECT to one base-table partition."""
    if not partition.isalnum():
        raise RebuildError(f"unexpected partition id {partition!r}")
    return {
        # FINAL on every ReplacingMergeTree read: a duplicate line counts once
        "final": 1,
        # read one partition of the base table without editing the view's SQL text
        "additional_table_filters": f"{{'{database}.{r.source}': '_partition_id = ''{partition}'''}}",
        # rebuilding twice inserts identical blocks: they must not be dropped as retries
        "insert_deduplicate": 0,
    }


def view_select(client: Any, r: Rollup) -> str:
    rows = client.query(
        "SELECT as_select FROM system.tables WHERE database = currentDatabase() AND name = {v:String}",
        parameters={"v": r.view},
    ).result_rows
    if not rows or not rows[0][0]:
        raise RebuildError(f"materialized view {r.view} not found: run `nodemeter migrate` first")
    return str(rows[0][0])


def rebuild(
    client: Any,
    tables: Sequence[str] | None = None,
    *,
    progress: Progress = no_progress,
) -> list[RebuildResult]:
    """Rebuild the named rollups (all by default) from their base tables."""
    targets = [rollup(t) for t in tables] if tables else list(ROLLUPS)
    database = str(client.query("SELECT currentDatabase()").result_rows[0][0])
    results = []
    for r in targets:
        select = view_select(client, r)
        parts = client.query(
            f"SELECT _partition_id, count() FROM {r.source} GROUP BY _partition_id ORDER BY _partition_id"
        ).result_rows
        try:
            client.command(f"TRUNCATE TABLE {r.table}")
            read = 0
            progress(f"rebuild {r.table}", 0, len(parts), f"from {r.source}")
            for i, (partition, count) in enumerate(parts, start=1):
                settings = partition_settings(r, database=database, partition=str(partition))
                client.command(
                    insert_statement(r, database=database, view_select=select),
                    settings=settings,
                )
                read += int(count)
                progress(
                    f"rebuild {r.table}", i, len(parts), f"partition {partition}: {count:,} rows"
                )
        except RebuildError:
            raise
        except Exception as exc:
            raise RebuildError(f"rebuilding {r.table} failed: {exc}") from exc
        rows = int(client.query(f"SELECT count() FROM {r.table}").result_rows[0][0])
        results.append(RebuildResult(r.table, len(parts), read, rows))
    return results
