"""Price a batch of records from the usage-by-tenant topic against stored state (pure).

The agent reads a batch, unpacks the forward records (one per tenant and ingest batch,
``ingest.forward``) into :class:`Item` s, calls :func:`price_batch` with the tenant
states it holds, then runs the effects in order (``agents.effects.apply_batch``):
priced lines and alerts to ClickHouse, alerts and budget-state records to Kafka, and
the new tenant states with the progress of record in one insert. A crash anywhere
re-applies the batch from the states recorded with the last progress: the same lines
(those already stored are dropped by a lookup) and the same alert ids come out.

Records are usage events (priced), request ends (skipped) and window ticks (the agent's
timer appends one for a tenant with a window due, :func:`tenants_due`; it settles the
windows due, ``PricingEngine.advance``). Anything else is rejected.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nodemeter.codec import decode_payload, usage_event_from_avro
from nodemeter.errors import DecodeError, InvalidUsageError, UnknownSchemaError
from nodemeter.fastcodec import decode_usage_event
from nodemeter_stream.pricing.budgets import BudgetAlert
from nodemeter_stream.pricing.engine import (
    Outcome,
    PricingEngine,
    new_state,
    tick_id,
)
from nodemeter_stream.pricing.errors import PricingError
from nodemeter_stream.pricing.lines import PricedLine


@dataclass(frozen=True, slots=True)
class Item:
    """One record to price: a usage event forwarded by the ingest agent (``ingest`` is
    its position on the usage topic) or a window tick (``ingest`` None). ``topic``,
    ``partition``, ``offset`` are the usage-by-tenant record it came in; ``doubt``: that
    record belongs to a batch that may have been partly stored before a crash."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    ingest: tuple[str, int, int] | None = None
    doubt: bool = False


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
    alerts: list[BudgetAlert] = field(default_factory=list)  # to store and send
    # line ids produced by records in doubt (the agent drops those already stored)
    doubt_lines: set[str] = field(default_factory=set)
    states: dict[str, tuple[int, dict[str, Any]]] = field(
        default_factory=dict
    )  # tenant -> (partition, state)
    budget_records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    priced: int = 0
    duplicates: int = 0


INGESTED = "ingested"  # tenant state key: usage-topic partition -> last offset priced


def price_batch(
    engine: PricingEngine,
    items: list[Item],
    *,
    get_state: Callable[[str], Any],
) -> BatchResult:
    """Price ``items`` in order against the tenant states ``get_state`` returns (pure;
    the stored states are not modified: the result holds the new ones).

    The ingest agent forwards each first-seen event once, and again only when it
    re-applies a batch after a crash; the tenant state keeps, per usage-topic
    partition, the last offset priced, so such a repeat is skipped exactly
    (``duplicates``). Pricing is deterministic given the state and the order, so a
    batch re-applied from the same state gives the same lines and alert ids.
    """
    result = BatchResult()
    states: dict[str, dict[str, Any]] = {}
    partitions: dict[str, int] = {}
    budget_keys: dict[str, set[str]] = {}
    seen: dict[str, Any] = {}  # the engine's per-event memo, for this batch only
    lines: dict[str, PricedLine] = {}
    alerts: dict[str, BudgetAlert] = {}
    for item in items:
        fast = decode_usage_event(item.value)  # compiled, or None: the Python path
        try:
            if fast is not None:
                name, record = "usage_event", fast
            else:
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
            # deep copy: the stored value must stay as it was until the batch is stored
            states[tenant] = copy.deepcopy(stored) if stored is not None else new_state(tenant)
            budget_keys[tenant] = set()
        state = states[tenant]
        ingested = state.setdefault(INGESTED, {})
        if item.ingest is not None:
            _, ip, io = item.ingest
            if io <= ingested.get(str(ip), -1):
                result.duplicates += 1  # priced before this batch was re-applied
                continue
        partitions[tenant] = item.partition
        try:
            out: Outcome
            # The engine raises before it changes the state (unknown tenant, a window
            # past its retention), so nothing of a rejected record stays.
            if name == "usage_event":
                out = engine.process(state, seen, record)
            else:
                out = engine.advance(state, seen, as_of)
        except (PricingError, InvalidUsageError) as exc:
            result.rejected.append(
                Rejected(item, getattr(exc, "reason", "unpriceable"), str(exc), tenant, event_id)
            )
            continue
        finally:
            if item.ingest is not None:
                ingested[str(item.ingest[1])] = item.ingest[2]
        if out.duplicate:
            result.duplicates += 1
        else:
            result.priced += 1
        budget_keys[tenant] |= out.budget_keys
        for ln in out.lines:
            lines[ln.line_id] = ln
            if item.doubt:
                result.doubt_lines.add(ln.line_id)
        for a in out.alerts:
            alerts[a.alert_id] = a
    result.lines = list(lines.values())
    result.alerts = list(alerts.values())
    result.states = {t: (partitions[t], s) for t, s in states.items() if t in partitions}
    for tenant, state in states.items():
        result.budget_records += engine.budget_records(state, budget_keys[tenant])
    return result


def tenants_due(
    engine: PricingEngine, states: Iterable[tuple[str, Any]], now: datetime
) -> list[str]:
    """The tick timer's decision: the tenants (of ``states``, (tenant, stored state)
    pairs) with a billing window due to close at ``now``, sorted."""
    return sorted(t for t, st in states if st is not None and engine.due(st, now))
