"""The ``nodemeter`` command.

Subcommands live in their own modules, imported only when used, so the base SDK
install can run ``nodemeter emit`` without the worker extras. Each module listed
in ``COMMANDS`` exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from nodemeter.errors import NodemeterError

# name -> (module, one-line help). Keep alphabetical within groups.
COMMANDS: dict[str, tuple[str, str]] = {
    "alerts": ("nodemeter_stream.alerts_cli", "budget alerts: tail the alert topic"),
    "dev": ("nodemeter_stream.devenv.cli", "local development services (Kafka broker)"),
    "emit": ("nodemeter.emit_cli", "send usage records given as JSON lines on stdin"),
    "migrate": ("nodemeter_stream.migrate_cli", "apply the SQL migrations to ClickHouse"),
    "rebuild": ("nodemeter_stream.analytics.rebuild_cli", "rebuild rollups from base tables"),
    "report": ("nodemeter_stream.analytics.report_cli", "per-node cost report (--html)"),
    "demo": (
        "nodemeter_stream.demo",
        "the demo pipeline: broker, worker, traffic, report, reconciliation",
    ),
    "smoke": ("nodemeter_stream.smoke", "produce, consume and store a few events end to end"),
    "sql": ("nodemeter_stream.analytics.sql_cli", "run SQL or a library query, print a table"),
    "statement": ("nodemeter_stream.analytics.statement_cli", "a tenant's statement for a window"),
    "worker": (
        "nodemeter_stream.worker_cli",
        "run the stream worker (validate, dedupe, merge, sink)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodemeter", description="Usage metering for AI workflows."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as exc:
            p.set_defaults(_import_error=exc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    err = getattr(args, "_import_error", None)
    if err is not None:
        print(
            f"nodemeter {args.command}: needs the worker extras ({err}); "
            "install with: pip install 'nodemeter[worker]'",
            file=sys.stderr,
        )
        return 2
    try:
        rc: int = importlib.import_module(args._module).run(args)
    except NodemeterError as exc:
        print(f"nodemeter {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
