"""Mapping of records to ClickHouse rows (pure). Column order matches sql/migrations."""

from __future__ import annotations

from typing import Any

from nodemeter.events import UsageEvent

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
