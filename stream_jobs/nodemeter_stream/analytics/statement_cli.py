"""``nodemeter statement``: a tenant's statement for one billing window.

    nodemeter statement --tenant acme --window 2026-11                  # draft, as text
    nodemeter statement --tenant acme --window 2026-11 --format html -o acme-2026-11.html
    nodemeter statement --tenant globex --window 2026-11-24 --issue     # make it final

Windows are named as the pricing engine names them, in the tenant's time zone: ``YYYY-MM``
for monthly tenants, ``YYYY-MM-DD`` for daily ones (``billing_window`` in the price books,
read from ``--pricebooks`` / ``NODEMETER_PRICEBOOKS`` like the worker). ``--issue``
requires the window to be settled by the pricing agent; issuing again prints the same
statement. Progress goes to stderr, the statement to stdout (or ``--output``).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

from nodemeter.errors import ConfigError
from nodemeter_stream.analytics.cli_common import add_store_arguments, open_store
from nodemeter_stream.analytics.errors import StoreError
from nodemeter_stream.analytics.progress import StderrProgress
from nodemeter_stream.analytics.statement_render import FORMATS, render
from nodemeter_stream.analytics.statements import issue, statement
from nodemeter_stream.pricing.book import EXAMPLES_DIR, PricingConfig, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", required=True)
    parser.add_argument(
        "--window", required=True, help="billing window id: YYYY-MM (monthly) or YYYY-MM-DD (daily)"
    )
    parser.add_argument(
        "--issue", action="store_true", help="finalize it (the window must be settled)"
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="output (default text)")
    parser.add_argument("--output", "-o", type=Path, metavar="FILE", help="write it to FILE")
    parser.add_argument(
        "--pricebooks",
        help="price book file or directory (default NODEMETER_PRICEBOOKS, else the examples)",
    )
    parser.add_argument(
        "--grace-s",
        type=float,
        help="the pricing agent's grace after a window's end (default "
        "NODEMETER_PRICING_GRACE_S or 3600)",
    )
    add_store_arguments(parser)


def pricing_config(args: argparse.Namespace) -> PricingConfig:
    path = args.pricebooks or os.environ.get("NODEMETER_PRICEBOOKS")
    if not path:
        print(
            f"nodemeter statement: NODEMETER_PRICEBOOKS not set: using the example price books "
            f"in {EXAMPLES_DIR}",
            file=sys.stderr,
        )
        path = str(EXAMPLES_DIR)
    return load_config(path)


def grace(args: argparse.Namespace) -> timedelta:
    raw = args.grace_s if args.grace_s is not None else os.environ.get("NODEMETER_PRICING_GRACE_S")
    try:
        seconds = float(raw) if raw is not None else 3600.0
    except ValueError:
        raise ConfigError(f"NODEMETER_PRICING_GRACE_S={raw!r} is not a number") from None
    if seconds < 0:
        raise ConfigError(f"grace must not be negative ({seconds})")
    return timedelta(seconds=seconds)


def run(args: argparse.Namespace) -> int:
    config = pricing_config(args)
    client = open_store(args)
    found = client.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() "
        "AND name IN ('statements', 'statement_lines')"
    ).result_rows[0][0]
    if found != 2:
        raise StoreError(
            "the database has no statements tables (migration 070): run `nodemeter migrate`"
        )
    progress = StderrProgress()
    if args.issue:
        st, new = issue(
            client, config, args.tenant, args.window, grace=grace(args), progress=progress
        )
        print(
            f"nodemeter statement: {'issued' if new else 'already issued'} {st.statement_id} "
            f"({args.tenant} {args.window})",
            file=sys.stderr,
        )
    else:
        st = statement(
            client, config, args.tenant, args.window, grace=grace(args), progress=progress
        )
    text = render(st, args.format)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"statement {st.statement_id}: {args.output.resolve()}")
    else:
        sys.stdout.write(text)
    return 0
