"""``nodemeter dlq list|stats|redrive``: read the dead-letter topic, and send dead letters
back to the usage topic once their cause is fixed.

    nodemeter dlq stats
    nodemeter dlq list --reason future_event_time --limit 20
    nodemeter dlq redrive --reason registry_not_configured --dry-run
    nodemeter dlq redrive --reason registry_not_configured --from 2026-11-05T10:00Z

Every command reads ``nodemeter.dlq.v1`` from the start (or, with ``--from``, from the
offsets of that time: ``offsets_for_times``) up to the end offsets it found when it
started, and stops there: it never waits for new dead letters. A redrive sends each
matching record's original key and value, byte for byte, to the partition of the usage
topic it came from (the decisions: :mod:`nodemeter_stream.ingest.redrive`), flushes the
producer, prints a summary (matched, redriven, skipped with why) and exits 1 if any
delivery failed. The worker's event-id dedupe makes a redrive idempotent: a record
redriven twice, or redriven after it was stored, is a duplicate, never a second charge.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from nodemeter.errors import ConfigError, NodemeterError
from nodemeter.kafkalog import with_logger
from nodemeter_stream.analytics.cli_common import parse_time
from nodemeter_stream.analytics.progress import Progress, StderrProgress
from nodemeter_stream.analytics.report import terminal_safe
from nodemeter_stream.ingest.redrive import (
    Filter,
    Letter,
    Redrive,
    Summary,
    decide,
    parse,
)
from nodemeter_stream.topics import Topics


class DlqError(NodemeterError):
    """The dead-letter topic could not be read to its end, or a redrive failed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap", help="Kafka bootstrap servers (default NODEMETER_KAFKA_BOOTSTRAP)")  # fmt: skip
        p.add_argument("--topic-prefix", help="topic name prefix (default NODEMETER_TOPIC_PREFIX)")
        p.add_argument("--tenant", help="only this tenant's dead letters")
        p.add_argument("--from", dest="start", help="dead-lettered at or after: YYYY-MM-DD (UTC) or ISO 8601 with offset")  # fmt: skip
        p.add_argument("--to", dest="end", help="dead-lettered before (a YYYY-MM-DD day is included)")  # fmt: skip
        p.add_argument("--idle-timeout", type=float, default=30.0,
                       help="give up when no record arrives for this many seconds before the "
                       "end offsets (30)")  # fmt: skip

    ls = sub.add_parser("list", help="one line per dead letter (oldest first)")
    common(ls)
    ls.add_argument("--reason", action="append", default=[], help="only this reason (repeatable)")
    ls.add_argument("--limit", type=int, default=100, help="at most this many lines (100; 0: all)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")

    st = sub.add_parser("stats", help="dead letters by reason (and by hour or day)")
    common(st)
    st.add_argument("--reason", action="append", default=[], help="only this reason (repeatable)")
    st.add_argument("--by", choices=["hour", "day"], help="also count per hour or day of receipt")
    st.add_argument("--json", action="store_true", help="the counts as one JSON object")

    rd = sub.add_parser(
        "redrive",
        help="send matching dead letters back to the usage topic, byte for byte",
        description="Re-inject the original records of matching dead letters onto the usage "
        "topic, once their cause is fixed. Truncated copies and pricing-stage dead letters "
        "are reported, never sent. Exits 1 if a delivery failed.",
    )
    common(rd)
    rd.add_argument("--reason", action="append", required=True,
                    help="redrive dead letters of this reason (required; repeatable)")  # fmt: skip
    rd.add_argument("--dry-run", action="store_true", help="count what would be sent; send nothing")
    rd.add_argument("--flush-timeout", type=float, default=60.0, help="seconds to wait for the last deliveries (60)")  # fmt: skip
    rd.add_argument("--json", action="store_true", help="the summary as one JSON object")


# --- reading ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """What a read covers: per partition, [first, end) offsets (end: found at start)."""

    first: dict[int, int]
    end: dict[int, int]

    @property
    def total(self) -> int:
        return sum(max(0, self.end[p] - self.first[p]) for p in self.end)


def _consumer(bootstrap: str) -> Any:
    from confluent_kafka import Consumer

    return Consumer(
        with_logger(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"nodemeter-dlq-{uuid.uuid4().hex[:8]}",  # never committed
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
    )


def span_of(consumer: Any, topic: str, start: datetime | None, *, timeout: float = 10.0) -> Span:
    from confluent_kafka import TopicPartition

    md = consumer.list_topics(topic, timeout=timeout)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise ConfigError(f"no dead-letter topic {topic!r} on the broker (wrong --topic-prefix?)")
    first, end = {}, {}
    for p in sorted(meta.partitions):
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        first[p], end[p] = lo, hi
    if start is not None:
        ms = int(start.timestamp() * 1000)
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, ms) for p in first], timeout=timeout
        )
        for tp in found:
            # -1: no record at or after the time in this partition
            first[tp.partition] = end[tp.partition] if tp.offset < 0 else max(tp.offset, first[tp.partition])  # fmt: skip
    return Span(first, end)


def read_letters(
    bootstrap: str,
    topic: str,
    *,
    start: datetime | None = None,
    idle_timeout: float = 30.0,
    progress: Progress | None = None,
    every: int = 1000,
) -> Iterator[Letter | None]:
    """The dead letters of ``topic`` from ``start`` (or the beginning) to the end offsets
    found now, oldest first per partition; None for a record that is not a dead letter."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer = _consumer(bootstrap)
    try:
        span = span_of(consumer, topic, start)
        left = {p for p in span.end if span.first[p] < span.end[p]}
        total, done = span.total, 0
        if progress:
            progress("dlq read", 0, total, f"{topic}, {len(left)} partition(s) with records")
        if not left:
            return
        consumer.assign([TopicPartition(topic, p, span.first[p]) for p in sorted(left)])
        idle_since = time.monotonic()
        while left:
            msg = consumer.poll(0.5)
            if msg is None:
                if time.monotonic() - idle_since > idle_timeout:
                    raise DlqError(
                        f"no record from {topic} for {idle_timeout:g} s before its end offsets "
                        f"(partitions {sorted(left)} unfinished): is the broker reachable?"
                    )
                continue
            idle_since = time.monotonic()
            p = msg.partition()
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    left.discard(p)  # at the log's end: nothing up to the end offset left
                    continue
                raise DlqError(f"reading {topic}: {err}")
            if p not in left or msg.offset() >= span.end[p]:
                left.discard(p)  # written after the start: not part of this run
                continue
            if msg.offset() + 1 >= span.end[p]:
                left.discard(p)
            done += 1
            if progress and done % every == 0:
                progress("dlq read", done, total, "")
            yield parse(msg.value(), partition=p, offset=msg.offset())
        if progress and done % every:
            progress("dlq read", done, total, "done")
    finally:
        consumer.close()


# --- commands -----------------------------------------------------------------------


def _bootstrap(args: argparse.Namespace) -> str:
    bootstrap: str | None = args.bootstrap or os.environ.get("NODEMETER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise ConfigError("no Kafka bootstrap servers: give --bootstrap or set NODEMETER_KAFKA_BOOTSTRAP")  # fmt: skip
    return bootstrap


def _filter(args: argparse.Namespace) -> Filter:
    start = parse_time(args.start) if args.start else None
    end = parse_time(args.end, end=True) if args.end else None
    if start and end and end <= start:
        raise ConfigError(f"--to {args.end} is not after --from {args.start}")
    return Filter(reasons=frozenset(args.reason), tenant=args.tenant, start=start, end=end)


def _topics(args: argparse.Namespace) -> Topics:
    return Topics(prefix=args.topic_prefix) if args.topic_prefix is not None else Topics()


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    topics, flt = _topics(args), _filter(args)
    letters = read_letters(
        _bootstrap(args), topics.dlq, start=flt.start, idle_timeout=args.idle_timeout,
        progress=StderrProgress(err),
    )  # fmt: skip
    if args.action == "list":
        return list_letters(letters, flt, limit=args.limit, as_json=args.json, out=out)
    if args.action == "stats":
        return stats(letters, flt, by=args.by, as_json=args.json, out=out)
    return redrive(
        letters, flt, bootstrap=_bootstrap(args), usage_topic=topics.usage, dry_run=args.dry_run,
        flush_timeout=args.flush_timeout, as_json=args.json, out=out, err=err,
    )  # fmt: skip


def _row(letter: Letter) -> dict[str, Any]:
    return {
        "received_at": letter.received_at.isoformat(),
        "dlq_partition": letter.partition,
        "dlq_offset": letter.offset,
        "reason": letter.reason,
        "tenant": letter.tenant,
        "event_id": letter.event_id,
        "source": f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}",
        "stage": letter.stage,
        "bytes": int(letter.attributes.get("payload_bytes", len(letter.payload))),
        "truncated": letter.truncated,
        "detail": letter.detail,
    }


def list_letters(
    letters: Iterator[Letter | None], flt: Filter, *, limit: int, as_json: bool, out: TextIO
) -> int:
    shown = unreadable = 0
    for letter in letters:
        if letter is None:
            unreadable += 1
            continue
        if not flt.matches(letter) or (limit and shown >= limit):
            continue
        shown += 1
        row = _row(letter)
        if as_json:
            print(json.dumps(row, sort_keys=True), file=out)
        else:
            cut = " TRUNCATED" if row["truncated"] else ""
            print(
                terminal_safe(
                    f"{row['received_at']} {row['reason']} tenant={row['tenant'] or '-'} "
                    f"event={row['event_id'] or '-'} from={row['source']} stage={row['stage']} "
                    f"{row['bytes']} B{cut}: {row['detail'][:160]}"
                ),
                file=out,
            )
    if unreadable:
        print(f"{unreadable} record(s) on the topic are not readable dead letters", file=out)
    return 0


def stats(
    letters: Iterator[Letter | None], flt: Filter, *, by: str | None, as_json: bool, out: TextIO
) -> int:
    reasons: Counter[str] = Counter()
    truncated: Counter[str] = Counter()
    buckets: Counter[tuple[str, str]] = Counter()
    first: dict[str, datetime] = {}
    last: dict[str, datetime] = {}
    unreadable = 0
    fmt = {"hour": "%Y-%m-%dT%H:00Z", "day": "%Y-%m-%d"}.get(by or "", "")
    for letter in letters:
        if letter is None:
            unreadable += 1
            continue
        if not flt.matches(letter):
            continue
        r, at = letter.reason, letter.received_at.astimezone(UTC)
        reasons[r] += 1
        truncated[r] += letter.truncated
        first[r], last[r] = min(first.get(r, at), at), max(last.get(r, at), at)
        if fmt:
            buckets[(at.strftime(fmt), r)] += 1
    if as_json:
        doc = {
            "reasons": {
                r: {
                    "count": n,
                    "truncated": truncated[r],
                    "first": first[r].isoformat(),
                    "last": last[r].isoformat(),
                }
                for r, n in sorted(reasons.items())
            },
            "unreadable": unreadable,
        }
        if fmt:
            doc["by_" + str(by)] = [
                {"bucket": b, "reason": r, "count": n} for (b, r), n in sorted(buckets.items())
            ]
        print(json.dumps(doc, sort_keys=True), file=out)
        return 0
    print(f"{sum(reasons.values())} dead letter(s)", file=out)
    for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        cut = f", {truncated[r]} truncated" if truncated[r] else ""
        print(
            terminal_safe(f"  {r}: {n}{cut} ({first[r].isoformat()} .. {last[r].isoformat()})"),
            file=out,
        )
    for (b, r), n in sorted(buckets.items()):
        print(terminal_safe(f"  {b} {r}: {n}"), file=out)
    if unreadable:
        print(f"  not readable as dead letters: {unreadable}", file=out)
    return 0


def _producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    return Producer(
        with_logger(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,  # a retry inside the client writes once
                "acks": "all",
                "linger.ms": 20,
            }
        )
    )


def redrive(
    letters: Iterator[Letter | None],
    flt: Filter,
    *,
    bootstrap: str,
    usage_topic: str,
    dry_run: bool = False,
    flush_timeout: float = 60.0,
    as_json: bool = False,
    out: TextIO,
    err: TextIO,
    producer_factory: Callable[[str], Any] = _producer,
) -> int:
    """Send each matching dead letter's original record; 1 if a delivery failed."""
    summary = Summary()
    errors: list[str] = []
    producer = None if dry_run else producer_factory(bootstrap)

    def delivered(error: Any, _msg: Any) -> None:
        if error is None:
            summary.delivered += 1
        else:
            summary.failed += 1
            if len(errors) < 5:
                errors.append(str(error))

    for letter in letters:
        decision = decide(letter, flt, usage_topic=usage_topic)
        summary.add(letter, decision)
        if producer is None or not isinstance(decision, Redrive):
            continue
        while True:
            try:
                producer.produce(
                    decision.topic, value=decision.value, key=decision.key,
                    partition=decision.partition, on_delivery=delivered,
                )  # fmt: skip
                break
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
    if producer is not None:
        left = producer.flush(flush_timeout)
        if left:
            summary.failed += left
            errors.append(f"{left} record(s) not delivered within {flush_timeout:g} s")
    if as_json:
        print(json.dumps({**summary.as_dict(), "dry_run": dry_run, "errors": errors}), file=out)
    else:
        for line in summary.lines(dry_run=dry_run):
            print(line, file=out)
    for e in errors:
        print(f"nodemeter dlq redrive: delivery failed: {e}", file=err)
    return 1 if summary.failed else 0
