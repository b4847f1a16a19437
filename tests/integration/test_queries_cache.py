"""cache_savings and cache_savings_by_node on chDB: the worked example of docs/analytics.md
("Cache savings"), priced by the real engine with the shipped default book, stored,
rolled up, and read back for whole-hour and off-the-hour periods.

claude-sonnet-4 in the default book: input 0.000003, cache read 0.0000003, cache write
0.00000375 USD per token. Tenant "umbrella" (not listed: default plan, UTC), 5 Nov 2026:

  r1 10:15 llm.draft   cache_write_tokens 1,000,000  cost 3.75, as input 3.00, premium 0.75
  r2 10:45 llm.draft   cached_input_tokens 1,000,000 cost 0.30, as input 3.00, saved 2.70
  r3 11:20 llm.draft   cached_input_tokens 1,000,000 cost 0.30, as input 3.00, saved 2.70
  r4 12:05 llm.review  cache_write_tokens 2,000,000  cost 7.50, as input 6.00, premium 1.50

  llm.draft   net = 5.40 - 0.75 =  4.65
  llm.review  net = 0.00 - 1.50 = -1.50
  model total net = 5.40 - 2.25 =  3.15   (the old formula, 5.40 - 11.25, said -5.85)
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest

from nodemeter.events import Meters, UsageEvent
from nodemeter_stream.analytics import queries
from nodemeter_stream.pricing import PRICED_LINE_COLUMNS, PricingEngine, load_config, new_state
from nodemeter_stream.pricing.book import EXAMPLES_DIR

pytestmark = pytest.mark.clickhouse

TENANT, MODEL = "umbrella", "claude-sonnet-4"
NOV, DEC = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def at(hour: int, minute: int) -> datetime:
    return datetime(2026, 11, 5, hour, minute, tzinfo=UTC)


def load_example(ch: Any) -> None:
    """Price the four events of the example and store their lines (as the worker does)."""
    engine = PricingEngine(load_config(EXAMPLES_DIR))
    state: dict[str, Any] = new_state(TENANT)
    usage = [
        ("r1", "llm.draft", at(10, 15), Meters(cache_write_tokens=1_000_000)),
        ("r2", "llm.draft", at(10, 45), Meters(cached_input_tokens=1_000_000)),
        ("r3", "llm.draft", at(11, 20), Meters(cached_input_tokens=1_000_000)),
        ("r4", "llm.review", at(12, 5), Meters(cache_write_tokens=2_000_000)),
    ]
    rows = []
    for req, node, when, meters in usage:
        ev = UsageEvent(event_id=f"ev-{req}", tenant=TENANT, request_id=req, node_id=node,
                        span_id="s", workflow="brief", event_time=when, model=MODEL,
                        provider="anthropic", meters=meters)  # fmt: skip
        rows += [ln.row() for ln in engine.process(state, {}, ev).lines]
    ch.insert("priced_lines", rows, column_names=list(PRICED_LINE_COLUMNS))


def test_cache_savings_worked_example(ch: Any) -> None:
    load_example(ch)
    month = queries.run(ch, "cache_savings", tenant=TENANT, start=NOV, end=DEC)
    # 5.40 saved on reads less the write premium 0.75 + 1.50; the formula before issue 11
    # took the whole write cost 11.25 off and said -5.85
    assert [r["net_savings"] for r in month.dicts()] == [D("3.15")]
    lines = ch.query(
        "SELECT request_id, meter, amount, cache_savings, input_list_cost FROM priced_lines "
        "FINAL WHERE tenant = 'umbrella' ORDER BY request_id"
    ).result_rows
    assert lines == [
        ("r1", "cache_write_tokens", D("3.75"), D(0), D("3")),
        ("r2", "cached_input_tokens", D("0.3"), D("2.7"), D(0)),
        ("r3", "cached_input_tokens", D("0.3"), D("2.7"), D(0)),
        ("r4", "cache_write_tokens", D("7.5"), D(0), D("6")),
    ]
    assert month.columns == (
        "model", "currency", "cached_tokens", "cached_cost", "uncached_cost",
        "cache_write_tokens", "cache_write_cost", "cache_write_premium", "net_savings",
    )  # fmt: skip
    assert month.rows == [
        (MODEL, "USD", D(2_000_000), D("0.6"), D("6"), D(3_000_000), D("11.25"), D("2.25"),
         D("3.15")),
    ]  # fmt: skip
    # 10:30-12:10: r2, r3 (10:45 from the lines, 11:xx from the rollup) and r4 (an edge)
    part = queries.run(ch, "cache_savings", tenant=TENANT, start=at(10, 30), end=at(12, 10))
    assert part.rows == [
        (MODEL, "USD", D(2_000_000), D("0.6"), D("6"), D(2_000_000), D("7.5"), D("1.5"),
         D("3.9")),
    ]  # fmt: skip


def test_cache_savings_by_node(ch: Any) -> None:
    load_example(ch)
    got = queries.run(ch, "cache_savings_by_node", tenant=TENANT, start=NOV, end=DEC)
    assert got.columns[:4] == ("workflow", "node_id", "model", "currency")
    assert got.rows == [
        ("brief", "llm.draft", MODEL, "USD", D(2_000_000), D("0.6"), D("6"), D(1_000_000),
         D("3.75"), D("0.75"), D("4.65")),
        ("brief", "llm.review", MODEL, "USD", D(0), D(0), D(0), D(2_000_000), D("7.5"),
         D("1.5"), D("-1.5")),
    ]  # fmt: skip
    # the nodes add up to the per-model answer, for any period
    for start, end in ((NOV, DEC), (at(10, 30), at(12, 10)), (at(10, 50), at(11, 30))):
        per_model = queries.run(ch, "cache_savings", tenant=TENANT, start=start, end=end).rows
        per_node = queries.run(ch, "cache_savings_by_node", tenant=TENANT, start=start, end=end)
        totals = [sum((r[i] for r in per_node.rows), D(0)) for i in range(4, 11)]
        assert [list(r[2:]) for r in per_model] == ([totals] if per_node.rows else [])
    # other tenants: none of these lines (globex of analytics_data has no cache meters)
    assert queries.run(ch, "cache_savings_by_node", tenant="globex", start=NOV, end=DEC).rows == []
