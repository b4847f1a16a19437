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
and is applied again: as the whole batch it belonged to when this worker holds all of
it (:func:`exact_redo`), with the same blocks under the same tokens, else with lookups
that drop what is already stored; anything later is new. Faust's offset commit is
then an optimisation: running ahead or behind, it can no longer lose or double
anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

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
    # the batch in doubt, whole: (partition, first, last) of every source partition it
    # covered, as its intent rows name it (None: unknown, e.g. rows of an older version)
    batch: tuple[tuple[int, int, int], ...] | None = None

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
        batch = None
        if i is not None and (a is None or i.version > a.version) and i.offset > done:
            doubt = i.offset
            batch = batch_of(i.value)
        out[tp] = PartitionProgress(applied=done, doubt_until=doubt, batch=batch)
    return out


def batch_of(value: str) -> tuple[tuple[int, int, int], ...] | None:
    """The whole batch an intent row announces (see :func:`intent_rows`), or None."""
    if not value:
        return None
    try:
        spans = json.loads(value)["batch"]
        return tuple(sorted((int(p), int(a), int(b)) for p, a, b in spans))
    except (ValueError, KeyError, TypeError):
        return None


def exact_redo(
    progress: Mapping[int, PartitionProgress],
) -> tuple[tuple[int, int, int], ...] | None:
    """The batch in doubt, if it can be applied again *exactly* (pure): its intent rows
    name it whole, every partition of it is among ``progress`` (assigned here) and each
    is in doubt over just that range. Applied again from the same records and the same
    stored states, a batch gives the same blocks under the same insert tokens, so every
    table and every materialized view keeps one copy, whatever part of the first
    attempt a crash cut off. None: no batch in doubt, or not one this worker can
    re-form (then the agents drop what the lookups find stored: see docs/worker.md)."""
    in_doubt = {p: pp for p, pp in progress.items() if pp.doubt_until > pp.applied}
    named = {pp.batch for pp in in_doubt.values()}
    if len(named) != 1:
        return None
    (batch,) = named
    # the batch's partitions are exactly those in doubt, each over just its range
    if batch is None or {(p, pp.applied + 1, pp.doubt_until) for p, pp in in_doubt.items()} != set(
        batch
    ):
        return None
    return batch


def ranges(positions: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (first, last) offset of (topic, partition, offset) positions."""
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for topic, partition, offset in positions:
        tp = (topic, partition)
        lo, hi = out.get(tp, (offset, offset))
        out[tp] = (min(lo, offset), max(hi, offset))
    return out


def _range_rows(
    group: str, scope: str, spans: Mapping[tuple[str, int], tuple[int, int]], value: str = ""
) -> list[Sequence[object]]:
    v = next_version()
    return [
        (group, scope, t, p, "", v, last, first, 0, value)
        for (t, p), (first, last) in sorted(spans.items())
    ]


def intent_rows(
    group: str, spans: Mapping[tuple[str, int], tuple[int, int]], *, whole: bool = True
) -> list[Sequence[object]]:
    """Rows announcing that these offset ranges are being applied; each names the whole
    batch in ``value`` (``{"batch": [[partition, first, last], ...]}``), so that a
    recovery can tell whether it holds all of it (:func:`exact_redo`). ``whole=False``:
    a batch that dropped what a lookup found stored (a batch in doubt not re-formed
    whole) is never re-formed exactly either: its blocks held less than the records."""
    if not whole:
        return _range_rows(group, INTENT, spans)
    batch = json.dumps({"batch": sorted([p, a, b] for (_, p), (a, b) in spans.items())})
    return _range_rows(group, INTENT, spans, value=batch)


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


def encode_state(value: Any) -> str:
    """An agent's state as JSON text for ``worker_state.value``.

    orjson writes it (13 times faster than :func:`json.dumps` on a request state, which
    was 7 % of the worker's GIL time); a value orjson refuses (an integer past 64 bits,
    a key that is not a string) is written by :func:`json.dumps` instead, so every value
    that encoded before still does. States are read back with :func:`json.loads`, never
    with orjson, which would read an integer past 64 bits as a float."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value)


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
