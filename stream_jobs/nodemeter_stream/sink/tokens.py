"""Insert tokens: the same source offsets (or the same rows) give the same token (pure).

Every block the worker writes carries ``insert_deduplication_token``; the tables keep
a deduplication window, so a block re-sent after a crash or a lost acknowledgement is a
no-op in the table *and* in the materialized views fed from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from nodemeter_stream.ingest.decode import Source


def offset_ranges(sources: Iterable[Source]) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (first, last) offset covered."""
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for s in sources:
        tp = (s.topic, s.partition)
        lo, hi = out.get(tp, (s.offset, s.offset))
        out[tp] = (min(lo, s.offset), max(hi, s.offset))
    return out


def offsets_token(table: str, sources: Iterable[Source]) -> str:
    """``table:topic:partition:first-last[,...]``: the same offsets give the same token.

    A block is only ever rebuilt from the same offsets with the same or fewer fresh
    events (the dedupe table only grows), so skipping a repeated token loses nothing.
    """
    ranges = offset_ranges(sources)
    parts = [f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(ranges.items())]
    return f"{table}:" + ",".join(parts)


def content_token(table: str, keys: Iterable[str]) -> str:
    """A token from the identity of the rows (for blocks not tied to source offsets)."""
    h = hashlib.sha256()
    for k in sorted(keys):
        h.update(k.encode())
        h.update(b"\x00")
    return f"{table}:{h.hexdigest()[:32]}"
