"""The SDK's pre-flight budget decision on budget-state records (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from nodemeter.budget import decide
from nodemeter.errors import BudgetExceededError

NOV, DEC = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 15, tzinfo=UTC)


def rec(spend: str, *, hard: bool = True, workflow: str = "", start: datetime = NOV,
        end: datetime = DEC, budget: str = "monthly") -> dict[str, Any]:  # fmt: skip
    return {
        "tenant": "acme", "budget_id": budget, "window_start": start, "window_end": end,
        "currency": "USD", "limit_amount": Decimal("100"), "spend_amount": Decimal(spend),
        "hard_limit": hard, "workflow": workflow, "window_id": "2026-11", "updated_at": NOW,
    }  # fmt: skip


def test_a_hard_limit_reached_blocks_with_the_budget_and_spend() -> None:
    c = decide({"k": rec("100.000000000001")}, "acme", now=NOW)
    assert not c.allowed and c.reason == "exceeded" and c.budget_id == "monthly"
    assert c.spend_amount == Decimal("100.000000000001") and c.limit_amount == Decimal("100")
    with pytest.raises(BudgetExceededError, match="over its hard limit: budget 'monthly'"):
        c.raise_if_blocked()
    assert not decide({"k": rec("100")}, "acme", now=NOW).allowed  # spend >= limit


def test_what_does_not_block() -> None:
    assert decide({"k": rec("99.999999999999")}, "acme", now=NOW).allowed  # below
    assert decide({"k": rec("500", hard=False)}, "acme", now=NOW).allowed  # soft limit
    assert decide({"k": rec("500", start=DEC, end=DEC.replace(month=12, day=31))}, "acme",
                  now=NOW).allowed  # another window  # fmt: skip
    ok = decide({}, "acme", now=NOW)
    assert ok.allowed and ok.reason == "ok"


def test_a_workflow_budget_blocks_only_its_workflow() -> None:
    records = {"k": rec("120", workflow="support", budget="support-bot")}
    assert not decide(records, "acme", workflow="support", now=NOW).allowed
    assert decide(records, "acme", workflow="search", now=NOW).allowed
    assert decide(records, "acme", now=NOW).allowed


def test_no_data_is_allowed_unless_failing_closed() -> None:
    c = decide(None, "acme", now=NOW)
    assert c.allowed and c.reason == "no_data"
    assert not decide(None, "acme", now=NOW, fail_closed=True).allowed
