"""Dedupe rules (pure): what memory can answer, and what only ClickHouse can.

Dedupe is per tenant and by request: a duplicate is an event whose request's state (held
in memory while the request was touched within the retention) already holds it, an
earlier record of the same batch, or, for events older than memory can vouch for, an
event ``event_index`` says another source record stored (``plan.plan_batch``). Nothing
keeps one entry per event for a dedupe horizon; ``usage_events`` (ReplacingMergeTree on
``(tenant, event_id)``) collapses anything that still reached it.
"""

from __future__ import annotations


def needs_lookup(event_time_ms: int, *, now_ms: int, window_s: float, skew_s: float) -> bool:
    """Whether only ClickHouse can tell if this event was stored before.

    The worker keeps every request it touched within ``window_s`` (open, or closed and
    kept for the retention) in memory, and recovers them on assignment. An earlier copy
    of an event (same event time) was ingested at or after its event time, less the
    clock skew the SDK allows; its request was touched then and is still held while
    ``now < event_time - skew + window``. Older events are looked up.
    """
    return event_time_ms < now_ms - int((window_s - skew_s) * 1000)
