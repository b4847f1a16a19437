"""Per-tenant analyst access: a user that reads only its tenant's rows.

Two forms of the same rule (``tenant = '<tenant>'`` on every table with a ``tenant``
column), for the two ways ClickHouse is run:

* a ClickHouse **server** (SQL-driven access control): :func:`policy_sql` gives the
  ``CREATE ROLE / USER / ROW POLICY / GRANT`` statements an administrator runs;
* **embedded chDB** or a server configured by files: :func:`users_xml` gives a
  ``users.xml`` fragment with the same row filters. chDB has no SQL access control
  (``CREATE USER`` needs a writable access storage it does not have, and
  ``EXECUTE AS`` is disabled), but it honours users files passed with
  ``config-file``; the tests open a store that way and check that queries see only
  one tenant.

Row policies are permissive filters: a user with a policy on a table sees only the
matching rows; users without one (the worker, administrators) keep seeing all rows
(``users_without_row_policies_can_read_rows``, on by default). Views created with the
default ``SQL SECURITY INVOKER`` (request_costs) apply the policies of the tables they
read. Run ``python -m nodemeter_stream.analytics.policies --help`` to print a recipe.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

from nodemeter.errors import ConfigError
from nodemeter.events import validate_tenant

ROLE = "nodemeter_analyst"
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _ident(kind: str, value: str) -> str:
    if not _IDENT_RE.match(value):
        raise ConfigError(f"{kind} {value!r} must be a plain identifier (letters, digits, _)")
    return value


def tenant_filter(tenant: str) -> str:
    """The row filter; the tenant is validated, so it never needs escaping."""
    validate_tenant(tenant)
    return f"tenant = '{tenant}'"


def policy_name(tenant: str) -> str:
    return "tenant_" + re.sub(r"[^A-Za-z0-9_]", "_", tenant)


def tenant_tables(client: Any) -> list[str]:
    """Tables and views of the current database that have a ``tenant`` column.

    Materialized views are left out: analysts read their target tables.
    """
    rows = client.query(
        "SELECT c.table FROM system.columns AS c "
        "INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table "
        "WHERE c.database = currentDatabase() AND c.name = 'tenant' "
        "AND t.engine != 'MaterializedView' ORDER BY c.table"
    ).result_rows
    return [str(r[0]) for r in rows]


def policy_sql(*, database: str, tenant: str, user: str, tables: Sequence[str]) -> list[str]:
    """Statements for a server: role with SELECT, the user, one row policy per table.

    The password is not part of the recipe: the administrator sets it
    (``ALTER USER ... IDENTIFIED WITH sha256_password BY '...'``) out of band.
    """
    db = _ident("database", database)
    usr = _ident("user", user)
    names = [_ident("table", t) for t in tables]
    if not names:
        raise ConfigError("no tables to grant: run `nodemeter migrate` first")
    cond = tenant_filter(tenant)
    on = ", ".join(f"{db}.{t}" for t in names)
    out = [f"CREATE ROLE IF NOT EXISTS {ROLE}"]
    out += [f"GRANT SELECT ON {db}.{t} TO {ROLE}" for t in names]
    out += [
        f"CREATE USER IF NOT EXISTS {usr} IDENTIFIED WITH no_password DEFAULT DATABASE {db}",
        f"GRANT {ROLE} TO {usr}",
        f"ALTER USER {usr} DEFAULT ROLE {ROLE}",
        f"CREATE ROW POLICY OR REPLACE {policy_name(tenant)} ON {on} FOR SELECT USING {cond} TO {usr}",
    ]
    return out


def users_xml(*, database: str, tenant: str, user: str, tables: Sequence[str]) -> str:
    """A ``users.xml`` (or ``users.d/*.xml``) fragment: the user and its row filters."""
    db = _ident("database", database)
    usr = _ident("user", user)
    cond = escape(tenant_filter(tenant))
    filters = "\n".join(
        f"          <{_ident('table', t)}><filter>{cond}</filter></{t}>" for t in tables
    )
    return f"""<clickhouse>
  <profiles>
    <default/>
    <{ROLE}><readonly>2</readonly></{ROLE}>
  </profiles>
  <quotas><default/></quotas>
  <users>
    <{usr}>
      <no_password/>
      <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
      <profile>{ROLE}</profile>
      <quota>default</quota>
      <allow_databases><database>{db}</database></allow_databases>
      <databases>
        <{db}>
{filters}
        </{db}>
      </databases>
    </{usr}>
  </users>
</clickhouse>
"""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nodemeter_stream.analytics.policies",
        description="Print the access recipe for a tenant-restricted analyst.",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True, help="the analyst's ClickHouse user name")
    p.add_argument("--database", default="nodemeter")
    p.add_argument("--tables", help="comma-separated (default: read from the configured store)")
    p.add_argument("--xml", action="store_true", help="users.xml form instead of SQL")
    args = p.parse_args(argv)
    if args.tables:
        tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    else:
        from nodemeter_stream.sink.store import ClickHouseConfig, connect

        tables = tenant_tables(connect(ClickHouseConfig(database=args.database)))
    kw = {"database": args.database, "tenant": args.tenant, "user": args.user, "tables": tables}
    if args.xml:
        sys.stdout.write(users_xml(**kw))
    else:
        for stmt in policy_sql(**kw):
            print(stmt + ";")
    return 0


if __name__ == "__main__":
    sys.exit(main())
