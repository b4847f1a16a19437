"""Avro encoding of nodemeter records.

Default wire format: Avro single-object encoding, ``C3 01`` + the 8-byte
CRC-64-AVRO fingerprint (little-endian) of the writer schema's Parsing Canonical
Form + the Avro body. Any schema version in ``schemas/`` can be read; records are
resolved to the newest version of their type (fastavro writer/reader resolution).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

import nodemeter_schemas
from nodemeter.avrocheck import compile_check
from nodemeter.errors import DecodeError, UnknownSchemaError
from nodemeter.events import (
    GpuSource,
    Meters,
    Record,
    RequestEnd,
    Status,
    UsageEvent,
)

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
HEADER_LEN = 10


@dataclass(frozen=True)
class SchemaEntry:
    record: str
    version: int
    parsed: Any
    fingerprint: bytes
    # the strict walk run before fastavro (negative enum/union indices; avrocheck.py)
    check: Callable[[bytes, int], int] = field(compare=False, repr=False)


@cache
def schema_entry(record: str, version: int | None = None) -> SchemaEntry:
    if version is None:
        version = nodemeter_schemas.latest_version(record)
    raw = nodemeter_schemas.load(record, version)
    parsed = fastavro.parse_schema(raw, _write_hint=True)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return SchemaEntry(record, version, parsed, fp, compile_check(parsed))


@cache
def _by_fingerprint() -> dict[bytes, SchemaEntry]:
    table: dict[bytes, SchemaEntry] = {}
    for record, versions in nodemeter_schemas.available().items():
        for version in versions:
            entry = schema_entry(record, version)
            table[entry.fingerprint] = entry
    return table


def encode_payload(record: str, payload: Mapping[str, Any], *, version: int | None = None) -> bytes:
    """Single-object encode an Avro-shaped dict with the given schema version."""
    entry = schema_entry(record, version)
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC)
    buf.write(entry.fingerprint)
    fastavro.schemaless_writer(buf, entry.parsed, dict(payload))
    return buf.getvalue()


def decode_payload(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode single-object bytes to (record name, dict resolved to the newest version)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise DecodeError(
            f"truncated: {len(data)} bytes is shorter than the 10-byte header", reason="truncated"
        )
    if data[:2] != SINGLE_OBJECT_MAGIC:
        raise DecodeError(
            f"not Avro single-object encoding (magic {data[:2].hex()})", reason="bad_magic"
        )
    writer = _by_fingerprint().get(data[2:HEADER_LEN])
    if writer is None:
        raise UnknownSchemaError(f"unknown schema fingerprint {data[2:HEADER_LEN].hex()}")
    reader = schema_entry(writer.record)
    writer.check(data, HEADER_LEN)  # DecodeError with a precise reason and field
    buf = io.BytesIO(data[HEADER_LEN:])
    try:
        value = fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
    except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
        raise DecodeError(f"malformed {writer.record} body: {exc!r}", reason="truncated") from exc
    if buf.tell() != len(data) - HEADER_LEN:
        raise DecodeError(
            f"{len(data) - HEADER_LEN - buf.tell()} trailing bytes after the {writer.record} body",
            reason="trailing_bytes",
        )
    if not isinstance(value, dict):
        raise DecodeError("decoded value is not a record")
    return writer.record, value


# --- dataclass <-> Avro dict ---------------------------------------------------------


def _ts(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def usage_event_to_avro(ev: UsageEvent) -> dict[str, Any]:
    m = ev.meters
    return {
        "event_id": ev.event_id,
        "tenant": ev.tenant,
        "request_id": ev.request_id,
        "node_id": ev.node_id,
        "span_id": ev.span_id,
        "parent_span_id": ev.parent_span_id,
        "branch_path": ev.branch_path,
        "workflow": ev.workflow,
        "model": ev.model,
        "provider": ev.provider,
        "sequence": ev.sequence,
        "meters": {
            "input_tokens": m.input_tokens,
            "output_tokens": m.output_tokens,
            "cached_input_tokens": m.cached_input_tokens,
            "cache_write_tokens": m.cache_write_tokens,
            "gpu_ms": m.gpu_ms,
            "gpu_type": m.gpu_type,
            "gpu_source": m.gpu_source.value,
            "cpu_ms": m.cpu_ms,
            "api_calls": m.api_calls,
            "custom": dict(m.custom),
        },
        "status": ev.status.value,
        "billable": ev.billable,
        "non_billable_reason": ev.non_billable_reason,
        "event_time": _ts(ev.event_time),
        "trace_id": ev.trace_id,
        "producer": ev.producer,
        "attributes": dict(ev.attributes),
    }


def usage_event_from_avro(d: Mapping[str, Any]) -> UsageEvent:
    m = d["meters"]
    return UsageEvent(
        event_id=d["event_id"],
        tenant=d["tenant"],
        request_id=d["request_id"],
        node_id=d["node_id"],
        span_id=d["span_id"],
        parent_span_id=d.get("parent_span_id"),
        branch_path=d.get("branch_path", ""),
        workflow=d.get("workflow", ""),
        model=d.get("model"),
        provider=d.get("provider"),
        sequence=d.get("sequence", 0),
        meters=Meters(
            input_tokens=m["input_tokens"],
            output_tokens=m["output_tokens"],
            cached_input_tokens=m["cached_input_tokens"],
            cache_write_tokens=m["cache_write_tokens"],
            gpu_ms=m["gpu_ms"],
            gpu_type=m["gpu_type"],
            gpu_source=GpuSource(m["gpu_source"]),
            cpu_ms=m["cpu_ms"],
            api_calls=m["api_calls"],
            custom=dict(m["custom"]),
        ),
        status=Status(d["status"]),
        billable=d["billable"],
        non_billable_reason=d.get("non_billable_reason"),
        event_time=_ts(d["event_time"]),
        attributes=dict(d.get("attributes") or {}),
        trace_id=d.get("trace_id"),
        producer=d.get("producer", ""),
    )


def request_end_to_avro(end: RequestEnd) -> dict[str, Any]:
    return {
        "event_id": end.event_id,
        "tenant": end.tenant,
        "request_id": end.request_id,
        "workflow": end.workflow,
        "root_span_id": end.root_span_id,
        "span_count": end.span_count,
        "status": end.status.value,
        "event_time": _ts(end.event_time),
        "attributes": dict(end.attributes),
    }


def request_end_from_avro(d: Mapping[str, Any]) -> RequestEnd:
    return RequestEnd(
        event_id=d["event_id"],
        tenant=d["tenant"],
        request_id=d["request_id"],
        workflow=d.get("workflow", ""),
        root_span_id=d["root_span_id"],
        span_count=d["span_count"],
        status=Status(d["status"]),
        event_time=_ts(d["event_time"]),
        attributes=dict(d.get("attributes") or {}),
    )


def encode_record(record: Record) -> bytes:
    if isinstance(record, UsageEvent):
        return encode_payload("usage_event", usage_event_to_avro(record))
    return encode_payload("request_end", request_end_to_avro(record))


def decode_record(data: bytes) -> Record:
    """Decode bytes from the usage topic into a UsageEvent or RequestEnd (no validation)."""
    name, value = decode_payload(data)
    try:
        if name == "usage_event":
            return usage_event_from_avro(value)
        if name == "request_end":
            return request_end_from_avro(value)
    except (KeyError, ValueError) as exc:
        raise DecodeError(f"{name} does not map to a nodemeter record: {exc!r}") from exc
    raise UnknownSchemaError(f"{name} records are not usage records")


def record_key(record: Record) -> bytes:
    """Kafka key: tenant + request_id, so a request's records share a partition."""
    return f"{record.tenant}/{record.request_id}".encode()
