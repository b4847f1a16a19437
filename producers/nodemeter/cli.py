"""The ``nodemeter`` command.

Subcommands live in their own modules, imported only when used, so the base SDK
install can run ``nodemeter emit`` without the worker extras. Each package lists its
commands in a table (``nodemeter.commands``, ``nodemeter_stream.commands``) registered
as an entry point of the ``nodemeter.commands`` group; each module named there exposes
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from nodemeter.errors import NodemeterError

# Each package registers its command table in the ``nodemeter.commands`` entry-point
# group (pyproject.toml); run from a source tree without installed metadata, these are
# read directly.
ENTRY_POINT_GROUP = "nodemeter.commands"
_BUILTIN_TABLES = ("nodemeter.commands:COMMANDS", "nodemeter_stream.commands:COMMANDS")


def _load_table(ref: str) -> dict[str, tuple[str, str]]:
    module, _, attr = ref.partition(":")
    table: dict[str, tuple[str, str]] = getattr(importlib.import_module(module), attr)
    return table


@functools.cache
def commands() -> dict[str, tuple[str, str]]:
    """Every registered command: name -> (module, one-line help), sorted by name."""
    found: dict[str, tuple[str, str]] = {}
    eps = list(entry_points(group=ENTRY_POINT_GROUP))
    refs = [ep.value for ep in eps] or list(_BUILTIN_TABLES)
    for ref in refs:
        try:
            table = _load_table(ref)
        except ImportError:  # a package of the distribution that is not importable here
            continue
        for name, entry in table.items():
            if name in found and found[name] != entry:
                raise RuntimeError(f"command {name!r} is registered twice ({ref})")
            found[name] = entry
    return dict(sorted(found.items()))


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
    for name, (module, help_text) in commands().items():
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
            return arg if arg in commands() else None
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
