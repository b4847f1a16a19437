"""The worker package's ``nodemeter`` subcommands, registered as the ``nodemeter_stream``
entry point of the ``nodemeter.commands`` group (pyproject.toml).

name -> (module, one-line help), as in :mod:`nodemeter.commands`; a module is imported
only when its command runs, so a base install (no ``worker`` extra) lists these and
answers each with the extra to install. Keep alphabetical.
"""

from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    "alerts": ("nodemeter_stream.alerts_cli", "budget alerts: tail the alert topic"),
    "demo": (
        "nodemeter_stream.demo",
        "the demo pipeline: broker, worker, traffic, report, reconciliation",
    ),
    "dev": ("nodemeter_stream.devenv.cli", "local development services (Kafka broker)"),
    "dlq": ("nodemeter_stream.dlq_cli", "dead letters: list, stats, redrive to the usage topic"),
    "migrate": ("nodemeter_stream.migrate_cli", "apply the SQL migrations to ClickHouse"),
    "rebuild": ("nodemeter_stream.analytics.rebuild_cli", "rebuild rollups from base tables"),
    "reconcile": ("nodemeter_stream.analytics.reconcile_cli", "check emitted = stored = billed"),
    "report": ("nodemeter_stream.analytics.report_cli", "per-node cost report (--html)"),
    "smoke": ("nodemeter_stream.smoke", "produce, consume and store a few events end to end"),
    "sql": ("nodemeter_stream.analytics.sql_cli", "run SQL or a library query, print a table"),
    "statement": ("nodemeter_stream.analytics.statement_cli", "a tenant's statement for a window"),
    "worker": (
        "nodemeter_stream.worker_cli",
        "run the stream worker (validate, dedupe, merge, sink)",
    ),
}
