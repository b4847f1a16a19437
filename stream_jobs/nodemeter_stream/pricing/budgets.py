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


_limit_memo: dict[int, tuple[Budget, tuple[Decimal, ...]]] = {}


def _limits(budget: Budget) -> tuple[Decimal, ...]:
    """``threshold x amount`` of each threshold (exact), memoized per budget object (kept
    alive by the memo, so its id stays its own)."""
    known = _limit_memo.get(id(budget))
    if known is not None and known[0] is budget:
        return known[1]
    if len(_limit_memo) >= 4096:
        _limit_memo.clear()
    limits = tuple(mul(t, budget.amount) for t in budget.thresholds)
    _limit_memo[id(budget)] = (budget, limits)
    return limits


class _Slot:
    """One budget's window for the event time of the lines being applied (an event's
    lines share it): its state entry, the spend last written to it (text and Decimal)
    and the lowest limit not yet fired (no threshold can fire below it)."""

    __slots__ = ("at", "entry", "floor", "key", "spent", "text", "win")

    def __init__(self, at: datetime, win: BillingWindow, key: str, entry: dict[str, Any]):
        self.at, self.win, self.key, self.entry = at, win, key, entry
        self.text: str | None = None
        self.spent = ZERO
        self.floor: Decimal | None = None

    def set_floor(self, budget: Budget) -> None:
        fired = self.entry["fired"]
        unfired = [
            limit
            for t, limit in zip(budget.thresholds, _limits(budget), strict=True)
            if t not in fired
        ]
        self.floor = min(unfired) if unfired else None


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

    (The spend's text is parsed only when this call did not write it; no threshold is
    checked while spend is below the lowest limit not yet fired, where none can fire.)
    """
    alerts: list[BudgetAlert] = []
    budgets = plan.budgets
    slots: list[_Slot | None] = [None] * len(budgets)
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
            slot = slots[b]
            if slot is None or slot.at is not at:
                win = window_for(at, budget.window, tz)
                key = f"{budget.name}|{win.window_id}"
                if slot is not None and slot.key == key:
                    slot.at = at  # the same window
                else:
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
                    slot = slots[b] = _Slot(at, win, key, entry)
                    slot.set_floor(budget)
                    if touched is not None:
                        touched.add(key)
            entry = slot.entry
            if line.event_id and line.event_id != entry["last_event"]:
                # an event's lines are contiguous: count each contributing event once
                entry["events"] += 1
                entry["last_event"] = line.event_id
            text = entry["spent"]
            # the text this slot wrote (the very object) parses to the Decimal it wrote
            spent = add(slot.spent if text is slot.text else from_str(text), amount)
            slot.spent, slot.text = spent, to_str(spent)
            entry["spent"] = slot.text
            if slot.floor is None or mul(spent, 100) < slot.floor:
                continue
            win = slot.win
            fired = entry["fired"]
            hundred = mul(spent, 100)
            for t, limit in zip(budget.thresholds, _limits(budget), strict=True):
                if t in fired or hundred < limit:
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
            slot.set_floor(budget)
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
