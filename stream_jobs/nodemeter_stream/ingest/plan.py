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

from nodemeter.events import UsageEvent
from nodemeter_stream.ingest.decode import Accepted, Classified, DeadLetter
from nodemeter_stream.ingest.merge import Emission, RequestState, apply, due, purgeable, state_key


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

    def usage_to_insert(self) -> list[tuple[UsageEvent, Accepted]]:
        return [
            (a.record, a)
            for a in self.fresh
            if isinstance(a.record, UsageEvent)
            and (a.record.tenant, a.record.event_id) not in self.already_stored
        ]


def plan_batch(
    items: Sequence[Classified],
    *,
    get_state: Callable[[str], RequestState | None],
    stored: Mapping[tuple[str, str], Position],
    now_ms: int,
    timeout_s: float,
) -> BatchPlan:
    """The whole decision for a batch (pure).

    ``get_state`` answers from the requests held in memory; ``stored`` maps (tenant,
    event_id) to the source position that stored the event, for the events the agent
    looked up (see :func:`needs_lookup`). An event is a duplicate when an earlier record
    of the batch, its request's state or another source record holds it; stored by
    *this* record (a batch re-applied after a crash) it is fresh but not inserted again.
    Dedupe is per tenant: the same id under another tenant is a different event.
    """
    plan = BatchPlan()
    in_batch: set[tuple[str, str]] = set()

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
        in_batch.add(ident)
        plan.fresh.append(item)
        plan.states[key] = apply(state, rec, now_ms=now_ms, partition=item.source.partition)
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
