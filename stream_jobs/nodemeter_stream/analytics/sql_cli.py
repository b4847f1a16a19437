"""``nodemeter sql``: run SQL, or a query of the library, and print a table.

nodemeter sql "SELECT tenant, sum(amount) FROM priced_lines FINAL GROUP BY tenant"
nodemeter sql --query node_costs -p tenant=acme -p start=2026-11-01 -p end=2026-12-01
nodemeter sql --list
"""

from __future__ import annotations

import argparse
import re
import sys

from nodemeter.errors import ConfigError, NodemeterError
from nodemeter_stream.analytics import queries
from nodemeter_stream.analytics.cli_common import (
    add_store_arguments,
    cell,
    numeric,
    open_store,
    parse_param,
)
from nodemeter_stream.analytics.errors import QueryError, QueryParameterError
from nodemeter_stream.analytics.report import table, terminal_safe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", nargs="?", help="the SQL to run (one statement)")
    parser.add_argument("--query", "-q", help="run this query of sql/queries/ instead")
    parser.add_argument(
        "--param", "-p", action="append", default=[], metavar="NAME=VALUE", help="query parameter"
    )
    parser.add_argument("--list", action="store_true", help="list the library's queries")
    parser.add_argument(
        "--format", choices=("table", "tsv"), default="table", help="output (default table)"
    )
    add_store_arguments(parser)


def _run_sql(client: object, sql: str, raw: dict[str, str]) -> queries.QueryResult:
    """Ad-hoc SQL; every ``-p NAME=VALUE`` must appear as ``{NAME:Type}`` in it.

    Parameters are bound by the server, never pasted into the text. Without a
    ``{name:Type}`` placeholder clickhouse-connect would format the SQL client-side
    with Python's ``%`` (a ``%`` in the SQL then raised ValueError), so that is refused.
    """
    unused = [n for n in raw if not re.search(r"\{\s*" + re.escape(n) + r"\s*:", sql)]
    if unused:
        raise QueryParameterError(
            f"parameter(s) {unused} not used in the SQL: refer to each as {{name:Type}}, "
            f"e.g. {{{unused[0]}:String}}"
        )
    try:
        return queries.run_sql(client, sql, raw or None)
    except ValueError as exc:
        if isinstance(exc, NodemeterError):
            raise
        raise QueryError(f"the query could not be bound: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    if args.list:
        for q in queries.library():
            params = ", ".join(f"{n} {t}" for n, t in q.params.items()) or "-"
            print(f"{q.name:28} ({params})\n    {q.description}")
        return 0
    if bool(args.sql) == bool(args.query):
        raise ConfigError("give either SQL text or --query NAME (see --list)")
    raw = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE")
        raw[name] = value
    client = open_store(args, migrated=bool(args.query))
    if args.query:
        declared = queries.load(args.query).params
        values = {n: parse_param(declared.get(n, "String"), v) for n, v in raw.items()}
        result = queries.run(client, args.query, **values)
    else:
        result = _run_sql(client, args.sql, raw)
    if args.format == "tsv":  # values escaped as in ClickHouse's TSV (\t, \n, \\)
        print("\t".join(terminal_safe(c) for c in result.columns))
        for r in result.rows:
            print("\t".join(terminal_safe(cell(v)) for v in r))
        return 0
    right = [i for i in range(len(result.columns)) if numeric([r[i] for r in result.rows])]
    cells = [[cell(v) for v in r] for r in result.rows]
    print(table(list(result.columns), cells, right))
    print(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})", file=sys.stderr)
    return 0
