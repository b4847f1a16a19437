"""Price a batch of records from the usage-by-tenant topic against stored state (pure).

The agent reads a batch, calls :func:`price_batch` with lookups into its changelog
tables, then, in this order: writes ``result.lines`` and ``result.alerts`` to ClickHouse
(acknowledged), stores ``result.states`` and ``result.seen`` in the tables, sends the
alerts not sent before and the budget-state records, and only then acks the batch. A
crash anywhere replays the batch against the state from before it (or after it, if
the tables were already written): either way the same lines and alerts come out.

Records are usage events (priced), request ends (skipped) and window ticks (the agent's
timer appends one for a tenant with a window due, :func:`tenants_due`; it settles the
windows due, ``PricingEngine.advance``). Anything else is rejected.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nodemeter.codec import decode_payload, usage_event_from_avro
from nodemeter.errors import DecodeError, InvalidUsageError, UnknownSchemaError
from nodemeter_stream.pricing.budgets import BudgetAlert
from nodemeter_stream.pricing.engine import (
    Outcome,
    PricingEngine,
    new_state,
    seen_key,
    tick_id,
)
from nodemeter_stream.pricing.errors import PricingError
from nodemeter_stream.pricing.lines import PricedLine


@dataclass(frozen=True, slots=True)
class Item:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    item: Item
    reason: str
    detail: str
    tenant: str = ""
    event_id: str = ""


@dataclass(slots=True)
class BatchResult:
    lines: list[PricedLine] = field(default_factory=list)  # unique by line_id
    alerts: list[BudgetAlert] = field(default_factory=list)  # to store (new and re-emitted)
    to_send: list[tuple[str, int, BudgetAlert]] = field(
        default_factory=list
    )  # (seen key, partition, alert)
    states: dict[str, tuple[int, dict[str, Any]]] = field(
        default_factory=dict
    )  # tenant -> (partition, state)
    seen: dict[str, tuple[int, Any]] = field(
        default_factory=dict
    )  # key -> (partition, record | None)
    budget_records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    priced: int = 0
    duplicates: int = 0


class _Overlay(MutableMapping[str, Any]):
    """The engine's ``seen`` map: reads fall through to the table, writes stay here
    until the batch is stored (then the agent writes them with their partition)."""

    def __init__(self, get: Callable[[str], Any], items: Callable[[], Any], partition: int) -> None:
        self._get, self._items = get, items
        self.partition = partition
        self.writes: dict[str, tuple[int, Any]] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self.writes:
            value = self.writes[key][1]
            if value is None:
                raise KeyError(key)
            return value
        value = self._get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes[key] = (self.partition, value)

    def __delitem__(self, key: str) -> None:
        self.writes[key] = (self.partition, None)

    def _keys(self) -> list[str]:
        keys = {k for k, _ in self._items()}
        keys |= {k for k, (_, v) in self.writes.items() if v is not None}
        return sorted(k for k in keys if self.writes.get(k, (0, True))[1] is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


def price_batch(
    engine: PricingEngine,
    items: list[Item],
    *,
    get_state: Callable[[str], Any],
    get_seen: Callable[[str], Any],
    seen_items: Callable[[], Any],
) -> BatchResult:
    result = BatchResult()
    states: dict[str, dict[str, Any]] = {}
    partitions: dict[str, int] = {}
    budget_keys: dict[str, set[str]] = {}
    overlay = _Overlay(get_seen, seen_items, 0)
    lines: dict[str, PricedLine] = {}
    alerts: dict[str, BudgetAlert] = {}
    to_send: dict[str, tuple[str, int, BudgetAlert]] = {}
    for item in items:
        try:
            name, payload = decode_payload(item.value)
            if name == "usage_event":
                record = usage_event_from_avro(payload)
            elif name == "window_tick":
                tenant, as_of = str(payload["tenant"]), payload["as_of"]
            elif name == "request_end":
                continue  # request ends are the merge's business
            else:
                raise UnknownSchemaError(f"{name} records are not usage records")
        except (DecodeError, InvalidUsageError) as exc:
            result.rejected.append(Rejected(item, getattr(exc, "reason", "malformed"), str(exc)))
            continue
        except (KeyError, ValueError) as exc:  # as codec.decode_record reports it
            detail = f"{name} does not map to a nodemeter record: {exc!r}"
            result.rejected.append(Rejected(item, "malformed", detail))
            continue
        if name == "usage_event":
            tenant, event_id = record.tenant, record.event_id
        else:
            event_id = tick_id((item.partition, item.offset))
        if tenant not in states:
            stored = get_state(tenant)
            # deep copy: the table's value must stay as it was until the batch is stored
            states[tenant] = copy.deepcopy(stored) if stored is not None else new_state(tenant)
            budget_keys[tenant] = set()
        partitions[tenant] = item.partition
        overlay.partition = item.partition
        state = states[tenant]
        snapshot = json.dumps(state)
        source = (item.partition, item.offset)
        try:
            out: Outcome
            if name == "usage_event":
                out = engine.process(state, overlay, record, source=source)
            else:
                out = engine.advance(state, overlay, as_of, source=source)
        except (PricingError, InvalidUsageError) as exc:
            states[tenant] = json.loads(snapshot)  # nothing of a rejected record stays
            result.rejected.append(
                Rejected(item, getattr(exc, "reason", "unpriceable"), str(exc), tenant, event_id)
            )
            continue
        if out.duplicate:
            result.duplicates += 1
        else:
            result.priced += 1
        budget_keys[tenant] |= out.budget_keys
        for ln in out.lines:
            lines[ln.line_id] = ln
        key = seen_key(tenant, event_id)  # a tick's: see PricingEngine.advance
        rec = overlay.get(key)
        for a in out.alerts:
            alerts[a.alert_id] = a
            if rec is not None and not rec.get("alerts_sent"):
                to_send[a.alert_id] = (key, item.partition, a)
    result.lines = list(lines.values())
    result.alerts = list(alerts.values())
    result.to_send = list(to_send.values())
    result.states = {t: (partitions[t], s) for t, s in states.items() if t in partitions}
    result.seen = overlay.writes
    for tenant, state in states.items():
        result.budget_records += engine.budget_records(state, budget_keys[tenant])
    return result


def tenants_due(
    engine: PricingEngine, states: Iterable[tuple[str, Any]], now: datetime
) -> list[str]:
    """The tick timer's decision: the tenants (of ``states``, (tenant, stored state)
    pairs) with a billing window due to close at ``now``, sorted."""
    return sorted(t for t, st in states if st is not None and engine.due(st, now))
