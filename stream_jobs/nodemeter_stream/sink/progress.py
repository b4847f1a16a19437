"""Progress of record: what is stored, per source partition, kept with the data (pure).

Every batch an agent applies covers, per source partition, an offset range. Its
effects go to ClickHouse in this order (``agents.effects.apply_batch``):

1. an *intent* row per partition: ``first .. last`` is being applied;
2. the effect blocks (each with an offset-derived insert token) and the Kafka sends;
3. one insert holding the agent's new states *and* a *progress* row per partition
   (``last``): a crash keeps both or neither.

On assignment an agent reads these rows (:func:`recover`): a record at or below the
progress offset is already applied and skipped, whatever Faust committed; a record up
to an intent newer than the progress is *in doubt* (its effects may be partly stored)
and is applied again with lookups that drop what is already stored; anything later is
new. Faust's offset commit is then an optimisation: running ahead or behind, it can no
longer lose or double anything.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nodemeter_stream.ingest.tally import Tally

PROGRESS = "progress"
INTENT = "intent"
# per batch and source partition: what became of its records (ingest.tally), written
# in the same insert as the progress row (docs/worker.md, "Counting")
TALLY = "tally"

# worker_state column order (sql/migrations/040_worker_state.sql)
STATE_COLUMNS: tuple[str, ...] = (
    "group_id",
    "scope",
    "topic",
    "partition",
    "key",
    "version",
    "offset",
    "first_offset",
    "open",
    "value",
)

_last_version = 0


def next_version() -> int:
    """A version larger than any this process handed out before (wall-clock ns based, so
    a restarted process continues above its predecessor's rows)."""
    global _last_version
    _last_version = max(_last_version + 1, time.time_ns())
    return _last_version


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """What a partition's stored rows say: ``applied`` is the last offset whose effects
    are stored (-1: none); ``doubt_until`` the last offset of a batch that was begun but
    not recorded as applied (-1: none)."""

    applied: int = -1
    doubt_until: int = -1

    def classify(self, offset: int) -> str:
        """'applied' (skip), 'doubt' (re-apply with lookups) or 'new'."""
        if offset <= self.applied:
            return "applied"
        if offset <= self.doubt_until:
            return "doubt"
        return "new"


@dataclass(frozen=True, slots=True)
class StateRow:
    """One worker_state row as read back (newest version per key)."""

    scope: str
    topic: str
    partition: int
    key: str
    version: int
    offset: int
    first_offset: int
    open: bool
    value: str


def recover(rows: Iterable[StateRow]) -> dict[tuple[str, int], PartitionProgress]:
    """(topic, partition) -> progress, from the newest progress and intent rows."""
    applied: dict[tuple[str, int], StateRow] = {}
    intents: dict[tuple[str, int], StateRow] = {}
    for r in rows:
        tp = (r.topic, r.partition)
        if r.scope == PROGRESS:
            applied[tp] = r
        elif r.scope == INTENT:
            intents[tp] = r
    out: dict[tuple[str, int], PartitionProgress] = {}
    for tp in applied.keys() | intents.keys():
        a, i = applied.get(tp), intents.get(tp)
        done = a.offset if a is not None else -1
        doubt = -1
        if i is not None and (a is None or i.version > a.version) and i.offset > done:
            doubt = i.offset
        out[tp] = PartitionProgress(applied=done, doubt_until=doubt)
    return out


def ranges(positions: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (first, last) offset of (topic, partition, offset) positions."""
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for topic, partition, offset in positions:
        tp = (topic, partition)
        lo, hi = out.get(tp, (offset, offset))
        out[tp] = (min(lo, offset), max(hi, offset))
    return out


def _range_rows(
    group: str, scope: str, spans: Mapping[tuple[str, int], tuple[int, int]]
) -> list[Sequence[object]]:
    v = next_version()
    return [
        (group, scope, t, p, "", v, last, first, 0, "")
        for (t, p), (first, last) in sorted(spans.items())
    ]


def intent_rows(
    group: str, spans: Mapping[tuple[str, int], tuple[int, int]]
) -> list[Sequence[object]]:
    """Rows announcing that these offset ranges are being applied."""
    return _range_rows(group, INTENT, spans)


def progress_rows(
    group: str, spans: Mapping[tuple[str, int], tuple[int, int]]
) -> list[Sequence[object]]:
    """Rows recording that these ranges are applied (last offset per partition)."""
    return _range_rows(group, PROGRESS, spans)


def tally_rows(group: str, tallies: Mapping[tuple[str, int], Tally]) -> list[Sequence[object]]:
    """Rows holding each partition's tally of a batch (``first_offset .. offset``, the
    counts as JSON in ``value``). The key is the first offset, zero-padded: a re-sent
    insert collapses into the same row, and rows sort in offset order."""
    v = next_version()
    return [
        (group, TALLY, t, p, f"{tl.first:020d}", v, tl.last, tl.first, 0, tl.to_json())
        for (t, p), tl in sorted(tallies.items())
    ]


def state_row(
    group: str,
    scope: str,
    topic: str,
    partition: int,
    key: str,
    value: str,
    *,
    offset: int = -1,
    open_: bool = False,
) -> Sequence[object]:
    return (group, scope, topic, partition, key, next_version(), offset, -1, int(open_), value)
