"""Offset commits that never pass a record nobody processed, on topics without gaps.

faust-streaming 0.15.3 can hand a stream a record *ahead* of the committed position
right after an assignment: a record prefetched before the seek to the committed offset
(upstream issues #216 and #221). Its consumer then takes the offsets it jumped over for
a "gap", which it expects only from transaction markers or compaction: it counts them as
acknowledged (``_add_gap``), drops the re-fetched records below its read position, and
its commit check lets a missing head record through (``_new_offset`` allows
``min(acked) == committed + 1``; upstream #606). The next commit then passes records
nobody processed. Seen here: a restarted worker got offset 3242 first where 3125 was
committed, and committed past 3125..3241 (its SIGKILL test lost events when the crashed
worker had not stored them; a passing run crawled one offset per commit for 2 minutes).

Our source topics are written by non-transactional producers and never compacted, so an
offset jump on them means records were not delivered, never a real gap. For the topics
named with :func:`guard_topics`:

* ``_add_gap`` logs the jump and counts nothing as acknowledged;
* ``_new_offset`` commits nothing while the committed record itself is unacknowledged
  (safety: a commit never passes an unprocessed record);
* :func:`heal` (a timer) rewinds a partition whose head stayed unacknowledged while later
  records were acknowledged, to the committed offset: the skipped records are delivered
  again (and every record after them, which the dedupe table drops) (liveness). If the
  log start moved past the committed offset (retention deleted records before they were
  read), it says so loudly and goes on from the log start.

Other topics (tables' changelogs) keep Faust's behaviour. The pure decisions are
:func:`head_missing` and :class:`Stuck`; the rest is wiring onto Faust's consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("nodemeter.commits")

_GAPLESS: set[str] = set()
_installed = False
ORIGINALS: dict[str, Any] = {}  # Faust's own methods, as they were before install()


def head_missing(acked: Iterable[int], committed: int | None) -> bool:
    """Later records are acknowledged but the committed (next) record is not."""
    acked = list(acked)
    return committed is not None and bool(acked) and min(acked) > committed


@dataclass
class Stuck:
    """Partitions whose head has been missing; a rewind is due after ``grace_s``."""

    grace_s: float = 2.0
    since: dict[Any, tuple[int, float]] = field(default_factory=dict)

    def due(self, tp: Any, committed: int | None, missing: bool, now: float) -> bool:
        if not missing or committed is None:
            self.since.pop(tp, None)
            return False
        first = self.since.get(tp)
        if first is None or first[0] != committed:
            self.since[tp] = (committed, now)
            return False
        if now - first[1] >= self.grace_s:
            self.since[tp] = (committed, now)  # next rewind only after another grace
            return True
        return False


def guard_topics(*topics: str) -> None:
    """Guard the commits of these topics (idempotent; installs the hooks once)."""
    _GAPLESS.update(topics)
    install()


def guarded(topic: str) -> bool:
    return topic in _GAPLESS


def install() -> None:
    """Wrap ``_add_gap`` and ``_new_offset`` of Faust's consumer (for guarded topics only)."""
    global _installed
    if _installed:
        return
    from faust.transport.consumer import Consumer

    original_add_gap = ORIGINALS["_add_gap"] = Consumer._add_gap
    original_new_offset = ORIGINALS["_new_offset"] = Consumer._new_offset

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        if not guarded(tp.topic):
            await original_add_gap(self, tp, offset_from, offset_to)
            return
        log.warning(
            "offsets %d..%d of %s[%d] were not delivered in order (a record prefetched "
            "before a seek?); they are not counted as processed and will be read again",
            offset_from,
            offset_to,
            tp.topic,
            tp.partition,
        )

    def _new_offset(self: Any, tp: Any) -> int | None:
        if guarded(tp.topic) and head_missing(self._acked[tp], self._committed_offset[tp]):
            return None
        result: int | None = original_new_offset(self, tp)
        return result

    Consumer._add_gap = _add_gap  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    _installed = True


async def heal(
    consumer: Any, stuck: Stuck, *, clock: Callable[[], float] = time.monotonic
) -> list[Any]:
    """Rewind guarded partitions whose head stayed unacknowledged; returns them."""
    rewound = []
    now = clock()
    for tp in list(consumer._acked):
        if not guarded(tp.topic):
            continue
        committed = consumer._committed_offset[tp]
        if not stuck.due(tp, committed, head_missing(consumer._acked[tp], committed), now):
            continue
        earliest = (await consumer.earliest_offsets(tp)).get(tp)
        if earliest is not None and earliest > committed:
            log.error(
                "records %d..%d of %s[%d] were deleted (retention) before this group read "
                "them; going on from the log start %d",
                committed,
                earliest - 1,
                tp.topic,
                tp.partition,
                earliest,
            )
            consumer._committed_offset[tp] = earliest
            continue
        log.warning(
            "%s[%d]: record %d is unacknowledged while later ones are; rewinding to it",
            tp.topic,
            tp.partition,
            committed,
        )
        await consumer.seek(tp, committed)
        rewound.append(tp)
    return rewound


async def skip_ahead(consumer: Any, n: int) -> dict[Any, int]:
    """Fault injection (tests): jump the fetch position of each assigned guarded partition
    ``n`` records ahead, behind Faust's read bookkeeping, as a stale prefetched record
    does: the ``n`` records are never fetched. Returns the new positions."""
    moved = {}
    for tp in sorted(consumer.assignment()):
        if guarded(tp.topic):
            moved[tp] = await consumer.position(tp) + n
            await consumer._seek(tp, moved[tp])
    log.warning("fault injection: skipped %d records ahead on %s", n, moved)
    return moved
