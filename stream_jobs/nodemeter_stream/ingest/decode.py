"""Decode and validate one record from the usage topic into a value, never an exception.

``classify`` turns raw bytes plus their source position into either
:class:`Accepted` (a valid ``UsageEvent`` or ``RequestEnd``) or :class:`DeadLetter`
(reason code from ``DecodeError.reason`` / ``InvalidUsageError.reason``). A poison
message is data routed to the dead-letter topic, so the stream never stops for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from nodemeter.codec import decode_record
from nodemeter.errors import DecodeError, InvalidUsageError
from nodemeter.events import MAX_EVENT_BYTES, Record, UsageEvent, validate_record
from nodemeter.fastcodec import decode_valid_usage_event
from nodemeter.registry import decode_confluent
from nodemeter_stream.ingest.confluent import SchemaCache, schema_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """Where a record came from: the identity used for dead letters and insert tokens."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    record: Record
    source: Source
    payload: bytes  # the original bytes, forwarded unchanged


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    reason: str
    detail: str
    source: Source
    key: bytes
    payload: bytes
    tenant: str = ""
    event_id: str = ""


Classified = Accepted | DeadLetter


def classify(
    payload: bytes | None,
    *,
    key: bytes | None,
    source: Source,
    max_bytes: int = MAX_EVENT_BYTES,
    not_after: datetime | None = None,
    schemas: SchemaCache | None = None,
) -> Classified:
    """Decode + validate; every failure becomes a DeadLetter with a reason code.

    ``not_after``: the latest event time accepted (the worker's clock plus the allowed
    skew); a record dated later is a ``future_event_time`` dead letter, so that one
    event from a broken clock cannot move its tenant's pricing watermark ahead and
    close every window early."""
    raw = bytes(payload or b"")
    k = bytes(key or b"")
    if payload is None:
        return DeadLetter(
            reason="empty", detail="record has no value", source=source, key=k, payload=raw
        )
    if len(raw) > max_bytes:
        return DeadLetter(
            reason="oversize",
            detail=f"{len(raw)} bytes; the limit is {max_bytes}",
            source=source,
            key=k,
            payload=raw,
        )
    # the compiled decoder (decoded and validated), or None: anything else, and every
    # error with its reason, comes from the Python path below
    fast = decode_valid_usage_event(raw)
    if fast is not None:
        return _stored_or_dead(fast, source=source, key=k, payload=raw, not_after=not_after)
    try:
        if schema_id(raw) is not None:  # Confluent Schema Registry framing
            if schemas is None:
                raise DecodeError(
                    "Confluent Schema Registry framing (magic 0 + schema id), but the "
                    "worker has no registry: set NODEMETER_SCHEMA_REGISTRY_URL",
                    reason="registry_not_configured",
                )
            record = decode_confluent(raw, schemas)  # type: ignore[arg-type]
        else:
            record = decode_record(raw)
    except DecodeError as exc:
        return DeadLetter(reason=exc.reason, detail=str(exc), source=source, key=k, payload=raw)
    try:
        validate_record(record)
    except InvalidUsageError as exc:
        return DeadLetter(
            reason=exc.reason,
            detail=str(exc),
            source=source,
            key=k,
            payload=raw,
            tenant=record.tenant if isinstance(record.tenant, str) else "",
            event_id=record.event_id if isinstance(record.event_id, str) else "",
        )
    except (TypeError, ValueError, AttributeError) as exc:  # defensive: odd decoded types
        return DeadLetter(reason="invalid", detail=repr(exc), source=source, key=k, payload=raw)
    return _stored_or_dead(record, source=source, key=k, payload=raw, not_after=not_after)


def _stored_or_dead(
    record: Record, *, source: Source, key: bytes, payload: bytes, not_after: datetime | None
) -> Classified:
    problem = storage_problem(record)
    if problem is None and not_after is not None and record.event_time > not_after:
        problem = (
            FUTURE,
            f"event_time {record.event_time.isoformat()} is after {not_after.isoformat()} "
            "(the worker's clock plus max_future_skew_s): a producer clock ahead?",
        )
    if problem is not None:
        reason, detail = problem
        return DeadLetter(
            reason=reason,
            detail=detail,
            source=source,
            key=key,
            payload=payload,
            tenant=record.tenant,
            event_id=record.event_id,
        )
    return Accepted(record=record, source=source, payload=payload)


# What the ClickHouse columns can hold. A value outside would make every retry of the
# insert fail and stall the stream, so it is a dead letter here instead.
MAX_SEQUENCE = 2**32 - 1  # UInt32
FUTURE = "future_event_time"
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)  # DateTime64 ends in 2299


def storage_problem(record: Record) -> tuple[str, str] | None:
    if isinstance(record, UsageEvent) and record.sequence > MAX_SEQUENCE:
        return "invalid_sequence", f"sequence {record.sequence} exceeds {MAX_SEQUENCE}"
    if not EARLIEST <= record.event_time < LATEST:
        return "invalid_time", f"event_time {record.event_time.isoformat()} is out of range"
    return None
