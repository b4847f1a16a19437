"""``nodemeter reconcile``: emitted = stored = billed, lines = rollups; OK or BAD each.

Exit status: 0 when every check is OK, 1 when any is BAD, 2 when the checks could not
run (bad arguments, no store, no broker). With an embedded chDB store, stop the worker
first (one process owns a chDB path). What each check means and what to do when one
is BAD: docs/analytics.md, "Reconcile".
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from nodemeter.errors import NodemeterError
from nodemeter_stream.analytics import reconcile
from nodemeter_stream.analytics import reconcile_store as facts
from nodemeter_stream.analytics.cli_common import add_store_arguments, open_store, parse_time
from nodemeter_stream.analytics.reconcile import Result
from nodemeter_stream.topics import Topics

CHECKS = ("emitted", "billed", "rollups")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAR = datetime(2299, 12, 31, tzinfo=UTC)  # DateTime64's last year


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--tenant", help="check one tenant (stored = billed, lines = rollups)")
    a("--from", dest="start", help="events from this UTC date or ISO time (stored = billed)")
    a("--to", dest="end", help="events up to this date (included) or ISO time (excluded)")
    a("--bootstrap", help="Kafka bootstrap servers (default NODEMETER_KAFKA_BOOTSTRAP)")
    a("--topic-prefix", help="the worker's topic prefix (default NODEMETER_TOPIC_PREFIX)")
    a(
        "--app-id",
        help="the worker's app id = consumer group whose progress is checked "
        "(default NODEMETER_WORKER_APP_ID or nodemeter-worker)",
    )
    a(
        "--no-kafka",
        action="store_true",
        help="skip emitted = stored (it reads the usage and DLQ topics)",
    )
    a(
        "--only",
        action="append",
        choices=CHECKS,
        help="run only these checks (repeatable; default all: emitted, billed, rollups)",
    )
    a("--dlq-timeout", type=float, default=120.0, help="seconds to read the DLQ topic (120)")
    add_store_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        checks, notes = collect(args)
    except NodemeterError as exc:
        print(f"nodemeter reconcile: error: {exc}", file=sys.stderr)
        return 2
    for line in render(checks, notes):
        print(line)
    return reconcile.exit_status(checks)


def render(checks: list[Result], notes: list[str]) -> list[str]:
    out = [line for c in checks for line in c.render()]
    out += [f"    note: {n}" for n in notes]
    bad = sum(not c.ok for c in checks)
    out.append(
        f"reconcile: {len(checks) - bad} OK, {bad} BAD" + ("" if bad else " (all checks agree)")
    )
    return out


def collect(args: argparse.Namespace) -> tuple[list[Result], list[str]]:
    """Every check, in order, and the notes on what was left out."""
    start = parse_time(args.start) if args.start else EPOCH
    end = parse_time(args.end, end=True) if args.end else FAR
    if start >= end:
        raise NodemeterError(f"--from {args.start} is not before --to {args.end}")
    topics = Topics(prefix=args.topic_prefix) if args.topic_prefix is not None else Topics()
    only = set(args.only or CHECKS)
    if args.no_kafka:
        only.discard("emitted")
    bootstrap = args.bootstrap or os.environ.get("NODEMETER_KAFKA_BOOTSTRAP", "")
    if "emitted" in only and not bootstrap:
        raise NodemeterError(
            "emitted = stored reads the usage topic: give --bootstrap (or "
            "NODEMETER_KAFKA_BOOTSTRAP), or --no-kafka to skip it"
        )
    group = args.app_id or os.environ.get("NODEMETER_WORKER_APP_ID", "nodemeter-worker")
    client = open_store(args)
    checks: list[Result] = []
    notes: list[str] = []
    if "emitted" in only:
        checks += emitted(client, bootstrap, topics, group, args.dlq_timeout, notes)
        if args.tenant:
            notes.append("emitted = stored covers the whole usage topic (not one tenant)")
    else:
        notes.append("emitted = stored skipped")
    if "billed" not in only and "rollups" not in only:
        return checks, notes
    period = "all history" if not (args.start or args.end) else (
        f"{start.isoformat()} .. {end.isoformat()}"
    )  # fmt: skip
    if "billed" in only:
        quantities, coverage, refused = facts.billed_facts(
            client, tenant=args.tenant or "", start=start, end=end
        )
        checks += reconcile.billed_checks(quantities, coverage, refused=refused, period=period)
    if "rollups" in only:
        checks += reconcile.rollup_results(reconcile.run_checks(client), tenant=args.tenant)
        if args.start or args.end:
            notes.append("lines = rollups compares all history (rollups have no period filter)")
        reconcile.add_statement_checks(checks)
        notes.append("lines = statements: no statements to check yet")
    return checks, notes


def emitted(
    client: object, bootstrap: str, topics: Topics, group: str, dlq_timeout: float, notes: list[str]
) -> list[Result]:
    offsets = facts.watermarks(bootstrap, topics.usage)
    views = facts.partition_views(client, group=group, topic=topics.usage, offsets=offsets)
    if all(v.applied < 0 for v in views):
        others = [g for g in facts.groups_with_progress(client, topics.usage) if g != group]
        hint = f" (progress found for: {', '.join(others)}; pass --app-id)" if others else ""
        notes.append(f"group {group!r} recorded no progress on {topics.usage}{hint}")
    ranges = []
    for v in views:
        r, left_out = reconcile.checked_range(v)
        notes.extend(left_out)
        if r is not None:
            ranges.append(r)
    notes.insert(0, reconcile.checked_ranges_line(ranges, topics.usage))
    stored, dead_stored = facts.stored_counts(client, topics.usage, ranges)
    positions = facts.dlq_positions(
        bootstrap,
        topics.dlq,
        topics.usage,
        timeout=dlq_timeout,
        progress=facts.stderr_progress(f"read {topics.dlq}"),
    )
    dead_topic = {
        r.partition: sum(1 for o in positions.get(r.partition, ()) if r.first <= o <= r.last)
        for r in ranges
    }
    return reconcile.emitted_checks(
        ranges, stored=stored, dead_stored=dead_stored, dead_topic=dead_topic, topic=topics.usage
    )
