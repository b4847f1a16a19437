"""The SDK's ``nodemeter`` subcommands, registered as the ``nodemeter`` entry point of
the ``nodemeter.commands`` group (pyproject.toml).

name -> (module, one-line help). The module exposes ``add_arguments(parser)`` and
``run(args) -> int`` and is imported only when its command runs. Importing this table
imports nothing else.
"""

from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    "emit": ("nodemeter.emit_cli", "send usage records given as JSON lines on stdin"),
    "ingest-http": ("nodemeter.ingest_http.cli", "serve an HTTP API taking usage as CloudEvents"),
}
