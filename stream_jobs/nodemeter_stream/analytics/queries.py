"""The analyst query library: parameterized SQL files in ``sql/queries/``.

Each ``NAME.sql`` holds one SELECT with ClickHouse query parameters
(``{tenant:String}``, ``{start:DateTime('UTC')}``, ...), bound by clickhouse-connect
(``parameters=``), never pasted into the text. Its leading ``--`` comment lines say
what it answers. :func:`run` checks the parameters against the placeholders first,
so a typo is a clear :class:`QueryParameterError`, not a server error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from nodemeter_stream.analytics.errors import QueryError, QueryParameterError, UnknownQueryError
from nodemeter_stream.sink.migrate import sql_dir

_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^{}]+)\}")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def queries_dir() -> Path:
    return sql_dir() / "queries"


@dataclass(frozen=True)
class Query:
    name: str
    text: str

    @property
    def params(self) -> dict[str, str]:
        """Placeholder name -> ClickHouse type, in order of first use."""
        out: dict[str, str] = {}
        for name, typ in _PARAM_RE.findall(self.text):
            if out.setdefault(name, typ) != typ:
                raise QueryParameterError(
                    f"{self.name}.sql uses {{{name}}} with two types: {out[name]} and {typ}"
                )
        return out

    @property
    def description(self) -> str:
        lines = []
        for line in self.text.splitlines():
            if not line.startswith("--"):
                break
            lines.append(line[2:].strip())
        return " ".join(lines)

    def bind(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``values`` against the placeholders and convert them for the driver."""
        declared = self.params
        missing = [p for p in declared if p not in values]
        extra = sorted(set(values) - set(declared))
        if missing or extra:
            raise QueryParameterError(
                f"query {self.name!r} takes {', '.join(declared) or 'no parameters'}"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(extra)}" if extra else "")
            )
        return {p: convert(self.name, p, declared[p], values[p]) for p in declared}


def convert(query: str, name: str, ch_type: str, value: Any) -> Any:
    """A Python value in the form the driver binds for ``ch_type``."""
    base = ch_type.split("(", 1)[0].strip()
    where = f"query {query!r} parameter {name!r} ({ch_type})"
    if base.startswith("DateTime"):
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise QueryParameterError(f"{where} needs a timezone-aware datetime, got {value!r}")
        # the placeholder's type carries the zone ('UTC'); send the UTC wall clock
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if base == "Date":
        if isinstance(value, datetime) or not isinstance(value, date):
            raise QueryParameterError(f"{where} needs a date, got {value!r}")
        return value.isoformat()
    if base.startswith(("UInt", "Int")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise QueryParameterError(f"{where} needs an integer, got {value!r}")
        if base.startswith("UInt") and value < 0:
            raise QueryParameterError(f"{where} must not be negative, got {value}")
        return value
    if base == "String":
        if not isinstance(value, str):
            raise QueryParameterError(f"{where} needs a string, got {value!r}")
        return value
    return value


def names() -> list[str]:
    return sorted(p.stem for p in queries_dir().glob("*.sql"))


@cache
def _load(path: Path, mtime_ns: int) -> Query:
    return Query(path.stem, path.read_text())


def load(name: str) -> Query:
    if not _NAME_RE.match(name):
        raise UnknownQueryError(f"{name!r} is not a query name (lowercase letters, digits, _)")
    path = queries_dir() / f"{name}.sql"
    if not path.is_file():
        raise UnknownQueryError(f"no query {name!r}; the library has: {', '.join(names())}")
    return _load(path, path.stat().st_mtime_ns)


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


def run(client: Any, name: str, **params: Any) -> QueryResult:
    """Run library query ``name`` with ``params`` bound as query parameters."""
    query = load(name)
    return _execute(client, query.text, query.bind(params), what=f"query {name!r}")


def run_sql(client: Any, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
    """Run ad-hoc SQL (``nodemeter sql``)."""
    return _execute(client, sql, dict(parameters) if parameters else None, what="the query")


def _execute(client: Any, sql: str, parameters: dict[str, Any] | None, *, what: str) -> QueryResult:
    from clickhouse_connect.driver.exceptions import ClickHouseError

    try:
        result = client.query(sql, parameters=parameters)
    except ClickHouseError as exc:
        # the server's message without the driver's repeated preamble
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise QueryError(f"{what} failed: {message}") from exc
    return QueryResult(tuple(result.column_names), [tuple(r) for r in result.result_rows])


def library() -> Sequence[Query]:
    return [load(n) for n in names()]
