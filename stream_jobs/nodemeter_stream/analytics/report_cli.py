"""``nodemeter report``: cost per node for a tenant and period, in the terminal and as HTML.

    nodemeter report --tenant acme --from 2026-11-01 --to 2026-11-30 --html report.html

``--from``/``--to`` are UTC days (``--to`` included) or ISO datetimes with an offset
(``--to`` excluded). Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nodemeter.errors import ConfigError
from nodemeter_stream.analytics import html
from nodemeter_stream.analytics.cli_common import add_store_arguments, open_store, parse_time
from nodemeter_stream.analytics.progress import StderrProgress
from nodemeter_stream.analytics.report import collect, render_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--from", dest="start", help="first UTC day (default: 30 days ago)")
    parser.add_argument("--to", dest="end", help="last UTC day, included (default: today)")
    parser.add_argument("--html", type=Path, metavar="FILE", help="also write the HTML page")
    parser.add_argument("--top", type=int, default=5, help="most expensive requests to list")
    parser.add_argument(
        "--exact", action="store_true", help="print amounts with all 12 decimal places"
    )
    add_store_arguments(parser)


def period(args: argparse.Namespace, now: datetime) -> tuple[datetime, datetime]:
    today = now.astimezone(UTC).date().isoformat()
    end = parse_time(args.end or today, end=True)
    start = parse_time(args.start) if args.start else end - timedelta(days=31)
    if start >= end:
        raise ConfigError(f"--from {start:%Y-%m-%d %H:%M} is not before --to {end:%Y-%m-%d %H:%M}")
    return start, end


def run(args: argparse.Namespace) -> int:
    start, end = period(args, datetime.now(UTC))
    client = open_store(args)
    report = collect(
        client, tenant=args.tenant, start=start, end=end, top=args.top, progress=StderrProgress()
    )
    print(render_table(report, exact=args.exact), end="")
    if args.html:
        args.html.write_text(html.render(report), encoding="utf-8")
        print(f"\nHTML report: {args.html.resolve()}")
    return 0
