"""``nodemeter emit``: read usage records as JSON lines on stdin and send them.

For services in other languages and for scripts. One JSON object per line:

    {"tenant": "acme", "request_id": "r1", "node_id": "ocr", "meters": {"gpu_ms": 840,
     "gpu_source": "MEASURED", "gpu_type": "L4"}, "model": "doctr"}
    {"type": "request_end", "tenant": "acme", "request_id": "r1", "span_count": 1}

Usage fields: tenant, request_id, node_id (required); span_id (default: node_id),
sequence, event_id (default: derived from tenant, request, span and sequence, so
re-running the script re-sends the same ids), parent_span_id, branch_path, workflow,
model, provider, status, billable, non_billable_reason, event_time (ISO 8601 with a
zone; default now), attributes, trace_id, and meters (an object; its fields may also
be given at the top level; ``custom`` is an object of name -> integer).

Without ``sequence``, the records of one span are numbered in input order (0, 1, ...
per tenant, request and span), as the SDK numbers ``record()`` calls: two lines for
the same node are two records, and a re-run of the same input sends the same ids. A
rejected line keeps its number, so fixing it and re-running changes no other id. An
event id given twice in one input (same explicit ``sequence`` or ``event_id``) is
refused on its second line: the pipeline would drop it as a duplicate.

Each bad line (not JSON, not UTF-8, longer than ``--max-line-bytes``, invalid) is
reported as ``line N: reason: detail`` and skipped; the run goes on. Exit status:

    0  every line valid, every record delivered
    1  some lines rejected; every valid record delivered
    2  bad arguments
    3  delivery failed: records were spooled (a later run with the same spool
       directory, or ``Meter.replay()``, re-sends them)
    4  records lost (neither delivered nor spooled) or stdin unreadable

The highest that applies wins. ``--dry-run`` exits 0 or 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

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
# A usage record encodes to at most MAX_EVENT_BYTES (64 KiB); its JSON, with escapes,
# stays well under this. Longer lines are refused without being held in memory.
MAX_LINE_BYTES = 1024 * 1024

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_SPOOLED = 3
EXIT_LOST = 4


@dataclass(frozen=True)
class LineTooLong:
    """A line over the cap, read past and dropped; ``size`` bytes (newline excluded)."""

    size: int
    limit: int = MAX_LINE_BYTES


def read_lines(stream: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes | LineTooLong]:
    """The lines of a byte stream, each at most ``max_bytes``; a longer one is skipped to
    its end and given as ``LineTooLong`` (memory stays under ``max_bytes`` per line)."""
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        if len(line) <= max_bytes or (len(line) == max_bytes + 1 and line.endswith(b"\n")):
            yield line
            continue
        size = len(line)
        while not line.endswith(b"\n"):
            line = stream.readline(64 * 1024)
            if not line:
                break
            size += len(line)
        yield LineTooLong(size - (1 if line.endswith(b"\n") else 0), max_bytes)


@dataclass
class _Numbering:
    """Sequences for lines without one, and the event ids seen (as 16-byte digests,
    with the line that first had each)."""

    used: dict[tuple[str, str, str], set[int]] = field(default_factory=dict)
    next_free: dict[tuple[str, str, str], int] = field(default_factory=dict)
    ids: dict[bytes, int] = field(default_factory=dict)

    def claim(self, key: tuple[str, str, str], sequence: int | None) -> int:
        used = self.used.setdefault(key, set())
        if sequence is None:
            sequence = self.next_free.get(key, 0)
            while sequence in used:
                sequence += 1
            self.next_free[key] = sequence + 1
        used.add(sequence)
        return sequence

    def first_line_of(self, event_id: str, lineno: int) -> int | None:
        digest = hashlib.blake2b(event_id.encode(), digest_size=16).digest()
        first = self.ids.setdefault(digest, lineno)
        return None if first == lineno else first


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
            reason="invalid_gpu_source" if kind is GpuSource else "invalid_status",
        ) from None


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):  # "false" must not silently mean True
        raise InvalidUsageError(
            f"billable must be true or false, got {value!r}", reason="invalid_billable"
        )
    return value


def _custom(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidUsageError(
            f"custom must be an object of name -> integer, got {type(value).__name__}",
            reason="invalid_meter",
        )
    return value


def record_from_json(
    obj: Any,
    *,
    now: Callable[[], datetime] = utcnow,
    sequence_for: Callable[[tuple[str, str, str], int | None], int] | None = None,
    producer: str = PRODUCER,
) -> Record:
    """Build (not yet validate) a record from one parsed JSON line.

    ``sequence_for(key, given)``: the sequence of a usage record (``given`` is the
    line's own or None); without it a line without ``sequence`` gets 0. ``producer``:
    what a usage record names as its producer (``nodemeter ingest-http`` has its own)."""
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
    if not isinstance(span_id, str):
        raise InvalidUsageError("span_id must be a string", reason="invalid_id")
    given = obj.get("sequence")
    if given is not None and (isinstance(given, bool) or not isinstance(given, int)):
        raise InvalidUsageError("sequence must be an integer", reason="invalid_sequence")
    if sequence_for is not None and not obj.get("event_id"):
        sequence = sequence_for((tenant, request_id, span_id), given)
    else:
        sequence = 0 if given is None else given
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
        custom=_custom(m.get("custom")),
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
        producer=producer,
    )


def _record_of(line: str | bytes | LineTooLong, lineno: int, numbering: _Numbering) -> Record:
    """One line's record, or InvalidUsageError with the reason it is refused."""
    if isinstance(line, LineTooLong):
        raise InvalidUsageError(
            f"line is {line.size} bytes; the limit is {line.limit} (--max-line-bytes)",
            reason="line_too_long",
        )
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidUsageError(
                f"not UTF-8 (byte {line[exc.start]:#04x} at offset {exc.start})",
                reason="invalid_utf8",
            ) from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidUsageError(str(exc), reason="invalid_json") from None
    except RecursionError:
        raise InvalidUsageError("JSON nested too deeply", reason="invalid_json") from None
    record = record_from_json(obj, sequence_for=numbering.claim)
    validate_record(record)
    first = numbering.first_line_of(record.event_id, lineno)
    if first is not None:
        raise InvalidUsageError(
            f"event id {record.event_id} was already sent from line {first}: the pipeline "
            "would drop this record as a duplicate; give it its own sequence (or leave "
            "sequence and event_id out to number the span's records in order)",
            reason="duplicate_event_id",
        )
    return record


def emit_lines(
    lines: Iterable[str | bytes | LineTooLong], send: Callable[[Record], None], errors: TextIO
) -> tuple[int, int]:
    """Parse, validate and send each line; returns (sent, rejected).

    A line that cannot become a valid record is reported (``line N: reason: detail``)
    and skipped, whatever went wrong with it. ``send`` refusing a record (too large
    once encoded) rejects its line; any other error from ``send`` is a delivery
    failure and propagates."""
    sent = rejected = 0
    numbering = _Numbering()
    for lineno, line in enumerate(lines, 1):
        if not isinstance(line, LineTooLong) and not line.strip():
            continue
        try:
            record = _record_of(line, lineno, numbering)
        except Exception as exc:  # a bad line never stops the run (RecursionError too)
            rejected += 1
            reason = getattr(exc, "reason", None) or f"invalid ({type(exc).__name__})"
            print(f"line {lineno}: {reason}: {exc}", file=errors)
            continue
        try:
            send(record)
        except InvalidUsageError as exc:
            rejected += 1
            print(f"line {lineno}: {exc.reason}: {exc}", file=errors)
            continue
        sent += 1
    return sent, rejected


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default: $NODEMETER_KAFKA_BOOTSTRAP)"
    )
    parser.add_argument(
        "--topic", help="usage topic (default: nodemeter.usage.v1 with $NODEMETER_TOPIC_PREFIX)"
    )
    parser.add_argument(
        "--spool-dir",
        type=Path,
        help="spool directory (default: $NODEMETER_SPOOL_DIR or ~/.local/state/nodemeter/spool)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and encode only; print event ids, send nothing",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery")
    parser.add_argument(
        "--max-line-bytes",
        type=int,
        default=MAX_LINE_BYTES,
        help=f"longer lines are rejected unread (default {MAX_LINE_BYTES})",
    )


def _stdin(max_bytes: int) -> Iterator[bytes | LineTooLong]:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream (tests): its lines, encoded back
        return (line.encode("utf-8", "surrogateescape") for line in sys.stdin)
    return read_lines(stream, max_bytes)


def run(args: argparse.Namespace) -> int:
    if args.max_line_bytes < 1:
        print("nodemeter emit: --max-line-bytes must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(args)
    except OSError as exc:  # stdin unreadable
        print(f"nodemeter emit: cannot read stdin: {exc}", file=sys.stderr)
        return EXIT_LOST


def _run(args: argparse.Namespace) -> int:
    if args.dry_run:
        from nodemeter.codec import encode_record

        def show(record: Record) -> None:
            encode_record(record)
            print(record.event_id)

        sent, rejected = emit_lines(_stdin(args.max_line_bytes), show, sys.stderr)
        print(f"nodemeter emit: {sent} valid, {rejected} rejected (dry run)", file=sys.stderr)
        return EXIT_REJECTED if rejected else EXIT_OK

    from nodemeter.meter import Meter, MeterConfig

    kwargs: dict[str, Any] = {"producer_name": PRODUCER}
    if args.bootstrap:
        kwargs["bootstrap_servers"] = args.bootstrap
    if args.topic:
        kwargs["topic"] = args.topic
    if args.spool_dir:
        kwargs["spool_dir"] = args.spool_dir
    meter = Meter(MeterConfig(**kwargs))
    failure = None
    sent = rejected = 0
    try:
        sent, rejected = emit_lines(_stdin(args.max_line_bytes), meter.emit_validated, sys.stderr)
        meter.flush(args.timeout)
    except NodemeterError as exc:  # the meter could not take a record
        failure = exc
    finally:
        meter.close(timeout=args.timeout)
    stats = meter.stats
    print(
        f"nodemeter emit: {sent} sent, {rejected} rejected; delivered {stats.delivered}, "
        f"spooled {stats.spooled}, lost {stats.lost}",
        file=sys.stderr,
    )
    if failure is not None or stats.lost:
        why = failure or f"{stats.lost} records could neither be delivered nor spooled"
        print(f"nodemeter emit: error: {why}", file=sys.stderr)
        return EXIT_LOST
    if stats.spooled:
        print(
            f"nodemeter emit: delivery failed: {stats.spooled} records spooled to "
            f"{meter.config.spool_dir}; a later run with the same spool directory "
            "re-sends them",
            file=sys.stderr,
        )
        return EXIT_SPOOLED
    return EXIT_REJECTED if rejected else EXIT_OK
