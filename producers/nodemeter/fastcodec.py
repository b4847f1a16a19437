"""A hand-written Avro encoder for the two records the SDK sends most.

Generic fastavro encoding walks the schema for every record and costs ~10 µs
per usage event, more than the whole raw ``produce()``. This module writes the
same bytes directly (byte-for-byte identical to ``codec.encode_record``, which
a hypothesis test checks) for the *latest* usage_event and request_end
schemas. At import it compares the schemas' field lists with what it writes;
if a newer schema version appears that it does not know, ``encode`` falls back
to the generic encoder, so it can never write a record the schema disagrees with.

The emit path uses ``validate_and_encode`` / ``encode_with_key``: validation,
encoding and the Kafka key in one call. They are the compiled extension
``nodemeter_native`` (Rust, ``producers/native``) when it is installed and
accepts these schemas (``NATIVE`` is then True), else the Python functions here;
both give the same bytes and raise the same errors (property tests check it).
``NODEMETER_NATIVE=0`` forces the Python path.

The stream worker's decode path is here too: ``decode_record`` (``codec.decode_record``
with usage events decoded by compiled code), and ``decode_usage_event`` /
``decode_valid_usage_event``, which return a ``UsageEvent`` for the plain case and
None for everything else (other records, odd or malformed bytes, and for the second
any event ``events.validate_record`` might refuse), so that the caller's usual path,
with its errors, handles those. ``NATIVE_DECODE`` says whether they run compiled
code; without it they always return None.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import nodemeter_schemas
from nodemeter import events
from nodemeter.codec import SINGLE_OBJECT_MAGIC, encode_record, record_key, schema_entry
from nodemeter.codec import decode_record as python_decode_record
from nodemeter.events import GpuSource, Meters, Record, RequestEnd, Status, UsageEvent

log = logging.getLogger("nodemeter")

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


# --- the emit path: validate + encode + key in one call ---------------------------------

Encoded = tuple[bytes, bytes]  # (Kafka key, value)


def python_encode_with_key(record: Record) -> Encoded:
    return record_key(record), encode(record)


def python_validate_and_encode(record: Record) -> Encoded:
    """The pure-Python path: ``events.validate_record``, then ``encode``."""
    events.validate_record(record)
    return python_encode_with_key(record)


def native_settings() -> dict[str, Any]:
    """What ``nodemeter_native.configure`` takes: these classes, schemas and rules."""
    return {
        "usage_event": UsageEvent,
        "meters": Meters,
        "request_end": RequestEnd,
        "status": list(Status),
        "gpu_source": list(GpuSource),
        "usage_head": _USAGE_HEAD,
        "end_head": _END_HEAD,
        "usage_fields": USAGE_FIELDS,
        "meter_fields": METER_FIELDS,
        "end_fields": END_FIELDS,
        "limits": dict(events.LIMITS),
        "max_id_len": events.MAX_ID_LEN,
        "max_attributes": events.MAX_ATTRIBUTES,
        "max_attribute_len": events.MAX_ATTRIBUTE_LEN,
        "max_custom_meters": events.MAX_CUSTOM_METERS,
        "tenant_pattern": events._TENANT_RE.pattern,
        "custom_pattern": events._CUSTOM_RE.pattern,
        "slow_validated": python_validate_and_encode,
        "slow_plain": python_encode_with_key,
    }


def _load_native() -> ModuleType | None:
    if os.environ.get("NODEMETER_NATIVE", "").strip().lower() in ("0", "false", "no", "off"):
        log.debug("nodemeter: NODEMETER_NATIVE=0: pure-Python encoder")
        return None
    if _USAGE_HEAD is None or _END_HEAD is None:
        log.debug("nodemeter: schemas newer than the hand-written encoders: generic encoder")
        return None
    try:
        import nodemeter_native
    except ImportError:
        log.debug("nodemeter: nodemeter_native not installed: pure-Python encoder")
        return None
    try:
        nodemeter_native.configure(**native_settings())
    except Exception as exc:  # a build older or newer than these events
        log.warning("nodemeter: nodemeter_native does not match this SDK (%s): pure-Python", exc)
        return None
    log.debug("nodemeter: compiled encoder nodemeter_native in use")
    return nodemeter_native


_native = _load_native()
NATIVE: bool = _native is not None
"""True when ``validate_and_encode`` / ``encode_with_key`` run compiled code."""

validate_and_encode: Callable[[Record], Encoded] = (
    _native.validate_encode if _native is not None else python_validate_and_encode
)
"""Validate (``InvalidUsageError`` as ``events.validate_record``), encode: (key, value)."""

encode_with_key: Callable[[Record], Encoded] = (
    _native.encode if _native is not None else python_encode_with_key
)
"""Encode a record validated earlier (no validation errors): (key, value)."""


# --- the stream worker's decode path ------------------------------------------------------


def python_decode_usage_event(data: bytes) -> UsageEvent | None:
    """Without the compiled decoder: None, so that the caller takes its usual path."""
    return None


def native_decoder_settings() -> dict[str, Any]:
    """What ``nodemeter_native.configure_decoder`` takes: the usage_event schemas read."""
    return {
        "usage_v1_head": SINGLE_OBJECT_MAGIC + schema_entry("usage_event", 1).fingerprint,
        "usage_v2_head": SINGLE_OBJECT_MAGIC + schema_entry("usage_event", 2).fingerprint,
        "latest_usage_version": nodemeter_schemas.latest_version("usage_event"),
        "slow_decode": python_decode_record,
    }


def _load_native_decoder(native: ModuleType | None) -> ModuleType | None:
    if native is None:
        return None
    if not hasattr(native, "configure_decoder"):
        log.debug("nodemeter: nodemeter_native has no decoder (older build): Python decoder")
        return None
    try:
        native.configure_decoder(**native_decoder_settings())
    except Exception as exc:  # schemas newer than the compiled decoder
        log.warning("nodemeter: compiled decoder does not match these schemas (%s): Python", exc)
        return None
    log.debug("nodemeter: compiled decoder nodemeter_native in use")
    return native


_native_decoder = _load_native_decoder(_native)
NATIVE_DECODE: bool = _native_decoder is not None
"""True when the decode functions below run compiled code."""

decode_record: Callable[[bytes], Record] = (
    _native_decoder.decode_record if _native_decoder is not None else python_decode_record
)
"""``codec.decode_record``: same records (==), same ``DecodeError``s; usage events compiled."""

decode_usage_event: Callable[[bytes], UsageEvent | None] = (
    _native_decoder.decode_usage_event if _native_decoder is not None else python_decode_usage_event
)
"""The ``UsageEvent`` ``codec.decode_record(data)`` gives, or None: decode it the usual way."""

decode_valid_usage_event: Callable[[bytes], UsageEvent | None] = (
    _native_decoder.decode_valid_usage_event
    if _native_decoder is not None
    else python_decode_usage_event
)
"""As ``decode_usage_event``, for events that pass ``events.validate_record`` only."""
