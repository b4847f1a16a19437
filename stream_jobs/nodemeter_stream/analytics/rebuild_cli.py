"""``nodemeter rebuild``: refill rollups from the base tables, with progress on stderr.

Stop the worker first: it must not insert while a rollup is rebuilt (with embedded
chDB it cannot hold the same path anyway).
"""

from __future__ import annotations

import argparse

from nodemeter_stream.analytics import reconcile
from nodemeter_stream.analytics.cli_common import add_store_arguments, open_store
from nodemeter_stream.analytics.progress import StderrProgress
from nodemeter_stream.analytics.rebuild import ROLLUPS, rebuild


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "tables",
        nargs="*",
        metavar="TABLE",
        help=f"rollups to rebuild (default all: {', '.join(r.table for r in ROLLUPS)})",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the reconciliation run afterwards"
    )
    add_store_arguments(parser)


def run(args: argparse.Namespace) -> int:
    client = open_store(args)
    for r in rebuild(client, args.tables, progress=StderrProgress()):
        print(
            f"{r.table}: {r.partitions} partition(s), {r.source_rows:,} base rows -> {r.rows:,} rows"
        )
    if args.no_verify:
        return 0
    checks = reconcile.run_checks(client)
    print(reconcile.summary(checks))
    return 0 if all(c.ok for c in checks) else 1
