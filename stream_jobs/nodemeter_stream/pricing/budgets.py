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
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from nodemeter_stream.pricing.book import Budget, TenantPlan
from nodemeter_stream.pricing.lines import PricedLine
from nodemeter_stream.pricing.money import ZERO, add, from_str, mul, to_str
from nodemeter_stream.pricing.windows import BillingWindow, window_for

OK, WARNING, EXCEEDED = "ok", "warning", "exceeded"


def alert_id(tenant: str, budget: str, window_id: str, threshold: int) -> str:
    raw = f"{tenant}\x1f{budget}\x1f{window_id}\x1f{threshold}".encode()
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
    threshold_percent: int
    budget_amount: Decimal
    spent: Decimal
    currency: str
    hard_limit: bool
    crossed_at: datetime  # event time of the line that crossed it
    event_id: str  # event whose pricing crossed it

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("budget_amount", "spent"):
            d[k] = to_str(d[k])
        for k in ("window_start", "window_end", "crossed_at"):
            d[k] = d[k].isoformat()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BudgetAlert:
        out = dict(d)
        for k in ("budget_amount", "spent"):
            out[k] = from_str(out[k])
        for k in ("window_start", "window_end", "crossed_at"):
            out[k] = datetime.fromisoformat(out[k])
        return cls(**out)


_limit_memo: dict[Budget, tuple[Decimal, ...]] = {}


def _limits(budget: Budget) -> tuple[Decimal, ...]:
    """``threshold x amount`` of each threshold (exact), memoized by the budget's value."""
    try:
        limits = _limit_memo.get(budget)
    except TypeError:  # unhashable (thresholds given as a list)
        return tuple(mul(t, budget.amount) for t in budget.thresholds)
    if limits is None:
        if len(_limit_memo) >= 4096:
            _limit_memo.clear()
        limits = _limit_memo[budget] = tuple(mul(t, budget.amount) for t in budget.thresholds)
    return limits


def apply_lines(
    *,
    plan: TenantPlan,
    tz: ZoneInfo,
    currency: str,
    state: dict[str, dict[str, Any]],
    lines: Iterable[PricedLine],
    touched: set[str] | None = None,
) -> list[BudgetAlert]:
    """Add ``lines`` to the budget spend in ``state`` (mutated) and return new alerts.

    ``state`` maps ``"<budget>|<window_id>"`` to ``{"spent", "fired", "events", "start",
    "end"}``; the keys changed are added to ``touched``. Lines are applied one at a
    time, so the alert names the line that crossed.
    """
    alerts: list[BudgetAlert] = []
    budgets = plan.budgets
    # the window of each budget for the last event time seen: an event's lines share it
    last: list[tuple[datetime | None, BillingWindow | None]] = [(None, None)] * len(budgets)
    for line in lines:
        amount = line.amount
        if not amount:
            continue
        at = line.event_time
        for b, budget in enumerate(budgets):
            if budget.workflow is not None and not (
                line.line_kind == "usage" and line.workflow == budget.workflow
            ):
                continue
            seen_at, win = last[b]
            if win is None or seen_at is not at:
                win = window_for(at, budget.window, tz)
                last[b] = (at, win)
            key = f"{budget.name}|{win.window_id}"
            entry = state.get(key)
            if entry is None:
                entry = state[key] = {
                    "spent": "0",
                    "fired": [],
                    "events": 0,
                    "last_event": "",
                    "start": win.start.isoformat(),
                    "end": win.end.isoformat(),
                }
            if touched is not None:
                touched.add(key)
            if line.event_id and line.event_id != entry["last_event"]:
                # an event's lines are contiguous: count each contributing event once
                entry["events"] += 1
                entry["last_event"] = line.event_id
            spent = add(from_str(entry["spent"]), amount)
            entry["spent"] = to_str(spent)
            fired = entry["fired"]
            hundred: Decimal | None = None
            for t, limit in zip(budget.thresholds, _limits(budget), strict=True):
                if t in fired:
                    continue
                if hundred is None:
                    hundred = mul(spent, 100)
                if hundred < limit:
                    continue
                fired.append(t)
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


def status_of(budget: Budget, spent: Decimal) -> str:
    below_100 = [t for t in budget.thresholds if t < 100]
    if spent >= budget.amount:
        return EXCEEDED
    if below_100 and spent * 100 >= below_100[0] * budget.amount:
        return WARNING
    return OK


def state_key(tenant: str, budget: str, window_start: datetime) -> bytes:
    """Key of the compacted budget-state topic: ``tenant/budget/window start (UTC ISO)``."""
    return f"{tenant}/{budget}/{window_start.astimezone(UTC).isoformat()}".encode()


def state_records(
    *,
    plan: TenantPlan,
    tz: ZoneInfo,
    currency: str,
    state: Mapping[str, Mapping[str, Any]],
    as_of: datetime,
    keys: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Budget-state records (``schemas/budget_state.v2.avsc`` shape, Decimals and aware
    datetimes): every budget in the window holding ``as_of`` (the tenant's latest event
    time, spend 0 when nothing was spent yet) plus the ``"<budget>|<window_id>"`` entries
    named in ``keys`` (windows whose spend just changed)."""
    wanted: dict[tuple[str, str], tuple[Budget, datetime, datetime]] = {}
    by_name = {b.name: b for b in plan.budgets}
    for budget in plan.budgets:
        win = window_for(as_of, budget.window, tz)
        wanted[(budget.name, win.window_id)] = (budget, win.start, win.end)
    for key in keys:
        name, _, window_id = key.partition("|")
        entry = state.get(key)
        if name in by_name and entry is not None:
            start, end = (
                datetime.fromisoformat(entry["start"]),
                datetime.fromisoformat(entry["end"]),
            )
            wanted[(name, window_id)] = (by_name[name], start, end)
    out: list[dict[str, Any]] = []
    for (name, window_id), (budget, start, end) in sorted(wanted.items()):
        entry = state.get(f"{name}|{window_id}")
        spent = from_str(entry["spent"]) if entry else ZERO
        fired = [int(t) for t in entry["fired"]] if entry else []
        out.append(
            {
                "tenant": plan.tenant,
                "budget_id": name,
                "window_start": start,
                "window_end": end,
                "currency": currency,
                "limit_amount": budget.amount,
                "spend_amount": spent,
                "alerted_threshold_pct": max(fired, default=0),
                "event_count": int(entry["events"]) if entry else 0,
                "updated_at": as_of,
                "window_id": window_id,
                "workflow": budget.workflow or "",
                "status": status_of(budget, spent),
                "hard_limit": budget.hard_limit,
            }
        )
    return out


def is_blocked(
    records: Iterable[Mapping[str, Any]], *, workflow: str | None = None, now: datetime
) -> bool:
    """The SDK's pre-flight check on budget-state records (as decoded from the compacted
    topic): True when a hard-limit budget that applies (tenant-wide, or this workflow's)
    is exceeded in a window that holds ``now``."""
    for r in records:
        if not r.get("hard_limit") or r.get("spend_amount", ZERO) < r.get("limit_amount", ZERO):
            continue
        if r.get("workflow") and r["workflow"] != workflow:
            continue
        if not r["window_start"] <= now < r["window_end"]:
            continue
        return True
    return False
