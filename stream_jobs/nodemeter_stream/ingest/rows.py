"""ClickHouse rows for usage events, request records, request nodes and dead letters.

Pure mapping; column order matches sql/migrations (001_usage_events.sql,
020_request_records.sql, 002_dead_letters.sql).
"""

from __future__ import annotations

from typing import Any

from nodemeter.events import METER_NAMES, UsageEvent
from nodemeter_stream.ingest.decode import DeadLetter
from nodemeter_stream.ingest.merge import RequestRecord, from_us

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


USAGE_EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "tenant",
    "request_id",
    "node_id",
    "span_id",
    "parent_span_id",
    "branch_path",
    "workflow",
    "model",
    "provider",
    "sequence",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "gpu_ms",
    "gpu_type",
    "gpu_source",
    "cpu_ms",
    "api_calls",
    "custom",
    "status",
    "billable",
    "non_billable_reason",
    "event_time",
    "attributes",
    "source_topic",
    "source_partition",
    "source_offset",
)


def usage_event_row(
    ev: UsageEvent, *, topic: str = "", partition: int = 0, offset: int = 0
) -> list[Any]:
    m = ev.meters
    return [
        ev.event_id,
        ev.tenant,
        ev.request_id,
        ev.node_id,
        ev.span_id,
        ev.parent_span_id or "",
        ev.branch_path,
        ev.workflow,
        ev.model or "",
        ev.provider or "",
        ev.sequence,
        m.input_tokens,
        m.output_tokens,
        m.cached_input_tokens,
        m.cache_write_tokens,
        m.gpu_ms,
        m.gpu_type,
        m.gpu_source.value,
        m.cpu_ms,
        m.api_calls,
        dict(m.custom),
        ev.status.value,
        ev.billable,
        ev.non_billable_reason or "",
        ev.event_time,
        dict(ev.attributes),
        topic,
        partition,
        offset,
    ]
