"""Batching maths: what one batch of source records turns into, and its insert tokens.

``plan_batch`` is the whole decision for a batch, pure: dead letters, first-seen
events, duplicates, the request states to store and the request records to write.
The wiring executes a plan in a fixed order: ClickHouse inserts (each tagged with a
deterministic ``insert_deduplication_token``) -> state tables -> forwards -> acks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from nodemeter_stream.ingest.decode import Accepted, Classified, DeadLetter
from nodemeter_stream.ingest.dedupe import split_fresh
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


@dataclass(slots=True)
class BatchPlan:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    fresh: list[Accepted] = field(default_factory=list)
    duplicates: list[Accepted] = field(default_factory=list)
    states: dict[str, RequestState] = field(default_factory=dict)
    emissions: list[Emission] = field(default_factory=list)


def plan_batch(
    items: Sequence[Classified],
    *,
    is_seen: Callable[[str], bool],
    get_state: Callable[[str], RequestState | None],
    now_ms: int,
    timeout_s: float,
) -> BatchPlan:
    plan = BatchPlan()
    accepted: list[Accepted] = []
    for item in items:
        if isinstance(item, DeadLetter):
            plan.dead_letters.append(item)
        else:
            accepted.append(item)
    split = split_fresh(accepted, event_id=lambda a: a.record.event_id, is_seen=is_seen)
    plan.fresh, plan.duplicates = split.fresh, split.duplicates

    def state_of(key: str) -> RequestState | None:
        return plan.states[key] if key in plan.states else get_state(key)

    tagged = [(a, False) for a in plan.fresh] + [(a, True) for a in plan.duplicates]
    for acc, duplicate in tagged:
        rec = acc.record
        key = state_key(rec.tenant, rec.request_id)
        state = state_of(key)
        if duplicate and (state is None or state.has(rec.event_id)):
            # Stored before and already merged (or merged into a state since purged: the
            # wiring stores a batch's states before its dedupe marks, so a mark without
            # a state means the state was purged, never that a crash lost it).
            # A stored duplicate that a crash kept out of a live state is merged again:
            # merging is idempotent, so this only ever fills a gap.
            continue
        plan.states[key] = apply(state, rec, now_ms=now_ms, partition=acc.source.partition)
    for key, state in list(plan.states.items()):
        emission = due(state, now_ms=now_ms, timeout_s=timeout_s)
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
