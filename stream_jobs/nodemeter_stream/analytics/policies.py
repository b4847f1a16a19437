"""Per-tenant analyst access: a user that reads only its tenant's rows.

Two forms of the same rule, for the two ways ClickHouse is run:

* a ClickHouse **server** (SQL-driven access control): :func:`policy_sql` gives the
  statements an administrator runs;
* a server configured by files, or **embedded chDB**: :func:`users_xml` gives a
  ``users.xml`` fragment with the same rule. chDB has no SQL access control (no
  writable access storage; ``EXECUTE AS`` is disabled), but it honours users files
  passed with ``config-file``; the tests open a store that way.

The rule, in both forms:

* **SELECT is granted on the filtered tables only** (every table or plain view of the
  database with a ``tenant`` column), never on the database: materialized views, tables
  without a ``tenant`` column (``price_book_rates``, the worker's state) and tables
  added later are refused. A row policy ``tenant = '<tenant>'`` covers every granted
  table. Views created with the default ``SQL SECURITY INVOKER`` (``request_costs``)
  apply the policies of the tables they read.
* **Policies are named per (tenant, user)** and given to that user only, so a second
  analyst of a tenant, or a tenant whose name differs only in punctuation, never
  replaces another user's policy (a user without a policy would read every tenant:
  ``users_without_row_policies_can_read_rows`` is on by default).
* **The account**: a SHA-256 password hash is required (the plain password is never
  printed), hosts are restricted (local only unless ``hosts`` says otherwise), and the
  settings profile sets ``readonly = 1`` (no writes, no changing settings, so the limits
  hold) with memory, time and concurrency limits.
* **Safe to run twice**: every statement is ``IF NOT EXISTS``, ``OR REPLACE``, ``ALTER``,
  ``REVOKE`` or ``GRANT``; a second run converges to the same state (the role's and the
  user's grants are revoked and granted again, so nothing granted by hand survives).

The embedded form (``embedded=True``) defines the ``default`` user without a password:
chDB always connects as ``default`` and cannot authenticate, so there the boundary is
who may read the store's files; the filter and the grants still hold for every query.
Run ``python -m nodemeter_stream.analytics.policies --help`` to print a recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from nodemeter.errors import ConfigError, NodemeterError
from nodemeter.events import validate_tenant

ROLE = "nodemeter_analyst"
PROFILE = "nodemeter_analyst"
PASSWORD_ENV = "NODEMETER_ANALYST_PASSWORD"
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The analyst profile's resource limits (``readonly = 1`` keeps them fixed)."""

    max_memory_usage: int = 4_000_000_000
    max_execution_time: int = 300
    max_concurrent_queries_for_user: int = 4

    def __post_init__(self) -> None:
        for name, value in self.settings():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    def settings(self) -> list[tuple[str, int]]:
        return [
            ("max_memory_usage", self.max_memory_usage),
            ("max_execution_time", self.max_execution_time),
            ("max_concurrent_queries_for_user", self.max_concurrent_queries_for_user),
        ]


def _ident(kind: str, value: str) -> str:
    if not _IDENT_RE.match(value):
        raise ConfigError(f"{kind} {value!r} must be a plain identifier (letters, digits, _)")
    return value


def tenant_filter(tenant: str) -> str:
    """The row filter; the tenant is validated, so it never needs escaping."""
    validate_tenant(tenant)
    return f"tenant = '{tenant}'"


def policy_name(tenant: str, user: str) -> str:
    """One policy per (tenant, user), as a quoted identifier.

    Injective: the user is a plain identifier (no ``:``), so the last ``:`` separates
    it from the tenant, which is kept as it is (its characters need no escaping).
    """
    validate_tenant(tenant)
    return f"`nodemeter:{tenant}:{_ident('user', user)}`"


def password_sha256(password: str) -> str:
    """The hex SHA-256 of a password, as ClickHouse's ``sha256_hash`` expects."""
    if not password:
        raise ConfigError("the analyst password must not be empty")
    return hashlib.sha256(password.encode()).hexdigest()


def _hash(value: str | None) -> str:
    if value is None:
        raise ConfigError(
            "an analyst needs a password: give its SHA-256 hex "
            f"(--password-sha256, or --password-file / ${PASSWORD_ENV} to hash one)"
        )
    value = value.strip().lower()
    if not _SHA256_RE.match(value):
        raise ConfigError("the password hash must be 64 hex digits (SHA-256)")
    return value


def _hosts(hosts: Sequence[str]) -> list[str]:
    """Validated networks; empty means local only, ``["any"]`` means anywhere."""
    if list(hosts) == ["any"]:
        return ["any"]
    out = []
    for h in hosts:
        try:
            out.append(str(ipaddress.ip_network(h, strict=False)))
        except ValueError as exc:
            raise ConfigError(
                f"host {h!r} must be an IP address or network (CIDR), or 'any'"
            ) from exc
    return out


def tenant_tables(client: Any) -> list[str]:
    """Tables and plain views of the current database that have a ``tenant`` column.

    Materialized views are left out: analysts read their target tables.
    """
    rows = client.query(
        "SELECT c.table FROM system.columns AS c "
        "INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table "
        "WHERE c.database = currentDatabase() AND c.name = 'tenant' "
        "AND t.engine != 'MaterializedView' ORDER BY c.table"
    ).result_rows
    return [str(r[0]) for r in rows]


def policy_sql(
    *,
    database: str,
    tenant: str,
    user: str,
    tables: Sequence[str],
    password_sha256_hex: str | None,
    hosts: Sequence[str] = (),
    limits: Limits = Limits(),
) -> list[str]:
    """Statements for a server: profile, role with SELECT on the tables, the user, and
    the user's row policy on every table. Idempotent (see the module docstring)."""
    db = _ident("database", database)
    usr = _ident("user", user)
    names = [_ident("table", t) for t in tables]
    if not names:
        raise ConfigError("no tables to grant: run `nodemeter migrate` first")
    cond = tenant_filter(tenant)
    pw = _hash(password_sha256_hex)
    nets = _hosts(hosts)
    host = "ANY" if nets == ["any"] else ", ".join(f"IP '{n}'" for n in nets) if nets else "LOCAL"
    settings = ", ".join(
        ["readonly = 1 CONST"] + [f"{k} = {v} CONST" for k, v in limits.settings()]
    )
    on = ", ".join(f"{db}.{t}" for t in names)
    ident = f"IDENTIFIED WITH sha256_hash BY '{pw}' HOST {host}"
    out = [
        f"CREATE SETTINGS PROFILE OR REPLACE {PROFILE} SETTINGS {settings}",
        f"CREATE ROLE IF NOT EXISTS {ROLE}",
        f"REVOKE ALL ON *.* FROM {ROLE}",
    ]
    out += [f"GRANT SELECT ON {db}.{t} TO {ROLE}" for t in names]
    out += [
        f"CREATE USER IF NOT EXISTS {usr} {ident}",
        f"ALTER USER {usr} {ident} DEFAULT DATABASE {db} SETTINGS PROFILE '{PROFILE}'",
        f"REVOKE ALL ON *.* FROM {usr}",
        f"GRANT {ROLE} TO {usr}",
        f"ALTER USER {usr} DEFAULT ROLE {ROLE}",
        f"CREATE ROW POLICY OR REPLACE {policy_name(tenant, usr)} ON {on} "
        f"FOR SELECT USING {cond} AS PERMISSIVE TO {usr}",
    ]
    return out


def users_xml(
    *,
    database: str,
    tenant: str,
    user: str,
    tables: Sequence[str],
    password_sha256_hex: str | None = None,
    hosts: Sequence[str] = (),
    limits: Limits = Limits(),
    embedded: bool = False,
) -> str:
    """A ``users.xml`` (or ``users.d/*.xml``) fragment: the profile, the user, its
    grants and row filters. ``embedded``: the ``default`` user of a chDB store, which
    cannot have a password (chDB does not authenticate)."""
    db = _ident("database", database)
    usr = _ident("user", user)
    names = [_ident("table", t) for t in tables]
    if not names:
        raise ConfigError("no tables to grant: run `nodemeter migrate` first")
    cond = escape(tenant_filter(tenant))
    if embedded:
        if usr != "default" or password_sha256_hex is not None:
            raise ConfigError("the embedded form defines the `default` user, without password")
        auth = "<no_password/>"
    else:
        auth = f"<password_sha256_hex>{_hash(password_sha256_hex)}</password_sha256_hex>"
    nets = _hosts(hosts)
    if nets == ["any"]:
        networks = "<ip>::/0</ip>"
    elif nets:
        networks = "".join(f"<ip>{n}</ip>" for n in nets)
    else:
        networks = "<ip>::1</ip><ip>127.0.0.1</ip>"
    limit_xml = "".join(f"<{k}>{v}</{k}>" for k, v in limits.settings())
    grants = "\n".join(f"        <query>GRANT SELECT ON {db}.{t}</query>" for t in names)
    filters = "\n".join(f"          <{t}><filter>{cond}</filter></{t}>" for t in names)
    return f"""<clickhouse>
  <profiles>
    <default/>
    <{PROFILE}><readonly>1</readonly>{limit_xml}</{PROFILE}>
  </profiles>
  <quotas><default/></quotas>
  <users>
    <{usr}>
      {auth}
      <networks>{networks}</networks>
      <profile>{PROFILE}</profile>
      <quota>default</quota>
      <grants>
{grants}
      </grants>
      <databases>
        <{db}>
{filters}
        </{db}>
      </databases>
    </{usr}>
  </users>
</clickhouse>
"""


def _password_hash_from(args: argparse.Namespace) -> str | None:
    if args.password_sha256:
        return str(args.password_sha256)
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                return password_sha256(f.readline().rstrip("\r\n"))
        except OSError as exc:
            raise ConfigError(f"cannot read the password file: {exc}") from exc
    if os.environ.get(PASSWORD_ENV):
        return password_sha256(os.environ[PASSWORD_ENV])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nodemeter_stream.analytics.policies",
        description="Print the access recipe for a tenant-restricted analyst.",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", help="the analyst's ClickHouse user name (not with --embedded)")
    p.add_argument("--database", default="nodemeter")
    p.add_argument("--tables", help="comma-separated (default: read from the configured store)")
    p.add_argument("--xml", action="store_true", help="users.xml form instead of SQL")
    p.add_argument(
        "--embedded",
        action="store_true",
        help="users.xml for a chDB store: the default user, no password (implies --xml)",
    )
    p.add_argument("--password-sha256", metavar="HEX", help="SHA-256 hex of the password")
    p.add_argument(
        "--password-file",
        metavar="PATH",
        help=f"read the password from the file's first line (or set ${PASSWORD_ENV})",
    )
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="CIDR",
        help="network the analyst may connect from (repeatable; 'any'; default: local only)",
    )
    p.add_argument("--max-memory", type=int, default=Limits.max_memory_usage, metavar="BYTES")
    p.add_argument(
        "--max-execution-time", type=int, default=Limits.max_execution_time, metavar="SECONDS"
    )
    args = p.parse_args(argv)
    try:
        if args.embedded:
            if args.user not in (None, "default"):
                raise ConfigError("--embedded defines the default user; leave out --user")
            args.user = "default"
        elif not args.user:
            raise ConfigError("--user is required")
        if args.tables:
            tables = [t.strip() for t in args.tables.split(",") if t.strip()]
        else:
            from nodemeter_stream.sink.store import ClickHouseConfig, connect

            tables = tenant_tables(connect(ClickHouseConfig(database=args.database)))
        limits = Limits(
            max_memory_usage=args.max_memory, max_execution_time=args.max_execution_time
        )
        kw: dict[str, Any] = {
            "database": args.database,
            "tenant": args.tenant,
            "user": args.user,
            "tables": tables,
            "hosts": args.host,
            "limits": limits,
        }
        if args.embedded:
            text = users_xml(**kw, embedded=True)
        elif args.xml:
            text = users_xml(**kw, password_sha256_hex=_password_hash_from(args))
        else:
            stmts = policy_sql(**kw, password_sha256_hex=_password_hash_from(args))
            text = "".join(s + ";\n" for s in stmts)
    except NodemeterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
