"""The schema for a ClickHouse cluster, written from the single-server migrations (pure).

``nodemeter migrate --cluster NAME`` runs every statement of ``sql/migrations`` through
:class:`ClusterSchema`, in order, which returns the statements that do the same on a
cluster (docs/scaling.md). SQL text in, SQL text out; nothing here connects.

* Every DDL gets ``ON CLUSTER NAME``.
* ``*MergeTree`` engines become ``Replicated*MergeTree(path, replica, args...)``; the path
  holds ``{uuid}`` and ``{shard}`` (ClickHouse's own default, ``/clickhouse/tables/{uuid}/
  {shard}``), the replica name ``{replica}``: server macros, both overridable.
* ``non_replicated_deduplication_window = N`` becomes ``replicated_deduplication_window =
  N`` plus ``replicated_deduplication_window_seconds`` (ClickHouse's default for it is one
  hour, shorter than a sink outage can last; the single-server window has no time bound).
* Each sharded table ``t`` gets a ``Distributed`` table ``t_all`` for reads, sharded by
  ``cityHash64(tenant)``; a plain view ``v`` gets ``v_all`` reading the ``_all`` tables.
  A few small tables every worker must see whole (its progress of record, the price
  books, issued statements, the migration ledger) are *global*: one replica set over
  every node of the cluster, read by their own names, no ``_all``.
* Materialized views write the local tables (source and target sharded alike).
* ``CREATE OR REPLACE TABLE t ... AS SELECT`` becomes: build ``t__replace``, fill it
  through ``_all`` tables (once, from one node), ``EXCHANGE`` it with ``t``, drop the old.
* ``INSERT INTO t SELECT`` writes ``t_all`` from the ``_all`` tables, synchronously.

Anything else raises :class:`ClusterSchemaError` naming the statement: the generator
never emits a table that is not replicated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nodemeter.errors import NodemeterError

DEFAULT_REPLICA_PATH = "/clickhouse/tables/{uuid}/{shard}"
DEFAULT_GLOBAL_REPLICA_PATH = "/clickhouse/tables/{uuid}/global"
DEFAULT_REPLICA_NAME = "{replica}"
# Keeper keeps block hashes this long after the newest insert (ClickHouse's default: 1 h).
DEFAULT_DEDUPE_WINDOW_SECONDS = 7 * 24 * 3600
DISTRIBUTED_SUFFIX = "_all"
REPLACE_SUFFIX = "__replace"
# Tables every node holds whole: small, and read by every worker whatever its shard.
GLOBAL_TABLES = frozenset({"schema_migrations", "worker_state", "price_book_rates", "statements"})
DEFAULT_SHARDING_KEY = "cityHash64(tenant)"

_MERGE_TREE = re.compile(
    r"^(Replacing|Summing|Aggregating|Collapsing|VersionedCollapsing|Graphite|Coalescing)?"
    r"MergeTree$"
)
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class ClusterSchemaError(NodemeterError):
    """A statement the cluster generator cannot convert, or invalid cluster options."""


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """How to lay the schema out on the cluster ``cluster``; validated when built."""

    cluster: str
    replica_path: str = DEFAULT_REPLICA_PATH
    global_replica_path: str = DEFAULT_GLOBAL_REPLICA_PATH
    replica_name: str = DEFAULT_REPLICA_NAME
    dedupe_window_seconds: int = DEFAULT_DEDUPE_WINDOW_SECONDS
    global_tables: frozenset[str] = GLOBAL_TABLES
    # table -> sharding expression; tables not named here with a tenant column use
    # DEFAULT_SHARDING_KEY
    sharding_keys: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _CLUSTER_NAME.match(self.cluster):
            raise ClusterSchemaError(f"cluster name {self.cluster!r}: use letters, digits, _ . -")
        for what, path in (
            ("replica path", self.replica_path),
            ("global replica path", self.global_replica_path),
        ):
            if "'" in path or "\\" in path:
                raise ClusterSchemaError(f"{what} {path!r}: no quotes or backslashes")
            # {uuid}: unique per table, and it moves with the table through EXCHANGE
            # (CREATE OR REPLACE). {table} is expanded once, at creation: after EXCHANGE
            # the live table keeps the staging table's path, and the next replacement
            # would create its staging table on that same path.
            if "{uuid}" not in path:
                raise ClusterSchemaError(f"{what} {path!r} must contain {{uuid}}")
            if "{table}" in path:
                raise ClusterSchemaError(
                    f"{what} {path!r}: {{table}} is expanded when a table is created and does "
                    "not follow EXCHANGE TABLES (CREATE OR REPLACE); {uuid} names the table"
                )
        if "{shard}" not in self.replica_path:
            raise ClusterSchemaError(f"replica path {self.replica_path!r} must contain {{shard}}")
        if "{shard}" in self.global_replica_path:
            raise ClusterSchemaError(
                f"global replica path {self.global_replica_path!r}: a global table is one "
                "replica set over all shards, its path has no {shard}"
            )
        if not self.replica_name or "'" in self.replica_name:
            raise ClusterSchemaError(f"replica name {self.replica_name!r}")
        if self.dedupe_window_seconds <= 0:
            raise ClusterSchemaError("dedupe_window_seconds must be positive")

    @property
    def on_cluster(self) -> str:
        simple = re.fullmatch(_NAME, self.cluster)
        return f"ON CLUSTER {self.cluster if simple else '`' + self.cluster + '`'}"


@dataclass
class _Table:
    name: str
    columns: str  # the column block, parentheses included
    engine_tail: str  # "ENGINE = Replicated...(...)" and the clauses after it
    sharding_key: str | None  # None: global


@dataclass
class ClusterSchema:
    """Converts statements in migration order, remembering what earlier ones created."""

    options: ClusterOptions
    tables: dict[str, _Table] = field(default_factory=dict)
    views: set[str] = field(default_factory=set)
    mat_views: set[str] = field(default_factory=set)

    # ---- entry points -------------------------------------------------------------

    def convert_all(
        self, migrations: Iterable[tuple[str, Sequence[str]]]
    ) -> list[tuple[str, list[str]]]:
        """``(name, statements)`` per migration -> the same with the cluster statements."""
        return [(name, self.convert_many(stmts, where=name)) for name, stmts in migrations]

    def convert_many(self, statements: Sequence[str], *, where: str = "") -> list[str]:
        out: list[str] = []
        for i, stmt in enumerate(statements, 1):
            out += self.convert(stmt, where=f"{where} statement {i}" if where else "")
        return out

    def convert(self, statement: str, *, where: str = "") -> list[str]:
        """One single-server statement -> the statements that do it on the cluster."""
        sql = strip_comments(statement).strip().rstrip(";").strip()
        try:
            return self._convert(sql)
        except ClusterSchemaError as exc:
            first = " ".join(sql.split())[:90]
            raise ClusterSchemaError(f"{where or 'statement'}: {exc} [{first} ...]") from None

    # ---- dispatch -----------------------------------------------------------------

    def _convert(self, sql: str) -> list[str]:
        m = mask(sql)
        if re.search(r"\bON\s+CLUSTER\b", m, re.I):
            raise ClusterSchemaError(
                "already names a cluster (ON CLUSTER): write it for one server"
            )
        qualified = rf"\s*(CREATE|ALTER|DROP|INSERT)(\s+(OR|REPLACE|MATERIALIZED|TABLE|VIEW|IF|NOT|EXISTS|INTO))*\s+{_NAME}\s*\."
        if re.match(qualified, m, re.I):
            raise ClusterSchemaError("names a database: migrations use unqualified names")
        rules = (
            (r"CREATE\s+(OR\s+REPLACE\s+)?TABLE\b", self._create_table),
            (r"CREATE\s+MATERIALIZED\s+VIEW\b", self._create_mat_view),
            (r"CREATE\s+(OR\s+REPLACE\s+)?VIEW\b", self._create_view),
            (r"ALTER\s+TABLE\b", self._alter_table),
            (r"DROP\s+(TABLE|VIEW)\b", self._drop),
            (r"INSERT\s+INTO\b", self._insert),
        )
        for pattern, handler in rules:
            if re.match(rf"\s*{pattern}", m, re.I):
                return handler(sql, m)
        raise ClusterSchemaError(
            "no cluster conversion for this kind of statement (known: CREATE TABLE / VIEW / "
            "MATERIALIZED VIEW ... TO, ALTER TABLE, DROP TABLE / VIEW, INSERT INTO ... SELECT)"
        )

    # ---- CREATE TABLE -------------------------------------------------------------

    def _create_table(self, sql: str, m: str) -> list[str]:
        head = re.match(
            rf"\s*CREATE\s+(?P<replace>OR\s+REPLACE\s+)?TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?"
            rf"(?P<name>{_NAME})\s*",
            m,
            re.I,
        )
        if not head:
            raise ClusterSchemaError("cannot read the table name")
        name = head["name"]
        if name.endswith((DISTRIBUTED_SUFFIX, REPLACE_SUFFIX)):
            raise ClusterSchemaError(
                f"table name {name!r} ends with {DISTRIBUTED_SUFFIX!r} or {REPLACE_SUFFIX!r}, "
                "which the cluster schema uses for its own tables"
            )
        pos = head.end()
        if pos >= len(m) or m[pos] != "(":
            raise ClusterSchemaError("CREATE TABLE without a column list (AS another table)")
        close = _matching_paren(m, pos)
        columns = sql[pos : close + 1]
        rest, rest_m = sql[close + 1 :], m[close + 1 :]
        as_select = _top_level(rest_m, r"\bAS\s+(SELECT|WITH)\b")
        body, select = (rest, "") if as_select < 0 else (rest[:as_select], rest[as_select:])
        body_m = rest_m[: len(body)]
        replace = bool(head["replace"])
        if select and not replace:
            raise ClusterSchemaError(
                "CREATE TABLE ... AS SELECT: write CREATE OR REPLACE TABLE ... AS SELECT "
                "(safe to run again) or a CREATE TABLE and an INSERT"
            )
        if replace and head["ine"]:
            raise ClusterSchemaError("CREATE OR REPLACE TABLE IF NOT EXISTS")
        if not replace and not head["ine"]:
            raise ClusterSchemaError("CREATE TABLE without IF NOT EXISTS is not safe to re-run")
        key = self._placement(name, columns)
        tail = self._replicated_tail(body, body_m, global_=key is None)
        table = _Table(name, columns, tail, key)
        if not replace:
            self.tables[name] = table
            return [
                f"CREATE TABLE IF NOT EXISTS {name} {self.options.on_cluster}\n{columns}\n{tail}",
                *self._distributed(table),
            ]
        return self._replace_table(table, select)

    def _placement(self, name: str, columns: str) -> str | None:
        if name in self.options.global_tables:
            return None
        if name in self.options.sharding_keys:
            return self.options.sharding_keys[name]
        if re.search(r"(^|[(,])\s*`?tenant`?\s", mask(columns), re.M):
            return DEFAULT_SHARDING_KEY
        raise ClusterSchemaError(
            f"table {name!r} has no tenant column to shard by: name its sharding key "
            "(ClusterOptions.sharding_keys) or make it global (ClusterOptions.global_tables, "
            "GLOBAL_TABLES in sink/cluster.py)"
        )

    def _replicated_tail(self, body: str, body_m: str, *, global_: bool) -> str:
        em = re.match(r"\s*ENGINE\s*=\s*(?P<engine>\w+)(\s*(?=\())?", body_m, re.I)
        if not em:
            raise ClusterSchemaError("no ENGINE clause (the default engine is not replicated)")
        engine = em["engine"]
        if engine.startswith("Replicated"):
            raise ClusterSchemaError(f"{engine}: already replicated; write the plain engine")
        if not _MERGE_TREE.match(engine):
            raise ClusterSchemaError(f"engine {engine} has no replicated form")
        pos, args = em.end(), ""
        if pos < len(body_m) and body_m[pos] == "(":
            close = _matching_paren(body_m, pos)
            args = body[pos + 1 : close].strip()
            pos = close + 1
        path = self.options.global_replica_path if global_ else self.options.replica_path
        rargs = ", ".join(x for x in (f"'{path}'", f"'{self.options.replica_name}'", args) if x)
        clauses = self._settings(body[pos:], body_m[pos:])
        return f"ENGINE = Replicated{engine}({rargs}){clauses}".rstrip()

    def _settings(self, text: str, text_m: str) -> str:
        """Rewrite ``non_replicated_deduplication_window`` in a SETTINGS list."""
        spans = list(re.finditer(r"\bnon_replicated_deduplication_window\s*=\s*(\d+)", text_m))
        for hit in reversed(spans):
            n = int(hit[1])
            new = f"replicated_deduplication_window = {n}"
            if n:
                new += f", replicated_deduplication_window_seconds = {self.options.dedupe_window_seconds}"
            text = text[: hit.start()] + new + text[hit.end() :]
        if re.search(r"\bnon_replicated_deduplication_window\b", mask(text)):
            raise ClusterSchemaError("non_replicated_deduplication_window without a number")
        return text

    def _distributed(self, table: _Table, *, replace: bool = False) -> list[str]:
        if table.sharding_key is None:
            return []
        create = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE IF NOT EXISTS"
        return [
            f"{create} {table.name}{DISTRIBUTED_SUFFIX} {self.options.on_cluster} AS {table.name}\n"
            f"ENGINE = Distributed('{self.options.cluster}', currentDatabase(), {table.name}, "
            f"{table.sharding_key})"
        ]

    def _replace_table(self, table: _Table, select: str) -> list[str]:
        oc, name, tmp = self.options.on_cluster, table.name, table.name + REPLACE_SUFFIX
        prior = self.tables.get(name)
        if prior is not None and prior.sharding_key != table.sharding_key:
            raise ClusterSchemaError(f"{name}: replacing it would change its sharding key")
        self.tables[name] = table
        staged = _Table(tmp, table.columns, table.engine_tail, table.sharding_key)
        out = [
            f"DROP TABLE IF EXISTS {tmp}{DISTRIBUTED_SUFFIX} {oc} SYNC",
            f"DROP TABLE IF EXISTS {tmp} {oc} SYNC",
            f"CREATE TABLE {tmp} {oc}\n{table.columns}\n{table.engine_tail}",
        ]
        if select:
            target = tmp
            if table.sharding_key is not None:
                out += self._distributed(staged)
                target = tmp + DISTRIBUTED_SUFFIX
            out.append(
                f"INSERT INTO {target} SETTINGS distributed_foreground_insert = 1\n"
                f"{self._reads_all(select[select_start(select) :])}"
            )
            if table.sharding_key is not None:
                out.append(f"DROP TABLE IF EXISTS {tmp}{DISTRIBUTED_SUFFIX} {oc} SYNC")
        out += [
            f"CREATE TABLE IF NOT EXISTS {name} {oc}\n{table.columns}\n{table.engine_tail}",
            f"EXCHANGE TABLES {tmp} AND {name} {oc}",
            f"DROP TABLE IF EXISTS {tmp} {oc} SYNC",
            *self._distributed(table, replace=True),
        ]
        return out

    # ---- views --------------------------------------------------------------------

    def _create_mat_view(self, sql: str, m: str) -> list[str]:
        head = re.match(
            rf"\s*CREATE\s+MATERIALIZED\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?(?P<name>{_NAME})\s+"
            rf"TO\s+(?P<target>{_NAME})\s+AS\s+",
            m,
            re.I,
        )
        if not head:
            raise ClusterSchemaError(
                "a materialized view needs IF NOT EXISTS and TO <table> (an inner table would "
                "not be replicated)"
            )
        target = self.tables.get(head["target"])
        reads = [self.tables.get(h["name"]) for h in self._relations(m[head.end() :])]
        source = reads[0] if reads else None
        if target is None or source is None or None in reads:
            raise ClusterSchemaError(
                f"materialized view {head['name']}: it must read tables and write a table "
                f"({head['target']!r}) that earlier migrations create"
            )
        for other in reads[1:]:
            assert other is not None
            if other.sharding_key is not None and other.sharding_key != source.sharding_key:
                raise ClusterSchemaError(
                    f"materialized view {head['name']} joins {other.name} (sharded by "
                    f"{other.sharding_key}) to {source.name}: its rows are on other shards"
                )
        if target.sharding_key is not None and target.sharding_key != source.sharding_key:
            raise ClusterSchemaError(
                f"materialized view {head['name']} writes {target.name} (sharded by "
                f"{target.sharding_key}) from {source.name} (sharded by "
                f"{source.sharding_key or 'nothing: global'}): rows would land on the wrong shard"
            )
        self.mat_views.add(head["name"])
        return [self._on_cluster_after(sql, head.start("name"), head["name"])]

    def _create_view(self, sql: str, m: str) -> list[str]:
        head = re.match(
            rf"\s*CREATE\s+(?P<replace>OR\s+REPLACE\s+)?VIEW\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?"
            rf"(?P<name>{_NAME})\s+AS\s+",
            m,
            re.I,
        )
        if not head:
            raise ClusterSchemaError("cannot read the view (CREATE VIEW name AS SELECT ...)")
        name, select = head["name"], sql[head.end() :]
        create = "CREATE OR REPLACE VIEW" if head["replace"] else "CREATE VIEW IF NOT EXISTS"
        self.views.add(name)
        oc = self.options.on_cluster
        return [
            f"{create} {name} {oc} AS\n{select}",
            f"{create} {name}{DISTRIBUTED_SUFFIX} {oc} AS\n{self._reads_all(select)}",
        ]

    # ---- ALTER, DROP, INSERT ------------------------------------------------------

    def _alter_table(self, sql: str, m: str) -> list[str]:
        head = re.match(rf"\s*ALTER\s+TABLE\s+(?P<name>{_NAME})\s+", m, re.I)
        if not head:
            raise ClusterSchemaError("cannot read the table name")
        name = head["name"]
        table = self.tables.get(name)
        if table is None:
            raise ClusterSchemaError(f"ALTER TABLE {name}: no earlier migration creates it")
        rest = sql[head.end() :]
        if re.search(r"\bnon_replicated_deduplication_window\b", mask(rest)):
            rest = self._settings(rest, mask(rest))
        out = [f"ALTER TABLE {name} {self.options.on_cluster}\n    {rest}"]
        if re.search(r"\b(ADD|DROP|MODIFY|RENAME|CLEAR)\s+COLUMN\b", mask(rest), re.I):
            out += self._distributed(table, replace=True)  # its columns follow the table's
        return out

    def _drop(self, sql: str, m: str) -> list[str]:
        head = re.match(
            rf"\s*DROP\s+(?P<kind>TABLE|VIEW)\s+(?P<ie>IF\s+EXISTS\s+)?(?P<name>{_NAME})"
            r"(?P<sync>\s+SYNC)?\s*$",
            m,
            re.I,
        )
        if not head or not head["ie"]:
            raise ClusterSchemaError("DROP without IF EXISTS (not safe to re-run) or with options")
        kind, name, oc = head["kind"].upper(), head["name"], self.options.on_cluster
        out = []
        if name in self.tables and self.tables[name].sharding_key is not None:
            out.append(f"DROP TABLE IF EXISTS {name}{DISTRIBUTED_SUFFIX} {oc} SYNC")
        if name in self.views:
            out.append(f"DROP VIEW IF EXISTS {name}{DISTRIBUTED_SUFFIX} {oc} SYNC")
        out.append(f"DROP {kind} IF EXISTS {name} {oc} SYNC")
        self.tables.pop(name, None)
        self.views.discard(name)
        self.mat_views.discard(name)
        return out

    def _insert(self, sql: str, m: str) -> list[str]:
        head = re.match(rf"\s*INSERT\s+INTO\s+(TABLE\s+)?(?P<name>{_NAME})\s*", m, re.I)
        if not head:
            raise ClusterSchemaError("cannot read the table name")
        name = head["name"]
        table = self.tables.get(name)
        if table is None:
            raise ClusterSchemaError(f"INSERT INTO {name}: no earlier migration creates it")
        rest, rest_m = sql[head.end() :], m[head.end() :]
        cols = ""
        if rest_m.startswith("("):
            close = _matching_paren(rest_m, 0)
            cols, rest, rest_m = rest[: close + 1] + " ", rest[close + 1 :], rest_m[close + 1 :]
        if not re.match(r"\s*(SELECT|WITH)\b", rest_m, re.I):
            raise ClusterSchemaError("INSERT without a SELECT (or with SETTINGS, FORMAT, VALUES)")
        target = name if table.sharding_key is None else name + DISTRIBUTED_SUFFIX
        return [
            f"INSERT INTO {target} {cols}SETTINGS distributed_foreground_insert = 1\n"
            f"{self._reads_all(rest.strip())}"
        ]

    # ---- helpers ------------------------------------------------------------------

    def _reads_all(self, select: str) -> str:
        """The SELECT with every sharded table and view read through its ``_all``."""
        m = mask(select)
        out, last = [], 0
        for hit in self._relations(m):
            name = hit["name"]
            sharded = name in self.tables and self.tables[name].sharding_key is not None
            if sharded or name in self.views:
                out += [select[last : hit.end("name")], DISTRIBUTED_SUFFIX]
                last = hit.end("name")
            elif name in self.mat_views:
                raise ClusterSchemaError(f"reads the materialized view {name}: read its table")
        return "".join(out) + select[last:]

    def _relations(self, select_m: str) -> list[re.Match[str]]:
        """The tables a query reads (``FROM`` / ``JOIN``), each known to the schema.

        Table functions, qualified names (``system.parts``) and the query's own ``WITH``
        names are left out; any other name is an error: the generator would not know
        whether to read it locally or through ``_all``.
        """
        ctes = set(re.findall(rf"(?:\bWITH|,)\s*({_NAME})\s+AS\s*\(", select_m, re.I))
        known = set(self.tables) | self.views | self.mat_views
        found = []
        for hit in re.finditer(rf"\b(FROM|JOIN)\s+(?P<name>{_NAME})\b(?!\s*[(.])", select_m, re.I):
            if hit["name"] in ctes:
                continue
            if hit["name"] not in known:
                raise ClusterSchemaError(
                    f"reads {hit['name']!r}, which no earlier migration creates"
                )
            found.append(hit)
        return found

    def _on_cluster_after(self, sql: str, start: int, name: str) -> str:
        end = start + len(name)
        return f"{sql[:end]} {self.options.on_cluster}{sql[end:]}"


def select_start(text: str) -> int:
    """Where the query after ``AS`` starts."""
    hit = re.match(r"\s*AS\s+", mask(text), re.I)
    return hit.end() if hit else 0


def _top_level(m: str, pattern: str) -> int:
    """Position of the first match of ``pattern`` outside parentheses, or -1."""
    depth = 0
    for hit in re.finditer(rf"[()]|{pattern}", m, re.I):
        tok = hit.group(0)
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif depth == 0:
            return hit.start()
    return -1


def _matching_paren(m: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(m)):
        if m[i] == "(":
            depth += 1
        elif m[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ClusterSchemaError("unbalanced parentheses")


def _scan(sql: str, *, keep_comments: bool, mask_strings: bool) -> str:
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            j = min(j, n - 1)
            lit = sql[i : j + 1]
            out.append(c + "_" * (len(lit) - 2) + c if mask_strings and c == "'" else lit)
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            if keep_comments:
                out.append(" " * (j - i))
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            if keep_comments:
                out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_comments(sql: str) -> str:
    """``sql`` without ``--`` and ``/* */`` comments (string literals kept as they are)."""
    text = _scan(sql, keep_comments=False, mask_strings=False)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def mask(sql: str) -> str:
    """``sql`` with string contents and comments blanked, same length: for matching."""
    return _scan(sql, keep_comments=True, mask_strings=True)


def render(migrations: Sequence[tuple[str, Sequence[str]]], *, header: str = "") -> str:
    """The statements as one SQL text, ``-- name`` before each migration's."""
    parts = [header] if header else []
    for name, stmts in migrations:
        parts.append(f"-- {name}\n" + "".join(f"{s};\n\n" for s in stmts).rstrip("\n") + "\n")
    return "\n".join(parts)
