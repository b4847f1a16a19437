"""A batch cut off inside its insert, applied again (real ClickHouse engine: chDB or a
server).

A SIGKILL can land while ClickHouse writes an insert: the block's part in
``priced_lines`` is committed, the parts of the views fed from it are not (found by
``make torture``: reconcile saw 174 lines in ``priced_lines`` that no rollup counted).
The same state is made here by detaching the views for the first insert. Sent again
under the same insert token with the same rows (what a batch in doubt re-formed whole
does, ``Gate.admit``), the base table drops the block as a duplicate and every view,
deduplicating on its own, takes the rows it missed: each table then holds one copy. A
re-send that drops the rows found stored (what the worker did before) leaves the views
short for good.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from nodemeter.codec import encode_record
from nodemeter.events import Meters, UsageEvent
from nodemeter_stream.pricing import PricingEngine, load_config
from nodemeter_stream.pricing.batch import Item, price_batch
from nodemeter_stream.pricing.book import EXAMPLES_DIR
from nodemeter_stream.pricing.lines import PRICED_LINE_COLUMNS
from nodemeter_stream.sink.clickhouse import INSERT_SETTINGS

pytestmark = pytest.mark.clickhouse

T0 = datetime(2026, 11, 3, 9, tzinfo=UTC)
TOKEN = "priced_lines:nodemeter.usage-by-tenant.v1:0:0-39"


def lines() -> list[Any]:
    engine = PricingEngine(load_config(EXAMPLES_DIR), keep_lines=False)
    items = []
    for i in range(40):
        ev = UsageEvent(
            event_id=f"e{i}", tenant="globex", request_id=f"r{i // 4}", node_id="llm",
            span_id=f"s{i}", event_time=T0 + timedelta(minutes=3 * i), workflow="support",
            model="gpt-4o", meters=Meters(input_tokens=1000 + i, output_tokens=200),
        )  # fmt: skip
        items.append(Item("nodemeter.usage-by-tenant.v1", 0, i, b"globex", encode_record(ev)))
    res = price_batch(engine, items, get_state=lambda t: None)
    assert res.lines and not res.rejected
    return res.lines


def views_of(ch: Any, table: str) -> list[str]:
    ((deps,),) = ch.query(
        "SELECT dependencies_table FROM system.tables "
        "WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": table},
    ).result_rows
    return sorted(deps)


def insert(ch: Any, rows: list[Any]) -> None:
    if rows:
        ch.insert("priced_lines", [list(r) for r in rows], column_names=list(PRICED_LINE_COLUMNS),
                  settings={**INSERT_SETTINGS, "insert_deduplication_token": TOKEN})  # fmt: skip


def totals(ch: Any) -> dict[str, Decimal]:
    q = {
        "priced_lines": "SELECT sum(amount) FROM priced_lines",  # no FINAL: copies count
        "cost_hourly": "SELECT sum(amount) FROM cost_hourly",
        "cost_minutely": "SELECT sum(amount) FROM cost_minutely",
        "tenant_spend_daily": "SELECT sum(amount) FROM tenant_spend_daily",
        "request_node_costs": "SELECT sum(amount) FROM request_node_costs",
    }
    return {k: Decimal(str(ch.query(sql).result_rows[0][0])) for k, sql in q.items()}


def cut_off_first_insert(ch: Any, rows: list[Any]) -> list[str]:
    """The first attempt: the base part committed, no view's part (views detached)."""
    views = views_of(ch, "priced_lines")
    assert len(views) >= 4, views
    for v in views:
        ch.command(f"DETACH TABLE {v}")
    try:
        insert(ch, rows)
    finally:
        for v in views:
            ch.command(f"ATTACH TABLE {v}")
    return views


def test_the_same_block_again_fills_the_views_a_cut_off_insert_missed(ch: Any) -> None:
    got = lines()
    rows = [ln.row() for ln in got]
    want = sum((ln.amount for ln in got), Decimal(0))
    assert want > 0
    cut_off_first_insert(ch, rows)
    before = totals(ch)
    assert before["priced_lines"] == want and before["cost_hourly"] == 0
    insert(ch, rows)  # the batch re-formed whole: same token, same rows
    after = totals(ch)
    assert after == dict.fromkeys(after, want), after
    insert(ch, rows)  # and once more: nothing changes anywhere
    assert totals(ch) == after


def test_dropping_what_is_stored_leaves_the_views_short(ch: Any) -> None:
    got = lines()
    rows = [ln.row() for ln in got]
    cut_off_first_insert(ch, rows)
    # the old re-application: every line is found in priced_lines, so nothing is sent
    stored = {r[0] for r in ch.query("SELECT line_id FROM priced_lines").result_rows}
    insert(ch, [r for r, ln in zip(rows, got, strict=True) if ln.line_id not in stored])
    assert totals(ch)["cost_hourly"] == 0
