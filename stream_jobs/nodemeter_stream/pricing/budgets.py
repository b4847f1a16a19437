"""Budgets: spend per tenant (optionally per workflow) per window, thresholds, alerts.

Pure decisions on plain state, so they can be recovered and replayed:

- Spend of a budget window is the sum of the lines attributed to it. Tenant-wide
  budgets count every line (usage, settlement, credit: net spend); workflow budgets
  count the ``usage`` lines of that workflow (gross, provisional for volume meters).
  A line is attributed to the budget window holding its ``event_time`` (settlement
  lines carry the last instant of their billing window).
- A threshold fires when spend reaches ``threshold% x amount``. The decision is
  recorded in state *before* the alert is sent (``fired``), and the alert id is a hash
  of (tenant, budget, window, threshold), so an alert is decided once per key even if
  spend later drops (negative settlement) and rises again, and across restarts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from nodemeter_stream.pricing.book import Budget, TenantPlan
from nodemeter_stream.pricing.lines import PricedLine
from nodemeter_stream.pricing.money import ZERO, exact, from_str, to_str
from nodemeter_stream.pricing.windows import window_for

OK, WARNING, EXCEEDED = "ok", "warning", "exceeded"


def alert_id(tenant: str, budget: str, window_id: str, threshold: Decimal) -> str:
    raw = f"{tenant}\x1f{budget}\x1f{window_id}\x1f{to_str(threshold.normalize())}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetAlert:
    """One threshold crossing; the record of the budget-alert topic and ``budget_alerts`` table."""

    alert_id: str
    tenant: str
    budget: str
    workflow: str  # "" for a tenant-wide budget
    window_id: str
    window_start: datetime
    window_end: datetime
    threshold_percent: Decimal
    budget_amount: Decimal
    spent: Decimal
    currency: str
    hard_limit: bool
    crossed_at: datetime  # event time of the line that crossed it
    event_id: str  # event whose pricing crossed it

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("threshold_percent", "budget_amount", "spent"):
            d[k] = to_str(d[k])
        for k in ("window_start", "window_end", "crossed_at"):
            d[k] = d[k].isoformat()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BudgetAlert:
        out = dict(d)
        for k in ("threshold_percent", "budget_amount", "spent"):
            out[k] = from_str(out[k])
        for k in ("window_start", "window_end", "crossed_at"):
            out[k] = datetime.fromisoformat(out[k])
        return cls(**out)


def _counts(budget: Budget, line: PricedLine) -> bool:
    if budget.workflow is None:
        return True
    return line.line_kind == "usage" and line.workflow == budget.workflow


def apply_lines(
    *,
    plan: TenantPlan,
    tz: ZoneInfo,
    currency: str,
    state: dict[str, dict[str, Any]],
    lines: Iterable[PricedLine],
) -> list[BudgetAlert]:
    """Add ``lines`` to the budget spend in ``state`` (mutated) and return new alerts.

    ``state`` maps ``"<budget>|<window_id>"`` to ``{"spent", "fired", "start", "end"}``.
    Lines are applied one at a time, so the alert names the line that crossed.
    """
    alerts: list[BudgetAlert] = []
    for line in lines:
        if not line.amount:
            continue
        for budget in plan.budgets:
            if not _counts(budget, line):
                continue
            win = window_for(line.event_time, budget.window, tz)
            key = f"{budget.name}|{win.window_id}"
            entry = state.setdefault(
                key,
                {
                    "spent": "0",
                    "fired": [],
                    "start": win.start.isoformat(),
                    "end": win.end.isoformat(),
                },
            )
            with exact():
                spent = from_str(entry["spent"]) + line.amount
                entry["spent"] = to_str(spent)
                for t in budget.thresholds:
                    tkey = to_str(t.normalize())
                    if tkey in entry["fired"] or spent * 100 < t * budget.amount:
                        continue
                    entry["fired"].append(tkey)
                    alerts.append(
                        BudgetAlert(
                            alert_id=alert_id(plan.tenant, budget.name, win.window_id, t),
                            tenant=plan.tenant,
                            budget=budget.name,
                            workflow=budget.workflow or "",
                            window_id=win.window_id,
                            window_start=win.start,
                            window_end=win.end,
                            threshold_percent=t,
                            budget_amount=budget.amount,
                            spent=spent,
                            currency=currency,
                            hard_limit=budget.hard_limit,
                            crossed_at=line.event_time,
                            event_id=line.event_id,
                        )
                    )
    return alerts


def percent(spent: Decimal, amount: Decimal) -> Decimal:
    """Spend as a percentage of the budget, for display only (2 places, half-even)."""
    return (spent * 100 / amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def status_record(
    *,
    plan: TenantPlan,
    tz: ZoneInfo,
    currency: str,
    state: Mapping[str, Mapping[str, Any]],
    as_of: datetime,
) -> dict[str, Any]:
    """The compacted budget-state record for a tenant: each budget in the window holding
    ``as_of`` (the tenant's latest event time).

    Format (also ``schemas/budget_state.v1.avsc``): ``{tenant, currency, as_of,
    budgets: [{budget, workflow, window_id, window_start, window_end, amount, spent,
    percent, status, hard_limit}]}``; money as decimal strings.
    """
    out: list[dict[str, Any]] = []
    for budget in plan.budgets:
        win = window_for(as_of, budget.window, tz)
        entry = state.get(f"{budget.name}|{win.window_id}")
        spent = from_str(entry["spent"]) if entry else ZERO
        pct = percent(spent, budget.amount)
        below_100 = [t for t in budget.thresholds if t < 100]
        if spent >= budget.amount:
            status = EXCEEDED
        elif below_100 and spent * 100 >= below_100[0] * budget.amount:
            status = WARNING
        else:
            status = OK
        out.append(
            {
                "budget": budget.name,
                "workflow": budget.workflow or "",
                "window_id": win.window_id,
                "window_start": win.start.isoformat(),
                "window_end": win.end.isoformat(),
                "amount": to_str(budget.amount),
                "spent": to_str(spent),
                "percent": to_str(pct),
                "status": status,
                "hard_limit": budget.hard_limit,
            }
        )
    return {"tenant": plan.tenant, "currency": currency, "as_of": as_of.isoformat(), "budgets": out}


def is_blocked(
    record: Mapping[str, Any], *, workflow: str | None = None, now: datetime | None = None
) -> bool:
    """True when a hard-limit budget that applies (tenant-wide, or this workflow's) is
    exceeded in its current window. ``now`` (aware) ignores stale windows that ended."""
    for b in record.get("budgets", []):
        if not b.get("hard_limit") or b.get("status") != EXCEEDED:
            continue
        if b.get("workflow") and b["workflow"] != workflow:
            continue
        if (
            now is not None
            and b.get("window_end")
            and datetime.fromisoformat(b["window_end"]) <= now
        ):
            continue
        return True
    return False
