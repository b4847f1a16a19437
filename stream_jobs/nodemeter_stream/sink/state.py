"""The worker's state and progress in ClickHouse (``worker_state``, ``event_index``).

:class:`StateStore` runs on the sink's ClickHouse thread (the same chDB session) and
retries through outages like every write. It reads what an agent needs on assignment
(progress, intents, states of its partitions) and answers the lookups of a batch:
which events are already stored (by tenant, event time and id) and which priced lines.
Row layouts and the recovery rules are in :mod:`nodemeter_stream.sink.progress`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from nodemeter_stream.sink.clickhouse import Block, ClickHouseSink
from nodemeter_stream.sink.progress import STATE_COLUMNS, StateRow

# Events of one tenant closer in time than this are looked up in one time range.
_CLUSTER_GAP = timedelta(seconds=60)


def _utc_text(at: datetime) -> str:
    """``at`` as ClickHouse DateTime64 text in UTC (``YYYY-MM-DD hh:mm:ss.ffffff``)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def quote(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _dt(value: datetime) -> str:
    return f"toDateTime64({quote(value.strftime('%Y-%m-%d %H:%M:%S.%f'))}, 6, 'UTC')"


def time_clusters(
    times: Iterable[datetime], gap: timedelta = _CLUSTER_GAP
) -> list[tuple[datetime, datetime]]:
    """Sorted times -> [(first, last)] ranges split where consecutive times are > gap apart."""
    out: list[tuple[datetime, datetime]] = []
    for t in sorted(times):
        if out and t - out[-1][1] <= gap:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


class StateStore:
    def __init__(self, sink: ClickHouseSink, *, group: str) -> None:
        self.sink = sink
        self.group = group

    async def load(
        self,
        topic: str,
        partitions: Iterable[int],
        *,
        scopes: Sequence[str],
        retention_s: float = 0,
    ) -> list[StateRow]:
        """Newest row per key of ``scopes`` for these partitions. Closed request states
        older than ``retention_s`` are left out (0: keep all)."""
        parts = sorted(set(partitions))
        if not parts:
            return []
        scope_list = ", ".join(quote(s) for s in scopes)
        keep = ""
        if retention_s > 0:
            keep = (
                f" AND (scope != 'request' OR open = 1 OR "
                f"written_at >= now64(3) - toIntervalMillisecond({int(retention_s * 1000)}))"
            )
        sql = (
            "SELECT scope, topic, partition, key, version, offset, first_offset, open, value "
            f"FROM worker_state FINAL WHERE group_id = {quote(self.group)} "
            f"AND topic = {quote(topic)} AND partition IN ({', '.join(map(str, parts))}) "
            f"AND scope IN ({scope_list}){keep}"
        )
        rows = await self.sink.query(sql)
        return [
            StateRow(str(s), str(t), int(p), str(k), int(v), int(o), int(f), bool(op), str(val))
            for s, t, p, k, v, o, f, op, val in rows
        ]

    def block(self, rows: Sequence[Sequence[Any]]) -> Block:
        """worker_state rows as one insert (one part: kept or lost as a whole)."""
        return Block(
            table="worker_state",
            columns=STATE_COLUMNS,
            rows=rows,
            token=f"worker_state:{uuid.uuid4().hex}",
        )

    async def stored_events(
        self, events: Iterable[tuple[str, datetime, str]]
    ) -> dict[tuple[str, str], tuple[str, int, int]]:
        """(tenant, event_id) -> (topic, partition, offset) of the record that stored it,
        for the given (tenant, event_time, event_id) that are stored."""
        by_tenant: dict[str, list[tuple[datetime, str]]] = {}
        for tenant, at, eid in events:
            by_tenant.setdefault(tenant, []).append((at, eid))
        if not by_tenant:
            return {}
        conds = []
        ids: set[str] = set()
        for tenant, items in sorted(by_tenant.items()):
            ids.update(e for _, e in items)
            spans = " OR ".join(
                f"event_time BETWEEN {_dt(a)} AND {_dt(b)}"
                for a, b in time_clusters(t for t, _ in items)
            )
            conds.append(f"(tenant = {quote(tenant)} AND ({spans}))")
        sql = (
            "SELECT tenant, event_id, source_topic, source_partition, source_offset "
            f"FROM event_index WHERE ({' OR '.join(conds)}) "
            f"AND event_id IN ({', '.join(quote(i) for i in sorted(ids))})"
        )
        rows = await self.sink.query(sql)
        return {(str(t), str(e)): (str(st), int(sp), int(so)) for t, e, st, sp, so in rows}

    async def stored_lines(
        self,
        lines: Mapping[tuple[str, str], Iterable[str]],
        times: Mapping[tuple[str, str], tuple[datetime, datetime]] | None = None,
    ) -> set[str]:
        """The line ids among ``lines`` ((tenant, window_id) -> ids) already stored.

        ``times``: (tenant, window_id) -> the earliest and latest event time of those
        lines. The hours between bound the read to the part of the window that can
        hold them (``priced_lines`` is sorted by tenant, window, hour: migration 050),
        instead of the whole billing window."""
        conds = []
        for (t, w), ids in sorted(lines.items()):
            if not ids:
                continue
            cond = (
                f"tenant = {quote(t)} AND window_id = {quote(w)} AND line_id IN "
                f"({', '.join(quote(i) for i in sorted(set(ids)))})"
            )
            span = (times or {}).get((t, w))
            if span is not None:
                lo, hi = (_utc_text(x) for x in span)
                cond += (
                    f" AND toStartOfHour(event_time) >= toStartOfHour(toDateTime64({quote(lo)}, 6, 'UTC'))"
                    f" AND toStartOfHour(event_time) <= toStartOfHour(toDateTime64({quote(hi)}, 6, 'UTC'))"
                )
            conds.append(f"({cond})")
        if not conds:
            return set()
        rows = await self.sink.query(f"SELECT line_id FROM priced_lines WHERE {' OR '.join(conds)}")
        return {str(r[0]) for r in rows}
