"""The facts ``nodemeter reconcile`` compares, read from Kafka and ClickHouse.

Kafka: the usage topic's retained offsets per partition, and the ingest dead letters
on the DLQ topic (their ``source_*`` headers). ClickHouse: the worker's progress of
record and tallies (``worker_state``), and counts of usage_events, dead_letters and
priced_lines. The comparisons are pure (``analytics.reconcile``).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from nodemeter_stream.analytics.errors import AnalyticsError
from nodemeter_stream.analytics.reconcile import (
    CheckedRange,
    Coverage,
    MeterQuantity,
    PartitionView,
)
from nodemeter_stream.ingest.tally import Tally
from nodemeter_stream.sink.progress import PROGRESS, TALLY


class SourceError(AnalyticsError):
    """Kafka could not be read (no broker, no such topic, a read that timed out)."""


# --- Kafka ------------------------------------------------------------------------------


def _consumer(bootstrap: str) -> Any:
    from confluent_kafka import Consumer

    from nodemeter.kafkalog import with_logger

    return Consumer(
        with_logger(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"nodemeter-reconcile-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )


def _partitions(c: Any, topic: str, timeout: float) -> list[int]:
    from confluent_kafka import KafkaException

    try:
        md = c.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise SourceError(f"cannot read the topics of the broker: {exc}") from exc
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise SourceError(f"topic {topic!r} not found (check --topic-prefix)")
    return sorted(meta.partitions)


def watermarks(bootstrap: str, topic: str, *, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """partition -> (earliest retained offset, next offset to be written)."""
    from confluent_kafka import KafkaException, TopicPartition

    c = _consumer(bootstrap)
    try:
        out = {}
        for p in _partitions(c, topic, timeout):
            try:
                out[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            except KafkaException as exc:
                raise SourceError(f"{topic}[{p}]: offsets unknown: {exc}") from exc
        return out
    finally:
        c.close()


def dlq_positions(
    bootstrap: str,
    dlq: str,
    source_topic: str,
    *,
    timeout: float = 120.0,
    progress: Callable[[int], None] | None = None,
) -> dict[int, set[int]]:
    """source partition -> offsets of ``source_topic`` that the DLQ topic holds a dead
    letter for, read from the DLQ's first retained record to its end. Only records with
    a ``source_topic`` header count: the ingest agent's (the pricing agent's name a
    ``stage`` instead, and their events are stored)."""
    from confluent_kafka import KafkaError, TopicPartition

    c = _consumer(bootstrap)
    out: dict[int, set[int]] = {}
    try:
        todo: dict[int, int] = {}
        assign = []
        for p in _partitions(c, dlq, 10.0):
            lo, hi = c.get_watermark_offsets(TopicPartition(dlq, p), timeout=10.0)
            if hi > lo:
                todo[p] = hi
                assign.append(TopicPartition(dlq, p, lo))
        if not assign:
            return out
        c.assign(assign)
        deadline = time.monotonic() + timeout
        seen = 0
        while todo:
            if time.monotonic() > deadline:
                raise SourceError(
                    f"{dlq}: not read to its end within {timeout:.0f}s (partitions {sorted(todo)})"
                )
            for msg in c.consume(num_messages=1000, timeout=1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.pop(msg.partition(), None)
                        continue
                    raise SourceError(f"{dlq}: {err}")
                if msg.offset() >= todo.get(msg.partition(), -1) - 1:
                    todo.pop(msg.partition(), None)
                seen += 1
                h = {k: v for k, v in (msg.headers() or []) if v is not None}
                if h.get("source_topic", b"").decode(errors="replace") != source_topic:
                    continue
                try:
                    sp, so = int(h["source_partition"]), int(h["source_offset"])
                except (KeyError, ValueError):
                    continue
                out.setdefault(sp, set()).add(so)
            if progress is not None:
                progress(seen)
        return out
    finally:
        c.close()


# --- ClickHouse -------------------------------------------------------------------------


def partition_views(
    client: Any, *, group: str, topic: str, offsets: dict[int, tuple[int, int]]
) -> list[PartitionView]:
    """The worker's progress and tallies for ``topic`` beside the topic's offsets."""
    rows = client.query(
        "SELECT scope, partition, first_offset, offset, value FROM worker_state FINAL "
        "WHERE group_id = {group:String} AND topic = {topic:String} "
        f"AND scope IN ('{PROGRESS}', '{TALLY}')",
        parameters={"group": group, "topic": topic},
    ).result_rows
    applied: dict[int, int] = {}
    tallies: dict[int, list[Tally]] = {}
    for scope, p, first, last, value in rows:
        if scope == PROGRESS:
            applied[int(p)] = int(last)
        else:
            tallies.setdefault(int(p), []).append(Tally.from_json(int(first), int(last), value))
    parts = sorted(set(offsets) | set(applied))
    return [
        PartitionView(
            partition=p,
            earliest=offsets.get(p, (0, 0))[0],
            end=offsets.get(p, (0, 0))[1],
            applied=applied.get(p, -1),
            tallies=tallies.get(p, []),
        )
        for p in parts
    ]


def groups_with_progress(client: Any, topic: str) -> list[str]:
    """Consumer groups that recorded progress on ``topic`` (to name them in a hint)."""
    rows = client.query(
        "SELECT DISTINCT group_id FROM worker_state WHERE scope = 'progress' "
        "AND topic = {topic:String} ORDER BY group_id",
        parameters={"topic": topic},
    ).result_rows
    return [str(r[0]) for r in rows]


def _in_ranges(ranges: Sequence[CheckedRange]) -> str:
    # integers only: built here, not from user input
    return " OR ".join(
        f"(source_partition = {int(r.partition)} AND source_offset BETWEEN {int(r.first)} "
        f"AND {int(r.last)})"
        for r in ranges
    )


def stored_counts(
    client: Any, topic: str, ranges: Sequence[CheckedRange]
) -> tuple[dict[int, int], dict[int, int]]:
    """partition -> usage_events FINAL rows, and -> ingest dead letters (dead_letters
    FINAL rows at positions no stored event has: a dead letter at a stored event's
    position is the pricing agent's), at offsets inside ``ranges``."""
    if not ranges:
        return {}, {}
    cond = _in_ranges(ranges)
    params = {"topic": topic}
    events = client.query(
        "SELECT source_partition, count() FROM usage_events FINAL "
        f"WHERE source_topic = {{topic:String}} AND ({cond}) GROUP BY source_partition",
        parameters=params,
    ).result_rows
    dead = client.query(
        "SELECT source_partition, count() FROM dead_letters FINAL "
        f"WHERE source_topic = {{topic:String}} AND ({cond}) "
        "AND (source_partition, source_offset) NOT IN (SELECT source_partition, source_offset "
        f"FROM usage_events WHERE source_topic = {{topic:String}} AND ({cond})) "
        "GROUP BY source_partition",
        parameters=params,
    ).result_rows
    return {int(p): int(n) for p, n in events}, {int(p): int(n) for p, n in dead}


# stored = billed: the billable stored events (FINAL), minus those the pricing agent
# refused (a dead letter at the event's own source position), each with its non-zero
# meter quantities (custom meters as custom:<name>, as pricing names them), against the
# usage lines of priced_lines (FINAL) of the same tenant and period.
_EVENTS = """
SELECT tenant, event_id,
       arrayFilter(m -> m.2 > 0, arrayConcat(
           [('input_tokens', input_tokens), ('output_tokens', output_tokens),
            ('cached_input_tokens', cached_input_tokens),
            ('cache_write_tokens', cache_write_tokens), ('gpu_ms', gpu_ms),
            ('cpu_ms', cpu_ms), ('api_calls', api_calls)],
           arrayMap((k, v) -> (concat('custom:', k), v), mapKeys(custom), mapValues(custom))
       )) AS meters
FROM usage_events FINAL
WHERE billable AND ({tenant:String} = '' OR tenant = {tenant:String})
  AND event_time >= {start:DateTime64(6, 'UTC')} AND event_time < {end:DateTime64(6, 'UTC')}
  AND (source_topic, source_partition, source_offset) {refused} IN
      (SELECT source_topic, source_partition, source_offset FROM dead_letters)
"""

_LINES = """
SELECT tenant, event_id, meter, any(window_id) AS window_id, sum(quantity) AS qty
FROM priced_lines FINAL
WHERE line_kind = 'usage' AND ({tenant:String} = '' OR tenant = {tenant:String})
  AND event_time >= {start:DateTime64(6, 'UTC')} AND event_time < {end:DateTime64(6, 'UTC')}
GROUP BY tenant, event_id, meter
"""

QUANTITIES_SQL = f"""
WITH
    ev AS ({_EVENTS.replace("{refused}", "NOT")}),
    em AS (SELECT tenant, event_id, m.1 AS meter, toDecimal128(m.2, 0) AS qty
           FROM ev ARRAY JOIN meters AS m),
    ln AS ({_LINES})
SELECT tenant, window_id, meter, sum(em.qty) AS stored, sum(ln.qty) AS billed
FROM em FULL OUTER JOIN ln USING (tenant, event_id, meter)
GROUP BY tenant, window_id, meter
ORDER BY tenant, window_id, meter
"""

COVERAGE_SQL = f"""
WITH
    ev AS ({_EVENTS.replace("{refused}", "NOT")}),
    ln AS ({_LINES})
SELECT e.tenant, count() AS events, countIf(l.event_id = '') AS unbilled,
       groupArrayIf(3)(e.event_id, l.event_id = '') AS sample
FROM (SELECT tenant, event_id FROM ev WHERE notEmpty(meters)) AS e
LEFT JOIN (SELECT DISTINCT tenant, event_id FROM ln) AS l
    ON e.tenant = l.tenant AND e.event_id = l.event_id
GROUP BY e.tenant
ORDER BY e.tenant
"""

REFUSED_SQL = f"""
SELECT tenant, count() FROM ({_EVENTS.replace("{refused}", "")}) GROUP BY tenant
"""


def _time(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def billed_facts(
    client: Any, *, tenant: str, start: datetime, end: datetime
) -> tuple[list[MeterQuantity], list[Coverage], dict[str, int]]:
    """The quantities per (tenant, window, meter), the per-tenant coverage of events by
    lines, and the events refused by pricing, for events in ``start <= t < end``."""
    params = {"tenant": tenant, "start": _time(start), "end": _time(end)}
    q = client.query(QUANTITIES_SQL, parameters=params).result_rows
    c = client.query(COVERAGE_SQL, parameters=params).result_rows
    r = client.query(REFUSED_SQL, parameters=params).result_rows
    return (
        [MeterQuantity(str(t), str(w), str(m), int(s), int(b)) for t, w, m, s, b in q],
        [Coverage(str(t), int(n), int(u), [str(x) for x in s]) for t, n, u, s in c],
        {str(t): int(n) for t, n in r},
    )


def stderr_progress(label: str) -> Callable[[int], None]:
    """A progress callback printing ``label: N`` on stderr at most once a second."""
    last = [0.0]

    def report(n: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            print(f"[reconcile] {label}: {n:,}", file=sys.stderr, flush=True)

    return report
