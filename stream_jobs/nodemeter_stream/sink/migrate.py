"""Apply the numbered SQL migrations in ``sql/migrations`` idempotently.

Each file ``NNN_name.sql`` runs once per database, in order; the ones applied are
recorded in ``schema_migrations`` with a checksum. A file changed after it ran is
an error (write a new migration instead). Statements are separated by ``;`` at a
line end; every statement is written to be safe to re-run (IF NOT EXISTS), so a
migration interrupted half-way can simply run again.

On a ClickHouse cluster (``migrate(..., cluster=ClusterOptions(...))``, ``nodemeter migrate
--cluster NAME``) every statement is first converted by :mod:`sink.cluster` (ON CLUSTER,
Replicated engines, Distributed ``_all`` tables); docs/scaling.md.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodemeter.errors import NodemeterError
from nodemeter_stream.sink.cluster import ClusterOptions, ClusterSchema

_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class MigrationError(NodemeterError):
    pass


def sql_dir() -> Path:
    """The ``sql/`` folder: from the repository checkout, or shipped in the wheel."""
    env = os.environ.get("NODEMETER_SQL_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    repo = here.parents[3] / "sql"
    if (repo / "migrations").is_dir():
        return repo
    return here.parents[1] / "_sql"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        return split_statements(self.text)


def split_statements(text: str) -> list[str]:
    """Split on ';' at line end, dropping comment-only chunks."""
    out = []
    for chunk in re.split(r";[ \t]*(?:\n|$)", text):
        body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--"))
        if body.strip():
            out.append(chunk.strip())
    return out


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir() / "migrations"
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE_RE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations numbered {version:03d}: {found[version].path.name}, {path.name}"
            )
        found[version] = Migration(version, m.group(2), path)
    return [found[v] for v in sorted(found)]


_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


def applied(client: Any, *, cluster: ClusterOptions | None = None) -> dict[int, str]:
    for stmt in ledger_statements(cluster):
        client.command(stmt)
    rows = client.query("SELECT version, checksum FROM schema_migrations FINAL").result_rows
    return {int(v): str(c) for v, c in rows}


def ledger_statements(cluster: ClusterOptions | None = None) -> list[str]:
    """The statements that create ``schema_migrations`` (replicated everywhere on a cluster)."""
    if cluster is None:
        return [_LEDGER.strip()]
    return ClusterSchema(cluster).convert(_LEDGER, where="the schema_migrations ledger")


def plan(
    migrations: Iterable[Migration] | None = None, *, cluster: ClusterOptions | None = None
) -> list[tuple[Migration, list[str]]]:
    """Each migration with the statements that apply it (converted for ``cluster``).

    On a cluster every migration is converted, in order, even those already applied: a
    statement's conversion depends on the tables earlier migrations created.
    """
    migs = list(migrations if migrations is not None else discover())
    if cluster is None:
        return [(mig, mig.statements()) for mig in migs]
    schema = ClusterSchema(cluster)
    return [(mig, schema.convert_many(mig.statements(), where=mig.path.name)) for mig in migs]


def migrate(
    client: Any,
    *,
    migrations: Iterable[Migration] | None = None,
    verbose: bool = True,
    cluster: ClusterOptions | None = None,
) -> list[Migration]:
    """Apply the migrations not yet recorded; return those applied now."""
    steps = plan(migrations, cluster=cluster)  # a statement that cannot convert stops here
    done = applied(client, cluster=cluster)
    ran: list[Migration] = []
    for mig, statements in steps:
        if mig.version in done:
            if done[mig.version] != mig.checksum:
                raise MigrationError(
                    f"{mig.path.name} changed after it was applied (checksum {done[mig.version]} -> "
                    f"{mig.checksum}); add a new migration instead of editing one"
                )
            continue
        if verbose:
            print(f"[migrate] {mig.path.name}", file=sys.stderr, flush=True)
        for stmt in statements:
            try:
                client.command(stmt)
            except Exception as exc:
                raise MigrationError(f"{mig.path.name}: {exc}") from exc
        client.insert(
            "schema_migrations",
            [[mig.version, mig.name, mig.checksum]],
            column_names=["version", "name", "checksum"],
        )
        ran.append(mig)
    return ran
