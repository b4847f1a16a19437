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
    "reconcile": ("nodemeter_stream.analytics.reconcile_cli", "check emitted = stored = billed"),
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


# Modules of the optional extras: a command that needs one says which extra to install.
EXTRAS: dict[str, str] = {
    "aiokafka": "worker",
    "chdb": "worker",
    "clickhouse_connect": "worker",
    "faust": "worker",
    "prometheus_client": "worker",
    "yaml": "worker",
    "pynvml": "gpu",
    "opentelemetry": "otel",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's module is imported (the others
    are listed with their help line, their arguments unknown)."""
    parser = argparse.ArgumentParser(
        prog="nodemeter", description="Usage metering for AI workflows."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if only is not None and name != only:
            continue
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as exc:
            p.set_defaults(_import_error=exc)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (its first argument that is not an option)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def missing_extra_hint(exc: ImportError) -> str | None:
    """``pip install 'nodemeter[EXTRA]'`` when ``exc`` is a missing optional module."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    return f"pip install 'nodemeter[{extra}]'" if extra else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_in(argv))
    args = parser.parse_args(argv)
    err = getattr(args, "_import_error", None)
    try:
        if err is not None:
            raise err
        rc: int = importlib.import_module(args._module).run(args)
    except NodemeterError as exc:
        print(f"nodemeter {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        hint = missing_extra_hint(exc)
        if hint is None:
            raise
        print(
            f"nodemeter {args.command}: needs a module that is not installed ({exc}); "
            f"install with: {hint}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
