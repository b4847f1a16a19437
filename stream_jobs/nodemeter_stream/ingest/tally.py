"""What one ingest batch did with each source record, per partition (pure).

Every record the ingest agent applies ends in exactly one of four places, and a
*tally* counts them per source partition of the batch, beside the offset range:

- ``events``: usage events stored by this record (inserted now, or by an earlier
  attempt of the same record before a crash: ``BatchPlan.already_stored``);
- ``duplicates``: records (events or request ends) another record already holds;
- ``dead_letters``: records refused (malformed, invalid, oversize, too large, ...);
- ``other``: first-seen records that are not usage events (request ends).

So ``records == events + duplicates + dead_letters + other`` and, the usage topic
being written by non-transactional producers and never compacted (see
``commit_guard``), ``records == last - first + 1``. The worker writes the tallies in the
same insert as its progress of record (``sink.progress.tally_rows``): a batch's tally is
stored exactly when the batch is recorded as applied, so summed over batches they equal
the offsets consumed, across crashes (``nodemeter reconcile``, docs/worker.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nodemeter.events import UsageEvent
from nodemeter_stream.ingest.decode import Accepted, DeadLetter
from nodemeter_stream.ingest.plan import BatchPlan

FIELDS: tuple[str, ...] = ("records", "events", "duplicates", "dead_letters", "other")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tally:
    """The counts of one batch on one source partition, offsets ``first..last``."""

    first: int
    last: int
    records: int = 0
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    other: int = 0

    @property
    def span(self) -> int:
        """Offsets covered (``last - first + 1``)."""
        return self.last - self.first + 1

    @property
    def accounted(self) -> int:
        """Records with a known fate: stored, duplicate, dead letter or other."""
        return self.events + self.duplicates + self.dead_letters + self.other

    def to_json(self) -> str:
        return json.dumps({f: getattr(self, f) for f in FIELDS}, sort_keys=True)

    @classmethod
    def from_json(cls, first: int, last: int, text: str) -> Tally:
        d = json.loads(text)
        return cls(first=first, last=last, **{f: int(d.get(f, 0)) for f in FIELDS})


def tally_batch(
    plan: BatchPlan, spans: Mapping[tuple[str, int], tuple[int, int]]
) -> dict[tuple[str, int], Tally]:
    """(topic, partition) -> the tally of ``plan`` there; ``spans`` the batch's offset
    ranges (``sink.progress.ranges``). Every record of the plan is counted once, and every
    offset once: right after a rebalance Faust may deliver an offset twice in one batch
    (fetched before and after the seek to the committed offset); its second copy is a
    duplicate of the first in the plan, but it is one record on the topic, counted with
    its first copy's fate (seen under load in the fault loop: 1 of 476 records)."""
    counts: dict[tuple[str, int], dict[str, int]] = {tp: dict.fromkeys(FIELDS, 0) for tp in spans}
    seen: set[tuple[str, int, int]] = set()

    def add(items: Iterable[Accepted | DeadLetter], name: str, *, events: bool = False) -> None:
        for item in items:
            where = (item.source.topic, item.source.partition, item.source.offset)
            if where in seen:
                continue
            seen.add(where)
            c = counts[(item.source.topic, item.source.partition)]
            c["records"] += 1
            if events and isinstance(item, Accepted):
                c["events" if isinstance(item.record, UsageEvent) else "other"] += 1
            else:
                c[name] += 1

    add(plan.fresh, "events", events=True)
    add(plan.duplicates, "duplicates")
    add(plan.dead_letters, "dead_letters")
    return {
        tp: Tally(first=spans[tp][0], last=spans[tp][1], **c) for tp, c in sorted(counts.items())
    }
