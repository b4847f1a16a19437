"""Priced lines, alerts and price books in the real ClickHouse engine: exact Decimal sums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from nodemeter.events import GpuSource, Meters, UsageEvent
from nodemeter_stream.pricing import PRICED_LINE_COLUMNS, PricingEngine, load_config, new_state
from nodemeter_stream.pricing.book import EXAMPLES_DIR as EXAMPLES
from nodemeter_stream.pricing.money import present
from nodemeter_stream.pricing.records import (
    BUDGET_ALERT_COLUMNS,
    PRICE_BOOK_COLUMNS,
    alert_row,
    price_book_rows,
)

pytestmark = pytest.mark.clickhouse
T0 = datetime(2026, 11, 3, 15, tzinfo=UTC)


def month_of_usage(tenant: str, n: int) -> list[UsageEvent]:
    out = []
    for i in range(n):
        ev = UsageEvent(
            event_id=f"{tenant}-{i}",
            tenant=tenant,
            request_id=f"r{i}",
            node_id="llm",
            span_id=f"s{i}",
            event_time=T0 + timedelta(hours=7 * i),
            model="gpt-4o",
            workflow="support" if i % 3 == 0 else "search",
            meters=Meters(
                input_tokens=1_000 + 37 * i,
                output_tokens=150_000 + 11 * i,
                cached_input_tokens=500 * (i % 4),
                gpu_ms=900_000 + i,
                gpu_type="H100",
                gpu_source=GpuSource.MEASURED,
                api_calls=120 + i,
                custom={"pages": 90 + i},
            ),
        )
        out.append(ev)
    return out


def test_lines_sum_exactly_in_clickhouse(ch: Any) -> None:
    engine = PricingEngine(load_config(EXAMPLES))
    lines, alerts = [], []
    for tenant in ("acme", "initech"):
        state = new_state(tenant)
        seen: dict[str, Any] = {}
        for ev in month_of_usage(tenant, 90):
            out = engine.process(state, seen, ev)
            lines += out.lines
            alerts += out.alerts
        close = engine.close_all(state)
        lines += close.lines
        alerts += close.alerts
    ch.insert("priced_lines", [ln.row() for ln in lines], column_names=list(PRICED_LINE_COLUMNS))
    # a retried insert of the same lines (a replayed batch) changes nothing under FINAL
    ch.insert(
        "priced_lines", [ln.row() for ln in lines[:50]], column_names=list(PRICED_LINE_COLUMNS)
    )
    ch.insert(
        "budget_alerts", [alert_row(a) for a in alerts], column_names=list(BUDGET_ALERT_COLUMNS)
    )
    ch.insert(
        "price_book_rates", price_book_rows(engine.config), column_names=list(PRICE_BOOK_COLUMNS)
    )

    rows = ch.query(
        "SELECT tenant, window_id, sum(amount), count() FROM priced_lines FINAL GROUP BY tenant, window_id ORDER BY tenant, window_id"
    ).result_rows
    expected: dict[tuple[str, str], Decimal] = {}
    for ln in lines:
        expected[(ln.tenant, ln.window_id)] = (
            expected.get((ln.tenant, ln.window_id), Decimal(0)) + ln.amount
        )
    assert {(t, w): s for t, w, s, _ in rows} == expected
    assert sum(c for *_, c in rows) == len(lines)
    assert all(isinstance(s, Decimal) for _, _, s, _ in rows)
    # savings column present and exact
    saved = ch.query("SELECT sum(cache_savings) FROM priced_lines FINAL").result_rows[0][0]
    assert saved == sum((ln.cache_savings for ln in lines), Decimal(0)) and saved > 0
    # invoice presentation rounds once
    total = ch.query(
        "SELECT sum(amount) FROM priced_lines FINAL WHERE tenant = 'acme'"
    ).result_rows[0][0]
    assert present(total) == present(
        sum((ln.amount for ln in lines if ln.tenant == "acme"), Decimal(0))
    )

    got = ch.query(
        "SELECT tenant, budget, window_id, threshold_pct, level FROM budget_alerts FINAL ORDER BY tenant, budget, window_id, threshold_pct"
    ).result_rows
    want = sorted((a.tenant, a.budget, a.window_id, a.threshold_percent) for a in alerts)
    assert [tuple(r[:4]) for r in got] == want
    assert len(want) == len({a.alert_id for a in alerts}) > 0
    n = ch.query(
        "SELECT count() FROM price_book_rates WHERE price_book = 'acme-enterprise'"
    ).result_rows[0][0]
    assert n == 3 + 3 + 1  # output tiers, H100 tiers, api_calls flat
