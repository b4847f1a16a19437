"""ClickHouse rows for request records, request nodes and dead letters (pure mapping).

Column order matches sql/migrations/020_request_records.sql and 002_dead_letters.sql.
"""

from __future__ import annotations

from typing import Any

from nodemeter.events import METER_NAMES
from nodemeter_stream.core.merge import RequestRecord, from_us
from nodemeter_stream.core.validate import DeadLetter

_METERS = tuple(m for m in METER_NAMES)

REQUEST_RECORD_COLUMNS: tuple[str, ...] = (
    "tenant",
    "request_id",
    "revision",
    "complete",
    "is_correction",
    "workflow",
    "root_span_id",
    "status",
    "has_end",
    "expected_spans",
    "spans_seen",
    "events",
    "started_at",
    "ended_at",
    "node_path",
    "branch_paths",
    "span_tree",
    *_METERS,
    "custom",
)

REQUEST_NODE_COLUMNS: tuple[str, ...] = (
    "tenant",
    "request_id",
    "node_id",
    "revision",
    "spans",
    "events",
    "billable_events",
    "branch_paths",
    "models",
    "status",
    "first_at",
    "last_at",
    *_METERS,
    "custom",
)

DEAD_LETTER_COLUMNS: tuple[str, ...] = (
    "source_topic",
    "source_partition",
    "source_offset",
    "reason",
    "detail",
    "tenant",
    "record_key",
    "payload",
)


def _meters(q: dict[str, int] | Any) -> list[Any]:
    custom = {k.removeprefix("custom:"): v for k, v in q.items() if k.startswith("custom:")}
    return [q.get(m, 0) for m in _METERS] + [custom]


def request_record_row(r: RequestRecord) -> list[Any]:
    return [
        r.tenant,
        r.request_id,
        r.revision,
        r.complete,
        r.is_correction,
        r.workflow,
        r.root_span_id,
        r.status,
        r.has_end,
        r.expected_spans,
        r.spans_seen,
        r.events,
        from_us(r.started_at_us),
        from_us(r.ended_at_us),
        list(r.node_path),
        list(r.branch_paths),
        [(s.span_id, s.parent_span_id, s.node_id, s.branch_path) for s in r.span_tree],
        *_meters(r.quantities),
    ]


def request_node_rows(r: RequestRecord) -> list[list[Any]]:
    return [
        [
            r.tenant,
            r.request_id,
            n.node_id,
            r.revision,
            n.spans,
            n.events,
            n.billable_events,
            list(n.branch_paths),
            list(n.models),
            n.status,
            from_us(n.first_at_us),
            from_us(n.last_at_us),
            *_meters(n.quantities),
        ]
        for n in r.nodes
    ]


def dead_letter_row(d: DeadLetter) -> list[Any]:
    # payload is String in ClickHouse: raw bytes kept as-is for replay
    return [
        d.source.topic,
        d.source.partition,
        d.source.offset,
        d.reason,
        d.detail[:2000],
        d.tenant,
        d.key,
        d.payload,
    ]
