"""Batching maths: what one batch of source records turns into.

``plan_batch`` is the whole decision for a batch, pure: dead letters, first-seen
events, duplicates, the request states to store and the request records to write.
The wiring executes a plan in a fixed order (``agents.effects``): intent -> ClickHouse
inserts (each tagged with a deterministic ``insert_deduplication_token``) -> forwards
-> states with the progress of record, in one insert -> acks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nodemeter.events import LIMITS, UsageEvent
from nodemeter_stream.ingest.decode import Accepted, Classified, DeadLetter
from nodemeter_stream.ingest.merge import Emission, RequestState, apply, due, purgeable, state_key

UINT64_MAX = 2**64 - 1
# The most usage events one request may merge: at this many, no request or node sum of
# any meter can pass the UInt64 columns of request_records / request_nodes, even with
# every event at its meter's per-event limit (nodemeter.events.LIMITS).
MAX_REQUEST_EVENTS = UINT64_MAX // max(LIMITS.values())
DEFAULT_MAX_REQUEST_EVENTS = 10_000
TOO_LARGE = "request_too_large"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPolicy:
    """Flush when ``max_size`` records are buffered or the oldest waited ``max_wait_s``."""

    max_size: int = 2000
    max_wait_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError("max_size must be >= 1")
        if not self.max_wait_s > 0:
            raise ValueError("max_wait_s must be > 0")

    def should_flush(self, *, size: int, age_s: float) -> bool:
        return size >= self.max_size or (size > 0 and age_s >= self.max_wait_s)


Position = tuple[str, int, int]  # (topic, partition, offset) of a source record


@dataclass(slots=True)
class BatchPlan:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    fresh: list[Accepted] = field(default_factory=list)  # first seen: merged and forwarded
    duplicates: list[Accepted] = field(default_factory=list)
    # fresh events whose usage row a previous attempt of this batch already stored
    # (found by the lookup): merged and forwarded again, not inserted again
    already_stored: set[tuple[str, str]] = field(default_factory=set)
    states: dict[str, RequestState] = field(default_factory=dict)
    emissions: list[Emission] = field(default_factory=list)

    def usage_to_insert(self, *, again: bool = False) -> list[tuple[UsageEvent, Accepted]]:
        """The usage rows to insert; ``again``: those a previous attempt of this very
        batch stored too (a batch in doubt re-formed whole, re-sent under its token)."""
        return [
            (a.record, a)
            for a in self.fresh
            if isinstance(a.record, UsageEvent)
            and (again or (a.record.tenant, a.record.event_id) not in self.already_stored)
        ]


def plan_batch(
    items: Sequence[Classified],
    *,
    get_state: Callable[[str], RequestState | None],
    stored: Mapping[tuple[str, str], Position],
    now_ms: int,
    timeout_s: float,
    max_request_events: int = DEFAULT_MAX_REQUEST_EVENTS,
) -> BatchPlan:
    """The whole decision for a batch (pure).

    ``get_state`` answers from the requests held in memory; ``stored`` maps (tenant,
    event_id) to the source position that stored the event, for the events the agent
    looked up (see :func:`needs_lookup`). An event is a duplicate when an earlier record
    of the batch, its request's state or another source record holds it; stored by
    *this* record (a batch re-applied after a crash) it is fresh but not inserted again.
    Dedupe is per tenant: the same id under another tenant is a different event.

    A request holds at most ``max_request_events`` usage events: a new one past that is
    a dead letter (``request_too_large``, its payload kept for a replay), so one runaway
    request can neither grow its state without bound nor overflow its UInt64 sums; the
    request goes on and closes as usual (incomplete, if its end counted more spans).
    """
    if not 1 <= max_request_events <= MAX_REQUEST_EVENTS:
        raise ValueError(f"max_request_events must be 1..{MAX_REQUEST_EVENTS}")
    plan = BatchPlan()
    in_batch: set[tuple[str, str]] = set()
    # states already copied by this batch: merged into in place (not copied per event,
    # which made a request of n events in one batch cost n^2/2 copies)
    owned: set[str] = set()

    def state_of(key: str) -> RequestState | None:
        return plan.states[key] if key in plan.states else get_state(key)

    for item in items:
        if isinstance(item, DeadLetter):
            plan.dead_letters.append(item)
            continue
        rec = item.record
        ident = (rec.tenant, rec.event_id)
        key = state_key(rec.tenant, rec.request_id)
        state = state_of(key)
        if ident in in_batch or (state is not None and state.has(rec.event_id)):
            plan.duplicates.append(item)
            continue
        src = stored.get(ident)
        if src is not None:
            if src != (item.source.topic, item.source.partition, item.source.offset):
                plan.duplicates.append(item)
                continue
            plan.already_stored.add(ident)
        if (
            state is not None
            and isinstance(rec, UsageEvent)
            and len(state.parts) >= max_request_events
        ):
            plan.dead_letters.append(
                DeadLetter(
                    reason=TOO_LARGE,
                    detail=f"request {rec.request_id!r} already holds {len(state.parts)} "
                    f"usage events (max_request_events={max_request_events})",
                    source=item.source,
                    key=b"",
                    payload=item.payload,
                    tenant=rec.tenant,
                    event_id=rec.event_id,
                )
            )
            continue
        in_batch.add(ident)
        plan.fresh.append(item)
        plan.states[key] = apply(
            state, rec, now_ms=now_ms, partition=item.source.partition, in_place=key in owned
        )
        if isinstance(rec, UsageEvent):  # apply copied the parts (an end shares them)
            owned.add(key)
    for key, st in list(plan.states.items()):
        emission = due(st, now_ms=now_ms, timeout_s=timeout_s)
        if emission is not None:
            plan.emissions.append(emission)
            plan.states[key] = emission.state
    return plan


@dataclass(slots=True)
class SweepPlan:
    emissions: list[Emission] = field(default_factory=list)
    purge: list[RequestState] = field(default_factory=list)


def plan_sweep(
    states: Iterable[RequestState], *, now_ms: int, timeout_s: float, retention_s: float
) -> SweepPlan:
    """Timeouts to close and closed states old enough to drop."""
    plan = SweepPlan()
    for state in states:
        if purgeable(state, now_ms=now_ms, retention_s=retention_s):
            plan.purge.append(state)
            continue
        emission = due(state, now_ms=now_ms, timeout_s=timeout_s)
        if emission is not None:
            plan.emissions.append(emission)
    return plan
