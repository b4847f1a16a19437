"""Repricing history without editing it: adjustment lines.

To correct past prices, publish a new price-book version whose ``effective_from`` lies
in the past (or fix a rate in a new version), replay the affected windows' events under
the new configuration with :func:`reprice`, and insert the returned ``adjustment``
lines. Lines already stored are never changed: for every (window, event, meter, GPU
type) the adjustment is ``new amount - old amount``, so old lines + adjustments = the
window as the new books price it, to the unit.

``tag`` names the repricing run (e.g. ``"default@v3"``); it is part of each adjustment's
``line_id``, so running the same repricing twice produces the same ids (collapsed in
ClickHouse) and a later, different run adds its own adjustments on top.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from nodemeter.events import UsageEvent
from nodemeter_stream.pricing.engine import PricingEngine, new_state
from nodemeter_stream.pricing.lines import PricedLine, line_id
from nodemeter_stream.pricing.money import ZERO, exact

_Key = tuple[str, str, str, str, str, str]


def _key(ln: PricedLine) -> _Key:
    return (ln.window_id, ln.event_id, ln.meter, ln.gpu_type, ln.model, ln.provider)


def price_all(engine: PricingEngine, events: Iterable[UsageEvent]) -> list[PricedLine]:
    """Price events from a clean state (per tenant, in the given order) and settle."""
    states: dict[str, dict[str, Any]] = {}
    seen: dict[str, Any] = {}
    lines: list[PricedLine] = []
    for ev in events:
        state = states.setdefault(ev.tenant, new_state(ev.tenant))
        lines += engine.process(state, seen, ev).lines
    for state in states.values():
        lines += engine.close_all(state).lines
    return lines


def reprice(
    engine: PricingEngine,
    events: Iterable[UsageEvent],
    old_lines: Iterable[PricedLine],
    *,
    tag: str,
) -> list[PricedLine]:
    """Adjustment lines that take ``old_lines`` to what ``engine`` prices ``events`` at.

    ``events`` are all events of the windows being repriced, in their original order;
    ``old_lines`` all lines stored for those windows (earlier adjustments included).
    """
    new_lines = price_all(engine, events)
    old_sum: dict[_Key, Decimal] = defaultdict(lambda: ZERO)
    new_sum: dict[_Key, Decimal] = defaultdict(lambda: ZERO)
    sample: dict[_Key, PricedLine] = {}
    with exact():
        for ln in old_lines:
            old_sum[_key(ln)] += ln.amount
            sample.setdefault(_key(ln), ln)
        for ln in new_lines:
            new_sum[_key(ln)] += ln.amount
            sample[_key(ln)] = ln  # prefer the new line: it names the version now in force
    out: list[PricedLine] = []
    for key in sorted(set(old_sum) | set(new_sum)):
        with exact():
            delta = new_sum[key] - old_sum[key]
        if not delta:
            continue
        s = sample[key]
        out.append(
            PricedLine(
                line_id=line_id("adjustment", s.tenant, *key, tag),
                line_kind="adjustment",
                event_id=s.event_id,
                tenant=s.tenant,
                request_id=s.request_id,
                node_id=s.node_id,
                workflow=s.workflow,
                model=s.model,
                provider=s.provider,
                meter=s.meter,
                gpu_type=s.gpu_type,
                quantity=0,
                unit_price=ZERO,
                amount=delta,
                currency=s.currency,
                price_book=s.price_book,
                price_book_version=s.price_book_version,
                charge_model=s.charge_model,
                tier=0,
                window_id=s.window_id,
                window_start=s.window_start,
                event_time=s.event_time,
            )
        )
    return out
