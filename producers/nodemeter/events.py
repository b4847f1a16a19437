"""Usage records as plain, immutable values, and the rules they must obey.

``UsageEvent`` and ``RequestEnd`` mirror the Avro schemas in ``schemas/``.
``validate_*`` raise :class:`InvalidUsageError` with a short ``reason`` code that
the SDK shows the caller and the worker puts on dead-letter records.
Pure: no Kafka, no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from nodemeter.errors import InvalidUsageError, OversizeEventError


class Status(StrEnum):
    OK = "OK"
    ERROR = "ERROR"
    PARTIAL = "PARTIAL"


class GpuSource(StrEnum):
    NONE = "NONE"
    MEASURED = "MEASURED"
    ESTIMATED = "ESTIMATED"


# Upper bounds for one usage record. Anything above is treated as a bug in the
# caller (a unit mix-up, an uninitialised counter), not as usage.
LIMITS: Mapping[str, int] = {
    "input_tokens": 50_000_000,
    "output_tokens": 50_000_000,
    "cached_input_tokens": 50_000_000,
    "cache_write_tokens": 50_000_000,
    "gpu_ms": 7 * 24 * 3_600_000,  # a week of one GPU
    "cpu_ms": 7 * 24 * 3_600_000 * 256,
    "api_calls": 10_000_000,
    "custom": 10**15,
}
MAX_ID_LEN = 256
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_LEN = 2048
MAX_CUSTOM_METERS = 32
MAX_EVENT_BYTES = 64 * 1024
# \A...\Z, not ^...$: `$` also matches before a final "\n", and "acme\n" would pass
# as a tenant of its own (priced on the default plan, hidden from acme's reports).
# The compiled encoder (producers/native) implements these exact patterns.
_TENANT_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}\Z")
_CUSTOM_RE = re.compile(r"\A[a-z][a-z0-9_.]{0,63}\Z")

METER_NAMES: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "gpu_ms",
    "cpu_ms",
    "api_calls",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Meters:
    """Metered quantities of one usage record; integers in the unit each name says.

    ``input_tokens`` excludes cache reads: those are ``cached_input_tokens``, so a
    token is counted (and charged) once.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    gpu_ms: int = 0
    gpu_type: str = ""
    gpu_source: GpuSource = GpuSource.NONE
    cpu_ms: int = 0
    api_calls: int = 0
    custom: Mapping[str, int] = field(default_factory=dict)

    def quantities(self) -> dict[str, int]:
        """Non-zero quantities keyed by meter name (``custom:<name>`` for custom)."""
        out = {name: getattr(self, name) for name in METER_NAMES if getattr(self, name)}
        for name, qty in self.custom.items():
            if qty:
                out[f"custom:{name}"] = qty
        return out

    def is_zero(self) -> bool:
        return not self.quantities()

    def __add__(self, other: Meters) -> Meters:
        custom = dict(self.custom)
        for k, v in other.custom.items():
            custom[k] = custom.get(k, 0) + v
        return Meters(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            gpu_ms=self.gpu_ms + other.gpu_ms,
            gpu_type=self.gpu_type or other.gpu_type,
            gpu_source=self.gpu_source if self.gpu_source != GpuSource.NONE else other.gpu_source,
            cpu_ms=self.cpu_ms + other.cpu_ms,
            api_calls=self.api_calls + other.api_calls,
            custom=custom,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageEvent:
    event_id: str
    tenant: str
    request_id: str
    node_id: str
    span_id: str
    event_time: datetime
    parent_span_id: str | None = None
    branch_path: str = ""
    workflow: str = ""
    model: str | None = None
    provider: str | None = None
    sequence: int = 0
    meters: Meters = field(default_factory=Meters)
    status: Status = Status.OK
    billable: bool = True
    non_billable_reason: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    # Schema v2 (both default, so v1 readers and writers keep working).
    trace_id: str | None = None
    producer: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestEnd:
    event_id: str
    tenant: str
    request_id: str
    root_span_id: str
    span_count: int
    event_time: datetime
    workflow: str = ""
    status: Status = Status.OK
    attributes: Mapping[str, str] = field(default_factory=dict)


Record = UsageEvent | RequestEnd


def event_id_for(tenant: str, request_id: str, span_id: str, sequence: int) -> str:
    """Deterministic event id: the same span and sequence always give the same id."""
    raw = f"{tenant}\x1f{request_id}\x1f{span_id}\x1f{sequence}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def request_end_id(tenant: str, request_id: str) -> str:
    return event_id_for(tenant, request_id, "__end__", 0)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- validation -------------------------------------------------------------------


def _bad(msg: str, reason: str) -> InvalidUsageError:
    return InvalidUsageError(msg, reason=reason)


def _check_id(name: str, value: Any, *, required: bool = True) -> None:
    if value is None or value == "":
        if required:
            raise _bad(f"{name} is required", f"missing_{name}")
        return
    if not isinstance(value, str):
        raise _bad(f"{name} must be a string, got {type(value).__name__}", f"invalid_{name}")
    if len(value) > MAX_ID_LEN:
        raise OversizeEventError(f"{name} is {len(value)} chars; the limit is {MAX_ID_LEN}")


def validate_tenant(tenant: Any) -> None:
    _check_id("tenant", tenant)
    if not _TENANT_RE.fullmatch(tenant):
        raise _bad(
            f"tenant {tenant!r} must match {_TENANT_RE.pattern} (letters, digits, _ . : @ -)",
            "invalid_tenant",
        )


def validate_quantity(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name} must be an integer, got {value!r}", "invalid_quantity")
    if value < 0:
        raise _bad(f"{name} must not be negative, got {value}", "negative_quantity")
    limit = LIMITS["custom" if name.startswith("custom:") else name]
    if value > limit:
        raise _bad(f"{name}={value} exceeds the per-record limit {limit}", "absurd_quantity")


def validate_meters(meters: Meters) -> None:
    if not isinstance(meters, Meters):
        raise _bad(f"meters must be a Meters, got {type(meters).__name__}", "invalid_meters")
    for name in METER_NAMES:
        validate_quantity(name, getattr(meters, name))
    if not isinstance(meters.custom, Mapping):
        raise _bad("custom meters must map names to integers", "invalid_meter")
    if len(meters.custom) > MAX_CUSTOM_METERS:
        raise OversizeEventError(
            f"{len(meters.custom)} custom meters; the limit is {MAX_CUSTOM_METERS}"
        )
    for cname, qty in meters.custom.items():
        if not isinstance(cname, str) or not _CUSTOM_RE.fullmatch(cname):
            raise _bad(
                f"custom meter name {cname!r} must match {_CUSTOM_RE.pattern}", "invalid_meter"
            )
        validate_quantity(f"custom:{cname}", qty)
    if not _member(meters.gpu_source, GpuSource):
        raise _bad(
            f"gpu_source must be one of {[s.value for s in GpuSource]}, got {meters.gpu_source!r}",
            "invalid_gpu_source",
        )
    if meters.gpu_ms and meters.gpu_source == GpuSource.NONE:
        raise _bad("gpu_ms given without gpu_source (MEASURED or ESTIMATED)", "invalid_gpu_source")
    if not isinstance(meters.gpu_type, str):
        raise _bad("gpu_type must be a string", "invalid_gpu_type")
    if len(meters.gpu_type) > MAX_ID_LEN:
        raise OversizeEventError("gpu_type too long")


def _member(value: Any, enum: type[StrEnum]) -> bool:
    """A member of ``enum``, or the plain string of one (the encoders take both)."""
    return isinstance(value, str) and value in enum._value2member_map_


def validate_attributes(attributes: Mapping[str, str]) -> None:
    if not isinstance(attributes, Mapping):
        raise _bad("attributes must map strings to strings", "invalid_attributes")
    if len(attributes) > MAX_ATTRIBUTES:
        raise OversizeEventError(f"{len(attributes)} attributes; the limit is {MAX_ATTRIBUTES}")
    for k, v in attributes.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise _bad("attributes must map strings to strings", "invalid_attributes")
        if len(k) > MAX_ID_LEN or len(v) > MAX_ATTRIBUTE_LEN:
            raise OversizeEventError(
                f"attribute {k[:40]!r} is too long (key ≤ {MAX_ID_LEN}, value ≤ {MAX_ATTRIBUTE_LEN} chars)"
            )


def _validate_time(value: Any) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _bad("event_time must be a timezone-aware datetime", "invalid_time")


def _validate_status(value: Any) -> None:
    if not _member(value, Status):
        raise _bad(
            f"status must be one of {[s.value for s in Status]}, got {value!r}", "invalid_status"
        )


def _check_text(name: str, value: Any) -> None:
    """A string field that may be empty (branch_path, workflow, producer)."""
    if not isinstance(value, str):
        raise _bad(f"{name} must be a string, got {type(value).__name__}", f"invalid_{name}")


def validate_usage_event(event: UsageEvent) -> None:
    """Raise InvalidUsageError (with a reason code) unless the event is acceptable."""
    validate_tenant(event.tenant)
    for name in ("event_id", "request_id", "node_id", "span_id"):
        _check_id(name, getattr(event, name))
    _check_id("parent_span_id", event.parent_span_id, required=False)
    _check_id("workflow", event.workflow, required=False)
    _check_id("model", event.model, required=False)
    _check_id("provider", event.provider, required=False)
    _check_id("trace_id", event.trace_id, required=False)
    _check_id("producer", event.producer, required=False)
    for name in ("branch_path", "workflow", "producer"):
        _check_text(name, getattr(event, name))
    if len(event.branch_path) > MAX_ID_LEN:
        raise OversizeEventError("branch_path too long")
    sequence = event.sequence
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise _bad(f"sequence must be an integer, got {sequence!r}", "invalid_sequence")
    if sequence < 0:
        raise _bad("sequence must not be negative", "invalid_sequence")
    _validate_status(event.status)
    if not isinstance(event.billable, bool):
        # "no" or 0 would be sent as whatever its truth value is: refuse, do not guess
        raise _bad(f"billable must be True or False, got {event.billable!r}", "invalid_billable")
    reason = event.non_billable_reason
    if reason is not None and not isinstance(reason, str):
        raise _bad("non_billable_reason must be a string", "invalid_non_billable_reason")
    _validate_time(event.event_time)
    validate_meters(event.meters)
    validate_attributes(event.attributes)


def validate_request_end(end: RequestEnd) -> None:
    validate_tenant(end.tenant)
    for name in ("event_id", "request_id", "root_span_id"):
        _check_id(name, getattr(end, name))
    _check_text("workflow", end.workflow)
    _validate_status(end.status)
    if (
        isinstance(end.span_count, bool)
        or not isinstance(end.span_count, int)
        or end.span_count < 0
    ):
        raise _bad(
            f"span_count must be a non-negative integer, got {end.span_count!r}",
            "invalid_span_count",
        )
    if end.span_count > 1_000_000:
        raise _bad(f"span_count={end.span_count} is absurd", "absurd_quantity")
    _validate_time(end.event_time)
    validate_attributes(end.attributes)


def validate_record(record: Record) -> None:
    """The one rule set: the SDK refuses what the worker would dead-letter (it calls this)."""
    if isinstance(record, UsageEvent):
        validate_usage_event(record)
    elif isinstance(record, RequestEnd):
        validate_request_end(record)
    else:
        raise _bad(
            f"expected a UsageEvent or RequestEnd, got {type(record).__name__}", "invalid_record"
        )
