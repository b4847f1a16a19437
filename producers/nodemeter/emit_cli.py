"""``nodemeter emit``: read usage records as JSON lines on stdin and send them.

For services in other languages and for scripts. One JSON object per line:

    {"tenant": "acme", "request_id": "r1", "node_id": "ocr", "meters": {"gpu_ms": 840,
     "gpu_source": "MEASURED", "gpu_type": "L4"}, "model": "doctr"}
    {"type": "request_end", "tenant": "acme", "request_id": "r1", "span_count": 1}

Usage fields: tenant, request_id, node_id (required); span_id (default: node_id),
sequence (default 0), event_id (default: derived from tenant, request, span and
sequence, so re-running the script re-sends the same ids), parent_span_id,
branch_path, workflow, model, provider, status, billable, non_billable_reason,
event_time (ISO 8601 with a zone; default now), attributes, trace_id, and
meters (an object; its fields may also be given at the top level).
A bad line is reported with its line number and skipped; the exit status is 1
if any line was rejected, 0 otherwise. Undeliverable records go to the spool.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from nodemeter import __version__
from nodemeter.errors import InvalidUsageError, NodemeterError
from nodemeter.events import (
    METER_NAMES,
    GpuSource,
    Meters,
    Record,
    RequestEnd,
    Status,
    UsageEvent,
    event_id_for,
    request_end_id,
    utcnow,
    validate_record,
)

PRODUCER = f"nodemeter-emit/{__version__}"
_METER_FIELDS = (*METER_NAMES, "gpu_type", "gpu_source", "custom")


def _time(value: Any, now: Callable[[], datetime]) -> datetime:
    if value is None:
        return now()
    if not isinstance(value, str):
        raise InvalidUsageError("event_time must be an ISO 8601 string", reason="invalid_time")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidUsageError(
            f"event_time {value!r} is not ISO 8601", reason="invalid_time"
        ) from None
    if dt.tzinfo is None:
        raise InvalidUsageError("event_time needs a time zone (e.g. Z)", reason="invalid_time")
    return dt


def _enum(kind: type[Status] | type[GpuSource], value: Any, default: Any) -> Any:
    if value is None:
        return default
    try:
        return kind(str(value).upper())
    except ValueError:
        raise InvalidUsageError(
            f"{kind.__name__} must be one of {[s.value for s in kind]}, got {value!r}",
            reason=f"invalid_{kind.__name__.lower()}",
        ) from None


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):  # "false" must not silently mean True
        raise InvalidUsageError(
            f"billable must be true or false, got {value!r}", reason="invalid_billable"
        )
    return value


def record_from_json(obj: Any, *, now: Callable[[], datetime] = utcnow) -> Record:
    """Build (not yet validate) a record from one parsed JSON line."""
    if not isinstance(obj, dict):
        raise InvalidUsageError("each line must be a JSON object", reason="invalid_json")
    kind = obj.get("type", "usage_event")
    tenant, request_id = obj.get("tenant"), obj.get("request_id")
    if not tenant or not isinstance(tenant, str):
        raise InvalidUsageError("tenant is required", reason="missing_tenant")
    if not request_id or not isinstance(request_id, str):
        raise InvalidUsageError("request_id is required", reason="missing_request_id")
    attributes = obj.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise InvalidUsageError("attributes must be an object", reason="invalid_attributes")
    if kind == "request_end":
        return RequestEnd(
            event_id=obj.get("event_id") or request_end_id(tenant, request_id),
            tenant=tenant,
            request_id=request_id,
            root_span_id=obj.get("root_span_id") or "root",
            span_count=obj.get("span_count"),  # type: ignore[arg-type]  # validated later
            event_time=_time(obj.get("event_time"), now),
            workflow=obj.get("workflow") or "",
            status=_enum(Status, obj.get("status"), Status.OK),
            attributes=attributes,
        )
    if kind != "usage_event":
        raise InvalidUsageError(f"unknown record type {kind!r}", reason="invalid_type")
    node_id = obj.get("node_id")
    if not node_id or not isinstance(node_id, str):
        raise InvalidUsageError("node_id is required", reason="missing_node_id")
    span_id = obj.get("span_id") or node_id
    sequence = obj.get("sequence", 0)
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise InvalidUsageError("sequence must be an integer", reason="invalid_sequence")
    m: Mapping[str, Any] = obj.get("meters") or {k: obj[k] for k in _METER_FIELDS if k in obj}
    if not isinstance(m, dict):
        raise InvalidUsageError("meters must be an object", reason="invalid_meters")
    unknown = set(m) - set(_METER_FIELDS)
    if unknown:
        raise InvalidUsageError(f"unknown meters {sorted(unknown)}", reason="invalid_meter")
    gpu_default = GpuSource.MEASURED if m.get("gpu_ms") else GpuSource.NONE
    meters = Meters(
        **{k: m.get(k, 0) for k in METER_NAMES},
        gpu_type=m.get("gpu_type") or "",
        gpu_source=_enum(GpuSource, m.get("gpu_source"), gpu_default),
        custom=m.get("custom") or {},
    )
    return UsageEvent(
        event_id=obj.get("event_id") or event_id_for(tenant, request_id, span_id, sequence),
        tenant=tenant,
        request_id=request_id,
        node_id=node_id,
        span_id=span_id,
        parent_span_id=obj.get("parent_span_id"),
        branch_path=obj.get("branch_path") or "",
        workflow=obj.get("workflow") or "",
        model=obj.get("model"),
        provider=obj.get("provider"),
        sequence=sequence,
        meters=meters,
        status=_enum(Status, obj.get("status"), Status.OK),
        billable=_bool(obj.get("billable", True)),
        non_billable_reason=obj.get("non_billable_reason"),
        event_time=_time(obj.get("event_time"), now),
        attributes=attributes,
        trace_id=obj.get("trace_id"),
        producer=PRODUCER,
    )


def emit_lines(
    lines: Iterable[str], send: Callable[[Record], None], errors: TextIO
) -> tuple[int, int]:
    """Parse, validate and send each line; returns (sent, rejected)."""
    sent = rejected = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = record_from_json(json.loads(line))
            validate_record(record)
            send(record)
            sent += 1
        except json.JSONDecodeError as exc:
            rejected += 1
            print(f"line {lineno}: invalid_json: {exc}", file=errors)
        except (InvalidUsageError, TypeError, ValueError) as exc:
            rejected += 1
            reason = getattr(exc, "reason", "invalid")
            print(f"line {lineno}: {reason}: {exc}", file=errors)
    return sent, rejected


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default: $NODEMETER_KAFKA_BOOTSTRAP)"
    )
    parser.add_argument(
        "--topic", help="usage topic (default: nodemeter.usage.v1 with $NODEMETER_TOPIC_PREFIX)"
    )
    parser.add_argument(
        "--spool-dir", type=Path, help="spool directory (default: .nodemeter/spool)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and encode only; print event ids, send nothing",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery")


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        from nodemeter.codec import encode_record

        def show(record: Record) -> None:
            encode_record(record)
            print(record.event_id)

        sent, rejected = emit_lines(sys.stdin, show, sys.stderr)
        print(f"nodemeter emit: {sent} valid, {rejected} rejected (dry run)", file=sys.stderr)
        return 1 if rejected else 0

    from nodemeter.meter import Meter, MeterConfig

    kwargs: dict[str, Any] = {"producer_name": PRODUCER}
    if args.bootstrap:
        kwargs["bootstrap_servers"] = args.bootstrap
    if args.topic:
        kwargs["topic"] = args.topic
    if args.spool_dir:
        kwargs["spool_dir"] = args.spool_dir
    meter = Meter(MeterConfig(**kwargs))
    try:
        sent, rejected = emit_lines(sys.stdin, meter.emit_validated, sys.stderr)
        meter.flush(args.timeout)
    finally:
        meter.close(timeout=args.timeout)
    stats = meter.stats
    print(
        f"nodemeter emit: {sent} sent, {rejected} rejected; delivered {stats.delivered}, "
        f"spooled {stats.spooled}",
        file=sys.stderr,
    )
    if stats.lost:
        raise NodemeterError(f"{stats.lost} records could neither be delivered nor spooled")
    return 1 if rejected else 0
