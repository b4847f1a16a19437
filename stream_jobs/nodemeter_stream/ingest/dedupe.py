"""Dedupe on event_id against what is stored, with a bounded TTL.

The worker keeps ``event_id -> SeenMark`` in a changelog-backed table. A mark is
written only *after* ClickHouse acknowledged the insert that holds the event, so the
table never claims an event that is not stored (a crash before the write replays the
event instead of losing it). Within a batch, the first occurrence wins.

Behind the table, ClickHouse tables collapse duplicates (ReplacingMergeTree), so an
event resent after the TTL expired is still counted once by ``FINAL`` queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

DEFAULT_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class SeenMark:
    """When an event was first stored (epoch ms) and the table partition that owns it."""

    seen_at_ms: int
    partition: int

    def to_json(self) -> list[int]:
        return [self.seen_at_ms, self.partition]

    @classmethod
    def from_json(cls, value: Any) -> SeenMark:
        return cls(int(value[0]), int(value[1]))


T = TypeVar("T")


@dataclass(slots=True)
class DedupeResult(Generic[T]):
    fresh: list[T] = field(default_factory=list)
    duplicates: list[T] = field(default_factory=list)


def split_fresh(
    items: Iterable[T], *, event_id: Callable[[T], str], is_seen: Callable[[str], bool]
) -> DedupeResult[T]:
    """Partition items into first-seen and duplicates (stored before, or earlier in the batch)."""
    out: DedupeResult[T] = DedupeResult()
    in_batch: set[str] = set()
    for item in items:
        eid = event_id(item)
        if eid in in_batch or is_seen(eid):
            out.duplicates.append(item)
        else:
            in_batch.add(eid)
            out.fresh.append(item)
    return out


def is_live(mark: SeenMark, *, now_ms: int, ttl_s: int) -> bool:
    return now_ms - mark.seen_at_ms < ttl_s * 1000


def expired(marks: Mapping[str, SeenMark], *, now_ms: int, ttl_s: int) -> list[str]:
    """Event ids whose mark is older than the TTL (to delete, with a changelog tombstone)."""
    return [k for k, m in marks.items() if not is_live(m, now_ms=now_ms, ttl_s=ttl_s)]
