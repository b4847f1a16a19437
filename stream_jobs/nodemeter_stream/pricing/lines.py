"""Priced lines: the money of record, one row of ``priced_lines`` each.

``line_kind``:
  usage       one (event, meter, tier) piece; amount >= 0
  settlement  volume true-up at window close; may be negative (documented adjustment)
  credit      money grant consumed by an event (negative), or its reconciliation at
              window close (either sign)
  adjustment  repricing of the past under a new price-book version; either sign

``line_id`` is a hash of what the line is about (never of time or order of arrival),
so a redelivered event or a re-run settlement produces the same ids and collapses in
ClickHouse (ReplacingMergeTree ORDER BY line_id).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

from nodemeter_stream.pricing.money import from_str, to_str

PRICED_LINE_COLUMNS: tuple[str, ...] = (
    "line_id",
    "line_kind",
    "event_id",
    "tenant",
    "request_id",
    "node_id",
    "workflow",
    "model",
    "provider",
    "meter",
    "gpu_type",
    "quantity",
    "unit_price",
    "amount",
    "currency",
    "price_book",
    "price_book_version",
    "charge_model",
    "tier",
    "window_id",
    "window_start",
    "event_time",
    "cache_savings",
    "rate_match",
    "input_list_cost",
)


def line_id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True, kw_only=True)
class PricedLine:
    line_id: str
    line_kind: str
    event_id: str
    tenant: str
    request_id: str
    node_id: str
    workflow: str
    model: str
    provider: str
    meter: str
    gpu_type: str
    quantity: int
    unit_price: Decimal
    amount: Decimal
    currency: str
    price_book: str
    price_book_version: int
    charge_model: str
    tier: int
    window_id: str
    window_start: datetime
    event_time: datetime
    # On cached_input_tokens lines: what the tokens would have cost at the model's
    # input_tokens list price minus what they cost (column added by migration 030).
    cache_savings: Decimal = Decimal(0)
    # usage lines: exact | alias | generic (a fallback rate) | unpriced; "" otherwise
    # (column added by migration 060; engine.rate_match)
    rate_match: str = ""
    # On cache_write_tokens lines: what the tokens would have cost as plain input at the
    # model's input_tokens list price (same book version), so the write premium is
    # amount - input_list_cost; 0 on every other line (migration 075).
    input_list_cost: Decimal = Decimal(0)

    def row(self) -> list[Any]:
        """Values in ``PRICED_LINE_COLUMNS`` order for clickhouse-connect."""
        return list(_ROW(self))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (Decimals and times as strings) for worker state."""
        d = {f.name: getattr(self, f.name) for f in _FIELDS}  # asdict() deep-copies: slow
        d["unit_price"] = to_str(self.unit_price)
        d["amount"] = to_str(self.amount)
        d["cache_savings"] = to_str(self.cache_savings)
        d["input_list_cost"] = to_str(self.input_list_cost)
        d["window_start"] = self.window_start.isoformat()
        d["event_time"] = self.event_time.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PricedLine:
        return cls(
            **{
                **d,
                "unit_price": from_str(d["unit_price"]),
                "amount": from_str(d["amount"]),
                "cache_savings": from_str(d.get("cache_savings", "0")),
                "input_list_cost": from_str(d.get("input_list_cost", "0")),
                "window_start": datetime.fromisoformat(d["window_start"]),
                "event_time": datetime.fromisoformat(d["event_time"]),
            }
        )


_FIELDS = fields(PricedLine)
_ROW = attrgetter(*PRICED_LINE_COLUMNS)  # one C call for the row's values
