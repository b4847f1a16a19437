"""CloudEvents 1.0 (JSON format, structured and batched) to nodemeter records. Pure.

The mapping (docs/http.md has it with examples):

    specversion   must be "1.0"
    type          dev.nodemeter.usage.v1 -> a usage event,
                  dev.nodemeter.request_end.v1 -> a request-end record
    id, source    required; event_id = event_id_of(source, id): 32 hex digits of
                  sha256("cloudevents" US source US id). CloudEvents makes source + id
                  unique per event, so two sources may share ids; the same event sent
                  again has the same event_id, and the pipeline drops it as a duplicate
    time          event_time (RFC 3339 with a zone); absent: the time it was received
    subject       "<tenant>/<request_id>" (optional; split at the first "/", which a
                  tenant cannot contain); fills tenant and request_id when data lacks
                  them, and must agree when data has them
    traceparent   (the distributed-tracing extension) gives trace_id when data has none
    datacontenttype  absent or application/json; data_base64 is refused
    data          an object with the fields of one ``nodemeter emit`` line
                  (emit_cli.record_from_json), without type, event_id and event_time,
                  which come from the context attributes above

A usage or request-end record without a tenant anywhere gets the API key's tenant.
The record is then validated by ``events.validate_record``: the rules are those of
``nodemeter emit`` and of the SDK, one set.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nodemeter import __version__
from nodemeter.emit_cli import record_from_json
from nodemeter.errors import InvalidUsageError
from nodemeter.events import MAX_ID_LEN, Record, utcnow, validate_record

USAGE_TYPE = "dev.nodemeter.usage.v1"
REQUEST_END_TYPE = "dev.nodemeter.request_end.v1"
TYPES: dict[str, str] = {USAGE_TYPE: "usage_event", REQUEST_END_TYPE: "request_end"}
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PRODUCER = f"nodemeter-ingest-http/{__version__}"

# data fields that come from context attributes, never from data
_FROM_CONTEXT = ("type", "event_id", "event_time")
_TRACEPARENT = re.compile(r"\A[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}\Z")


class BodyError(Exception):
    """The request body as a whole cannot be read as CloudEvents (``status``, ``reason``)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def media_type(content_type: str | None) -> str:
    """``application/cloudevents+json; charset=utf-8`` -> ``application/cloudevents+json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_body(body: bytes, content_type: str | None, *, max_events: int) -> list[Any]:
    """The events of a structured (one) or batched (a JSON array) request body.

    Raises ``BodyError``: 415 for another media type (binary mode included), 400 for a
    body that is not UTF-8 JSON of the right shape, 413 for more than ``max_events``."""
    kind = media_type(content_type)
    if kind not in (STRUCTURED, BATCH):
        raise BodyError(
            415,
            "unsupported_media_type",
            f"Content-Type must be {STRUCTURED} (one event) or {BATCH} (a JSON array); "
            f"got {kind or 'none'} (binary content mode is not supported)",
        )
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BodyError(400, "invalid_utf8", f"body is not UTF-8 (offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BodyError(400, "invalid_json", f"body is not JSON: {exc}") from None
    except RecursionError:
        raise BodyError(400, "invalid_json", "JSON nested too deeply") from None
    if kind == STRUCTURED:
        if not isinstance(doc, dict):
            raise BodyError(400, "invalid_event", f"{STRUCTURED} must be one JSON object")
        return [doc]
    if not isinstance(doc, list):
        raise BodyError(400, "invalid_batch", f"{BATCH} must be a JSON array of events")
    if len(doc) > max_events:
        raise BodyError(
            413, "too_many_events", f"batch has {len(doc)} events; the limit is {max_events}"
        )
    return doc


def event_id_of(source: str, ce_id: str) -> str:
    """The nodemeter event id of the CloudEvent ``source`` + ``id``."""
    raw = f"cloudevents\x1f{source}\x1f{ce_id}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def ce_id_of(event: Any) -> str | None:
    """The event's ``id`` when it has a usable one (for error reports), else None."""
    ce_id = event.get("id") if isinstance(event, dict) else None
    return ce_id if isinstance(ce_id, str) and ce_id else None


def _bad(message: str, reason: str) -> InvalidUsageError:
    return InvalidUsageError(message, reason=reason)


def _context_string(event: dict[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise _bad(f"CloudEvents attribute {name!r} is required (a string)", f"missing_{name}")
    if len(value) > MAX_ID_LEN:
        raise _bad(f"{name} is {len(value)} chars; the limit is {MAX_ID_LEN}", "oversize")
    return value


def _agree(fields: dict[str, Any], name: str, value: str, origin: str) -> None:
    given = fields.get(name)
    if given in (None, ""):
        fields[name] = value
    elif given != value:
        raise _bad(
            f"data.{name} {given!r} disagrees with {origin} ({value!r})", "conflicting_field"
        )


def to_record(
    event: Any,
    *,
    default_tenant: str | None = None,
    now: Callable[[], datetime] = utcnow,
    validate: bool = True,
) -> Record:
    """One CloudEvent (a parsed JSON object) as a validated record.

    Raises ``InvalidUsageError`` with the reason code of the first rule it breaks.
    ``validate=False`` leaves ``events.validate_record`` to the caller (the service's
    ``Meter.emit_settled`` runs it, in the compiled encoder when installed)."""
    if not isinstance(event, dict):
        raise _bad("each event must be a JSON object", "invalid_event")
    if event.get("specversion") != "1.0":
        raise _bad(
            f"specversion must be '1.0', got {event.get('specversion')!r}", "invalid_specversion"
        )
    ce_id = _context_string(event, "id")
    source = _context_string(event, "source")
    ce_type = event.get("type")
    kind = TYPES.get(ce_type) if isinstance(ce_type, str) else None
    if kind is None:
        raise _bad(f"type must be one of {sorted(TYPES)}, got {ce_type!r}", "invalid_type")
    content = event.get("datacontenttype")
    if content is not None and media_type(str(content)) != "application/json":
        raise _bad(f"datacontenttype must be application/json, got {content!r}", "invalid_data")
    if "data_base64" in event:
        raise _bad("data_base64 is not accepted: send data as a JSON object", "invalid_data")
    data = event.get("data")
    if not isinstance(data, dict):
        raise _bad("data must be a JSON object with the usage fields", "invalid_data")
    taken = [k for k in _FROM_CONTEXT if k in data]
    if taken:
        raise _bad(
            f"data must not carry {taken}: they come from the CloudEvents type, id and time",
            "conflicting_field",
        )
    fields = dict(data)
    subject = event.get("subject")
    if subject is not None:
        if not isinstance(subject, str) or "/" not in subject:
            raise _bad(
                f"subject must be '<tenant>/<request_id>', got {subject!r}", "invalid_subject"
            )
        tenant, request_id = subject.split("/", 1)
        _agree(fields, "tenant", tenant, "subject")
        _agree(fields, "request_id", request_id, "subject")
    if not fields.get("tenant") and default_tenant is not None:
        fields["tenant"] = default_tenant
    fields["type"] = kind
    fields["event_id"] = event_id_of(source, ce_id)
    if "time" in event:
        if not isinstance(event["time"], str):
            raise _bad("time must be an RFC 3339 string", "invalid_time")
        fields["event_time"] = event["time"]
    trace = event.get("traceparent")
    if kind == "usage_event" and not fields.get("trace_id") and trace is not None:
        m = _TRACEPARENT.fullmatch(trace) if isinstance(trace, str) else None
        if m is None:
            raise _bad(f"traceparent is not a W3C traceparent: {trace!r}", "invalid_traceparent")
        fields["trace_id"] = m[1]
    record = record_from_json(fields, now=now, producer=PRODUCER)
    if validate:
        validate_record(record)
    return record


@dataclass(frozen=True, slots=True)
class Refusal:
    """An event of a request that was not taken, and why."""

    index: int
    ce_id: str | None
    reason: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.ce_id,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Mapped:
    """An event that became a valid record of the key's tenant."""

    index: int
    ce_id: str
    record: Record


def map_events(
    events: list[Any],
    *,
    tenant: str,
    now: Callable[[], datetime] = utcnow,
    validate: bool = True,
) -> tuple[list[Mapped], list[Refusal]]:
    """Each event of a request as a record of ``tenant`` (the API key's), or a refusal.

    An event naming another tenant is refused (``tenant_not_allowed``); an event id
    given twice in one request is refused on its second event (``duplicate_event_id``),
    as ``nodemeter emit`` does for a second line. ``validate``: as for ``to_record``."""
    mapped: list[Mapped] = []
    refused: list[Refusal] = []
    seen: set[str] = set()
    for index, event in enumerate(events):
        ce_id = ce_id_of(event)
        try:
            record = to_record(event, default_tenant=tenant, now=now, validate=validate)
            if record.tenant != tenant:
                raise _bad(
                    f"tenant {record.tenant!r} is not the API key's tenant", "tenant_not_allowed"
                )
            if record.event_id in seen:
                raise _bad(
                    f"source + id {ce_id!r} appears twice in this request", "duplicate_event_id"
                )
        except InvalidUsageError as exc:
            refused.append(Refusal(index, ce_id, exc.reason, str(exc)))
            continue
        except Exception as exc:  # as in `nodemeter emit`: a bad event never stops the rest
            why = f"invalid ({type(exc).__name__})"
            refused.append(Refusal(index, ce_id, "invalid_event", f"{why}: {exc}"[:500]))
            continue
        seen.add(record.event_id)
        mapped.append(Mapped(index, ce_id or "", record))
    return mapped, refused
