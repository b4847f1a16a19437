"""Budget thresholds: each alert decided exactly once per (tenant, budget, window, threshold)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nodemeter.events import Meters, UsageEvent
from nodemeter_stream.pricing import (
    BudgetAlert,
    PricingEngine,
    is_blocked,
    new_state,
    parse_documents,
)
from nodemeter_stream.pricing.book import PricingConfig
from nodemeter_stream.pricing.budgets import alert_id

D = Decimal
T0 = datetime(2026, 10, 1, 12, tzinfo=UTC)


def config(
    budgets: list[dict[str, Any]], *, grant: str = "0", window: str = "month"
) -> PricingConfig:
    book = {
        "name": "default",
        "versions": [{
            "version": 1, "effective_from": "2026-01-01T00:00:00Z", "credit_grant": grant,
            "rates": [
                {"meter": "api_calls", "charge": "flat", "unit_price": "1"},
                {"meter": "custom:pages", "charge": "volume",
                 "tiers": [{"up_to": 10, "unit_price": "2"}, {"unit_price": "1"}]},
            ],
        }],
    }  # fmt: skip
    plan = {"time_zone": "UTC", "billing_window": window, "budgets": budgets}
    return parse_documents([("test", {"price_book": book, "defaults": plan})])


def fresh(tenant: str = "t1") -> tuple[dict[str, Any], dict[str, Any]]:
    return new_state(tenant), {}


def event(i: int, *, t: datetime = T0, workflow: str = "wf", **meters: Any) -> UsageEvent:
    return UsageEvent(
        event_id=f"ev-{i}", tenant="t1", request_id=f"r{i}", node_id="n", span_id=f"s{i}",
        event_time=t, workflow=workflow, meters=Meters(**meters),
    )  # fmt: skip


def test_thresholds_fire_once_in_order() -> None:
    eng = PricingEngine(config([{"name": "monthly", "amount": "10"}]))
    state, seen = fresh()
    fired: list[BudgetAlert] = []
    for i, calls in enumerate([4, 1, 2, 1, 5, 3]):  # spend 4, 5, 7, 8, 13, 16
        fired += eng.process(state, seen, event(i, api_calls=calls)).alerts
    assert [(a.threshold_percent, a.spent, a.event_id) for a in fired] == [
        (50, D(5), "ev-1"),
        (80, D(8), "ev-3"),
        (100, D(13), "ev-4"),
    ]
    assert fired[0].alert_id == alert_id("t1", "monthly", "2026-10", 50)


def test_one_event_can_cross_several_thresholds() -> None:
    eng = PricingEngine(config([{"name": "monthly", "amount": "10"}]))
    state, seen = fresh()
    alerts = eng.process(state, seen, event(1, api_calls=12)).alerts
    assert [a.threshold_percent for a in alerts] == [50, 80, 100]


def test_new_window_alerts_again() -> None:
    eng = PricingEngine(
        config([{"name": "daily", "amount": "10", "window": "day", "thresholds": [100]}])
    )
    state, seen = fresh()
    a = eng.process(state, seen, event(1, api_calls=10)).alerts
    b = eng.process(state, seen, event(2, t=T0 + timedelta(days=1), api_calls=10)).alerts
    assert [x.window_id for x in a + b] == ["2026-10-01", "2026-10-02"]


def test_workflow_budget_counts_only_its_workflow() -> None:
    eng = PricingEngine(
        config([{"name": "rag", "workflow": "rag", "amount": "10", "thresholds": [100]}])
    )
    state, seen = fresh()
    assert eng.process(state, seen, event(1, workflow="chat", api_calls=50)).alerts == []
    alerts = eng.process(state, seen, event(2, workflow="rag", api_calls=10)).alerts
    assert [(a.budget, a.workflow, a.spent) for a in alerts] == [("rag", "rag", D(10))]


def test_spend_dropping_after_settlement_does_not_refire() -> None:
    eng = PricingEngine(config([{"name": "m", "amount": "20", "thresholds": [100]}]))
    state, seen = fresh()
    # 10 pages at 2, then 1 page reaches tier 2: provisional 20 + 1 = 21 (100% crossed);
    # settlement at close: 11 x 1 = 11.
    alerts = eng.process(state, seen, event(1, custom={"pages": 10})).alerts
    alerts += eng.process(state, seen, event(2, custom={"pages": 1})).alerts
    assert [a.threshold_percent for a in alerts] == [100]
    close = eng.close_all(state)
    assert sum(ln.amount for ln in close.lines) == D(-10)
    assert close.alerts == []
    assert eng.process(state, seen, event(3, custom={"pages": 20})).alerts == []


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(1, 9), min_size=1, max_size=40),
    st.lists(st.integers(0, 39), max_size=8),
    st.lists(st.integers(0, 39), max_size=8),
)
def test_each_alert_exactly_once_across_restarts_and_redeliveries(
    calls: list[int], restarts: list[int], redeliveries: list[int]
) -> None:
    eng = PricingEngine(config([{"name": "m", "amount": "30", "thresholds": [25, 50, 80, 100]}]))
    events = [event(i, t=T0 + timedelta(minutes=i), api_calls=c) for i, c in enumerate(calls)]
    state, seen = fresh()
    delivered: dict[str, BudgetAlert] = {}
    sent = 0
    for i, ev in enumerate(events):
        if i in restarts:  # worker restart: state recovered from its changelog
            state, seen = json.loads(json.dumps(state)), json.loads(json.dumps(seen))
        n = 2 if i in redeliveries else 1
        for _ in range(n):
            out = eng.process(state, seen, ev)
            for a in out.alerts:
                delivered.setdefault(a.alert_id, a)
                assert delivered[a.alert_id] == a  # a re-emitted alert is the same record
            sent += 0 if out.duplicate else len(out.alerts)
    spent = sum(calls)
    expected = [t for t in (25, 50, 80, 100) if spent * 100 >= t * 30]
    assert sorted(a.threshold_percent for a in delivered.values()) == expected
    assert sent == len(expected)  # decided once; duplicates only re-emit the same ids


def test_budget_state_records_and_hard_limit_check() -> None:
    eng = PricingEngine(
        config(
            [
                {"name": "m", "amount": "10", "hard_limit": True},
                {"name": "rag", "workflow": "rag", "amount": "5", "hard_limit": True},
            ]
        )
    )
    state, seen = fresh()
    out = eng.process(state, seen, event(1, api_calls=6))
    assert out.budget_keys == {"m|2026-10"}
    records = eng.budget_records(state, out.budget_keys)
    got = [
        (
            r["budget_id"],
            r["window_id"],
            r["spend_amount"],
            r["status"],
            r["alerted_threshold_pct"],
            r["event_count"],
        )
        for r in records
    ]
    assert got == [("m", "2026-10", D(6), "warning", 50, 1), ("rag", "2026-10", D(0), "ok", 0, 0)]
    assert records[0]["window_start"] == datetime(2026, 10, 1, tzinfo=UTC)
    assert not is_blocked(records, now=T0)
    records = eng.budget_records(state, eng.process(state, seen, event(2, api_calls=4)).budget_keys)
    assert records[0]["status"] == "exceeded"
    assert is_blocked(records, now=T0)
    assert is_blocked(records, workflow="anything", now=T0)
    assert not is_blocked(records, now=datetime(2026, 11, 1, 1, tzinfo=UTC))  # window over
    rag = eng.budget_records(
        state, eng.process(state, seen, event(3, workflow="rag", api_calls=5)).budget_keys
    )
    assert is_blocked([r for r in rag if r["budget_id"] == "rag"], workflow="rag", now=T0)
    assert not is_blocked([r for r in rag if r["budget_id"] == "rag"], workflow="chat", now=T0)
