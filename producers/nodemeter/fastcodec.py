"""A hand-written Avro encoder for the two records the SDK sends most.

Generic fastavro encoding walks the schema for every record and costs ~10 µs
per usage event, more than the whole raw ``produce()``. This module writes the
same bytes directly (byte-for-byte identical to ``codec.encode_record``, which
a hypothesis test checks) for the *latest* usage_event and request_end
schemas. At import it compares the schemas' field lists with what it writes;
if a newer schema version appears that it does not know, ``encode`` falls back
to the generic encoder, so it can never write a record the schema disagrees with.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import nodemeter_schemas
from nodemeter.codec import SINGLE_OBJECT_MAGIC, encode_record, schema_entry
from nodemeter.events import GpuSource, Record, Status, UsageEvent

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SMALL = [bytes([n << 1]) for n in range(64)]  # zigzag varints of 0..63: one byte
_STATUS = {s: _SMALL[i] for i, s in enumerate(Status)}
_GPU = {s: _SMALL[i] for i, s in enumerate(GpuSource)}
_STR_CACHE: dict[str, bytes] = {}
_STR_CACHE_MAX = 4096

USAGE_FIELDS = (
    "event_id", "tenant", "request_id", "node_id", "span_id", "parent_span_id",
    "branch_path", "workflow", "model", "provider", "sequence", "meters", "status",
    "billable", "non_billable_reason", "event_time", "trace_id", "producer", "attributes",
)  # fmt: skip
METER_FIELDS = (
    "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "gpu_ms",
    "gpu_type", "gpu_source", "cpu_ms", "api_calls", "custom",
)  # fmt: skip
END_FIELDS = (
    "event_id", "tenant", "request_id", "workflow", "root_span_id", "span_count", "status",
    "event_time", "attributes",
)  # fmt: skip


def _long(n: int) -> bytes:
    if 0 <= n < 64:
        return _SMALL[n]
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return _long(len(b)) + b


def _cstr(s: str) -> bytes:
    """_str for values that repeat (tenant, node, model, ...): cached."""
    out = _STR_CACHE.get(s)
    if out is None:
        if len(_STR_CACHE) >= _STR_CACHE_MAX:
            _STR_CACHE.clear()
        out = _STR_CACHE[s] = _str(s)
    return out


def _opt(s: str | None) -> bytes:
    return b"\x00" if s is None else b"\x02" + _cstr(s)


def _micros(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    d = dt - _EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def _smap(m: Mapping[str, str]) -> bytes:
    if not m:
        return b"\x00"
    parts = [_long(len(m))]
    for k, v in m.items():
        parts.append(_cstr(k))
        parts.append(_cstr(v))
    parts.append(b"\x00")
    return b"".join(parts)


def _lmap(m: Mapping[str, int]) -> bytes:
    if not m:
        return b"\x00"
    parts = [_long(len(m))]
    for k, v in m.items():
        parts.append(_cstr(k))
        parts.append(_long(v))
    parts.append(b"\x00")
    return b"".join(parts)


def _names(schema: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(f["name"] for f in schema["fields"])


def _supported() -> tuple[bytes | None, bytes | None]:
    """Headers (magic + fingerprint) of the latest schemas, or None where not supported."""
    usage = nodemeter_schemas.load("usage_event")
    meters = next(f["type"] for f in usage["fields"] if f["name"] == "meters")
    end = nodemeter_schemas.load("request_end")
    u = (
        SINGLE_OBJECT_MAGIC + schema_entry("usage_event").fingerprint
        if _names(usage) == USAGE_FIELDS and _names(meters) == METER_FIELDS
        else None
    )
    e = (
        SINGLE_OBJECT_MAGIC + schema_entry("request_end").fingerprint
        if _names(end) == END_FIELDS
        else None
    )
    return u, e


_USAGE_HEAD, _END_HEAD = _supported()


def encode(record: Record) -> bytes:
    """Same bytes as ``codec.encode_record(record)``, several times faster."""
    if isinstance(record, UsageEvent):
        if _USAGE_HEAD is None:
            return encode_record(record)
        m = record.meters
        return b"".join(
            (
                _USAGE_HEAD,
                _str(record.event_id),
                _cstr(record.tenant),
                _cstr(record.request_id),
                _cstr(record.node_id),
                _cstr(record.span_id),
                _opt(record.parent_span_id),
                _cstr(record.branch_path),
                _cstr(record.workflow),
                _opt(record.model),
                _opt(record.provider),
                _long(record.sequence),
                _long(m.input_tokens),
                _long(m.output_tokens),
                _long(m.cached_input_tokens),
                _long(m.cache_write_tokens),
                _long(m.gpu_ms),
                _cstr(m.gpu_type),
                _GPU[m.gpu_source],
                _long(m.cpu_ms),
                _long(m.api_calls),
                _lmap(m.custom),
                _STATUS[record.status],
                b"\x01" if record.billable else b"\x00",
                _opt(record.non_billable_reason),
                _long(_micros(record.event_time)),
                _opt(record.trace_id),
                _cstr(record.producer),
                _smap(record.attributes),
            )
        )
    if _END_HEAD is None:
        return encode_record(record)
    return b"".join(
        (
            _END_HEAD,
            _str(record.event_id),
            _cstr(record.tenant),
            _cstr(record.request_id),
            _cstr(record.workflow),
            _cstr(record.root_span_id),
            _long(record.span_count),
            _STATUS[record.status],
            _long(_micros(record.event_time)),
            _smap(record.attributes),
        )
    )
