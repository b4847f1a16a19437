"""Pricing outputs as wire records and ClickHouse rows (pure; Avro via nodemeter.codec).

- budget alerts: ``schemas/budget_alert.v1.avsc`` on ``nodemeter.budget-alerts.v1``,
  key = tenant; table ``budget_alerts`` (migration 006).
- budget state: ``schemas/budget_state.v2.avsc`` on the compacted
  ``nodemeter.budget-state.v1``, key = ``tenant/budget/window_start``.
- window ticks: ``schemas/window_tick.v1.avsc`` on ``nodemeter.usage-by-tenant.v1``,
  key = tenant (the pricing agent's timer; see ``pricing.batch.tenants_due``).
- price books: table ``price_book_rates`` (migration 004), one row per (book, version,
  rate, tier), so the prices every line names are queryable next to the lines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from nodemeter.codec import decode_payload, encode_payload
from nodemeter_stream.pricing.book import PricingConfig
from nodemeter_stream.pricing.budgets import BudgetAlert, state_key
from nodemeter_stream.pricing.money import ZERO

BUDGET_ALERT_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "tenant",
    "budget",
    "workflow",
    "window_id",
    "window_start",
    "window_end",
    "threshold_pct",
    "level",
    "limit_amount",
    "spend_amount",
    "currency",
    "hard_limit",
    "event_id",
    "crossed_at",
)

PRICE_BOOK_COLUMNS: tuple[str, ...] = (
    "price_book",
    "version",
    "effective_from",
    "currency",
    "extends",
    "credit_grant",
    "meter",
    "model",
    "provider",
    "gpu_type",
    "charge_model",
    "tier",
    "up_to",
    "unit_price",
    "package_size",
    "included_units",
)


def level(threshold_pct: int) -> str:
    """Alert level by threshold: below 80% INFO, below 100% WARNING, else EXCEEDED."""
    if threshold_pct >= 100:
        return "EXCEEDED"
    return "WARNING" if threshold_pct >= 80 else "INFO"


def alert_row(a: BudgetAlert) -> list[Any]:
    return [
        a.alert_id,
        a.tenant,
        a.budget,
        a.workflow,
        a.window_id,
        a.window_start,
        a.window_end,
        a.threshold_percent,
        level(a.threshold_percent),
        a.budget_amount,
        a.spent,
        a.currency,
        a.hard_limit,
        a.event_id,
        a.crossed_at,
    ]


def alert_payload(a: BudgetAlert) -> dict[str, Any]:
    return {
        "alert_id": a.alert_id,
        "tenant": a.tenant,
        "budget_id": a.budget,
        "window_start": a.window_start,
        "window_end": a.window_end,
        "currency": a.currency,
        "limit_amount": a.budget_amount,
        "spend_amount": a.spent,
        "threshold_pct": a.threshold_percent,
        "level": level(a.threshold_percent),
        "hard_limit": a.hard_limit,
        "event_time": a.crossed_at,
        "attributes": {"window_id": a.window_id, "workflow": a.workflow, "event_id": a.event_id},
    }


def encode_alert(a: BudgetAlert) -> tuple[bytes, bytes]:
    """(key, value) for the budget-alert topic."""
    return a.tenant.encode(), encode_payload("budget_alert", alert_payload(a))


def decode_alert(value: bytes) -> dict[str, Any]:
    name, payload = decode_payload(value)
    if name != "budget_alert":
        raise ValueError(f"expected a budget_alert record, got {name}")
    return payload


def encode_tick(tenant: str, as_of: datetime) -> tuple[bytes, bytes]:
    """(key, value) of a window tick for the usage-by-tenant topic: keyed like the
    tenant's usage (``tenant.encode()``), so it lands in the tenant's partition."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    return tenant.encode(), encode_payload("window_tick", {"tenant": tenant, "as_of": as_of})


def encode_budget_state(record: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) for the compacted budget-state topic."""
    key = state_key(record["tenant"], record["budget_id"], record["window_start"])
    payload = {**record, "status": str(record["status"]).upper()}
    return key, encode_payload("budget_state", payload)


def price_book_rows(config: PricingConfig) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for pb in config.books.values():
        for v in pb.versions:
            for r in v.rates:
                base = [
                    pb.name, v.version, v.effective_from, pb.currency, pb.extends or "",
                    v.credit_grant, r.meter, r.model, r.provider, r.gpu_type, r.charge.value,
                ]  # fmt: skip
                if r.tiers:
                    for i, t in enumerate(r.tiers):
                        up_to = t.up_to if t.up_to is not None else 0
                        rows.append([*base, i + 1, up_to, t.unit_price, 0, r.included_units])
                elif r.package_size:
                    rows.append([*base, 0, 0, r.package_price, r.package_size, r.included_units])
                else:
                    rows.append([*base, 0, 0, r.unit_price, 0, r.included_units])
            if not v.rates:
                rows.append([pb.name, v.version, v.effective_from, pb.currency, pb.extends or "",
                             v.credit_grant, "", "", "", "", "", 0, 0, ZERO, 0, 0])  # fmt: skip
    return rows


def price_book_token(rows: list[list[Any]]) -> str:
    h = hashlib.sha256(repr(rows).encode()).hexdigest()[:32]
    return f"price_book_rates:{h}"
