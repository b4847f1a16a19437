"""``nodemeter migrate --cluster``: the generated SQL against golden files, and its rules.

The golden files under ``tests/golden/cluster/`` (one per migration, plus the ledger) are
what ``nodemeter migrate --cluster nodemeter --print`` writes. After adding or changing
a migration, regenerate them and review the diff::

    make cluster-golden        # = .venv/bin/python tests/unit/test_cluster_schema.py --write

That every generated statement parses in the real engine is checked by
``tests/integration/test_cluster_schema_parse.py``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nodemeter_stream.sink.cluster import (
    ClusterOptions,
    ClusterSchema,
    ClusterSchemaError,
    mask,
    render,
)
from nodemeter_stream.sink.migrate import discover, ledger_statements, migrate, plan

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "cluster"
OPTIONS = ClusterOptions(cluster="nodemeter")
LEDGER = "schema_migrations.sql"


def generated() -> dict[str, str]:
    """File name -> the cluster SQL of that migration (every migration converted in order)."""
    files = {LEDGER: render([("schema_migrations (ledger)", ledger_statements(OPTIONS))])}
    for mig, stmts in plan(cluster=OPTIONS):
        files[mig.path.name] = render([(mig.path.name, stmts)])
    return files


def all_statements() -> list[str]:
    return [*ledger_statements(OPTIONS), *(s for _, stmts in plan(cluster=OPTIONS) for s in stmts)]


def test_every_migration_has_its_golden_file_and_matches_it() -> None:
    names = [LEDGER, *(m.path.name for m in discover())]
    files = generated()
    missing = [n for n in names if not (GOLDEN / n).exists()]
    assert not missing, f"no golden cluster SQL for {missing}: run `make cluster-golden`"
    differ = [n for n in names if (GOLDEN / n).read_text() != files[n]]
    assert not differ, (
        f"the cluster SQL of {differ} changed: run `make cluster-golden` and review the diff"
    )


def test_no_golden_file_without_its_migration() -> None:
    stale = sorted({p.name for p in GOLDEN.glob("*.sql")} - set(generated()))
    assert not stale, f"golden files of migrations that no longer exist: {stale}"


def test_every_ddl_names_the_cluster_and_every_table_is_replicated_or_distributed() -> None:
    statements = all_statements()
    assert len(statements) > 50
    for stmt in statements:
        m = mask(stmt)
        if stmt.startswith("INSERT"):
            assert "ON CLUSTER" not in m  # data: one node, through Distributed tables
            assert re.match(
                r"INSERT INTO \w+ (\(.*?\) )?SETTINGS distributed_foreground_insert = 1", stmt, re.S
            )
            continue
        assert re.search(r"\bON CLUSTER nodemeter\b", m), stmt
        if re.match(r"CREATE (OR REPLACE )?TABLE", stmt):
            engine = re.search(r"\bENGINE = (\w+)", m)
            assert engine, stmt
            assert engine[1].startswith("Replicated") or engine[1] == "Distributed", stmt
        assert "non_replicated_deduplication_window" not in m, stmt


def test_dedupe_windows_carry_over_with_the_time_window() -> None:
    for mig, stmts in plan(cluster=OPTIONS):
        windows = re.findall(r"non_replicated_deduplication_window = (\d+)", mask(mig.text))
        carried = [
            re.search(
                r"replicated_deduplication_window = (\d+), "
                r"replicated_deduplication_window_seconds = 604800",
                s,
            )
            for s in stmts
            if re.match(r"CREATE (TABLE IF NOT EXISTS|OR REPLACE TABLE) \w+ ON", s)
            and "Distributed" not in s
        ]
        # a replaced table is created twice (staging copy and target)
        found = [c[1] for c in carried if c]
        assert sorted(set(found)) == sorted(set(windows)), mig.path.name


def test_distributed_tables_shard_by_tenant_and_global_tables_have_none() -> None:
    sql = "\n".join(all_statements())
    dist = dict(re.findall(r"TABLE (?:IF NOT EXISTS )?(\w+)_all ON CLUSTER nodemeter AS \1\n"
                           r"ENGINE = Distributed\('nodemeter', currentDatabase\(\), \1, ([^\n]+)\)", sql))  # fmt: skip
    assert {"usage_events", "priced_lines", "cost_hourly", "request_node_costs"} <= set(dist)
    assert set(dist.values()) == {"cityHash64(tenant)"}
    assert not {"worker_state", "price_book_rates", "statements", "schema_migrations"} & set(dist)
    assert "'/clickhouse/tables/{uuid}/global', '{replica}'" in sql
    assert "'/clickhouse/tables/{uuid}/{shard}', '{replica}'" in sql


def test_a_new_migration_is_converted_without_a_list_to_update(tmp_path: Path) -> None:
    # a table with a tenant column and a dedupe window, a rollup fed from it, and a view
    schema = ClusterSchema(ClusterOptions(cluster="prod-eu", replica_path="/ch/{uuid}/s{shard}"))
    out = schema.convert_many(
        [
            "CREATE TABLE IF NOT EXISTS gpu_leases (tenant String, ms UInt64) -- why\n"
            "ENGINE = SummingMergeTree ORDER BY tenant\n"
            "SETTINGS non_replicated_deduplication_window = 500",
            "CREATE TABLE IF NOT EXISTS gpu_daily (tenant String, ms UInt64) "
            "ENGINE = SummingMergeTree((ms)) ORDER BY tenant",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS gpu_daily_mv TO gpu_daily AS "
            "SELECT tenant, sum(ms) AS ms FROM gpu_leases GROUP BY tenant",
            "CREATE VIEW IF NOT EXISTS gpu_top AS SELECT tenant, ms FROM gpu_daily FINAL",
        ],
        where="099_gpu.sql",
    )
    assert out[0] == (
        "CREATE TABLE IF NOT EXISTS gpu_leases ON CLUSTER `prod-eu`\n(tenant String, ms UInt64)\n"
        "ENGINE = ReplicatedSummingMergeTree('/ch/{uuid}/s{shard}', '{replica}') ORDER BY tenant\n"
        "SETTINGS replicated_deduplication_window = 500, "
        "replicated_deduplication_window_seconds = 604800"
    )
    assert out[1].endswith("ENGINE = Distributed('prod-eu', currentDatabase(), gpu_leases, "
                           "cityHash64(tenant))")  # fmt: skip
    assert "ReplicatedSummingMergeTree('/ch/{uuid}/s{shard}', '{replica}', (ms))" in out[2]
    assert out[4].startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS gpu_daily_mv ON CLUSTER")
    assert out[4].endswith("FROM gpu_leases GROUP BY tenant")  # local to local
    assert out[-1].endswith("FROM gpu_daily_all FINAL")  # gpu_top_all reads the cluster
    assert out[-2].endswith("FROM gpu_daily FINAL")  # gpu_top: this shard


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("CREATE TABLE IF NOT EXISTS t (tenant String) ENGINE = Memory", "no replicated form"),
        ("CREATE TABLE IF NOT EXISTS t (tenant String) ORDER BY tenant", "no ENGINE clause"),
        (
            "CREATE TABLE IF NOT EXISTS t (tenant String) ENGINE = ReplicatedMergeTree ORDER BY tenant",
            "already replicated",
        ),
        (
            "CREATE TABLE IF NOT EXISTS t (id String) ENGINE = MergeTree ORDER BY id",
            "no tenant column to shard by",
        ),
        ("CREATE TABLE t (tenant String) ENGINE = MergeTree ORDER BY tenant", "IF NOT EXISTS"),
        (
            "CREATE TABLE IF NOT EXISTS t ON CLUSTER x (tenant String) ENGINE = MergeTree ORDER BY tenant",
            "already names a cluster",
        ),
        (
            "CREATE TABLE IF NOT EXISTS db.t (tenant String) ENGINE = MergeTree ORDER BY tenant",
            "names a database",
        ),
        (
            "CREATE MATERIALIZED VIEW IF NOT EXISTS v ENGINE = MergeTree ORDER BY a AS SELECT 1 AS a",
            "TO <table>",
        ),
        (
            "CREATE DICTIONARY d (k UInt64) PRIMARY KEY k SOURCE(NULL()) LAYOUT(FLAT()) LIFETIME(0)",
            "no cluster conversion",
        ),
        ("ALTER TABLE nowhere ADD COLUMN x UInt8", "no earlier migration creates it"),
        ("CREATE VIEW IF NOT EXISTS v AS SELECT * FROM nowhere", "reads 'nowhere'"),
        ("INSERT INTO usage_events VALUES ('x')", "no earlier migration creates it"),
    ],
)
def test_a_statement_it_cannot_convert_is_an_error_naming_it(statement: str, message: str) -> None:
    with pytest.raises(ClusterSchemaError, match=re.escape(message)) as err:
        ClusterSchema(OPTIONS).convert(statement, where="099_x.sql statement 1")
    assert str(err.value).startswith("099_x.sql statement 1: ")


def test_views_read_table_functions_system_tables_and_their_own_with_names() -> None:
    schema = ClusterSchema(OPTIONS)
    schema.convert(
        "CREATE TABLE IF NOT EXISTS t (tenant String) ENGINE = MergeTree ORDER BY tenant"
    )
    out = schema.convert(
        "CREATE VIEW IF NOT EXISTS v AS WITH x AS (SELECT tenant FROM t) "
        "SELECT * FROM x, numbers(1) JOIN system.one ON 1 = 1 WHERE tenant IN (SELECT tenant FROM t)"
    )
    assert out[1].count("FROM t_all") == 2 and "FROM x," in out[1]


def test_a_materialized_view_across_sharding_keys_is_refused() -> None:
    schema = ClusterSchema(OPTIONS)
    schema.convert(
        "CREATE TABLE IF NOT EXISTS worker_state (k String) ENGINE = MergeTree ORDER BY k"
    )
    schema.convert(
        "CREATE TABLE IF NOT EXISTS t (tenant String) ENGINE = MergeTree ORDER BY tenant"
    )
    with pytest.raises(ClusterSchemaError, match="wrong shard"):
        schema.convert(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO t AS SELECT k AS tenant FROM worker_state"
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cluster": "a b"}, "cluster name"),
        ({"cluster": "c", "replica_path": "/t/{shard}"}, "{uuid}"),
        ({"cluster": "c", "replica_path": "/t/{uuid}"}, "{shard}"),
        ({"cluster": "c", "replica_path": "/t/{uuid}/{shard}/{table}"}, "EXCHANGE"),
        ({"cluster": "c", "global_replica_path": "/t/{table}/{uuid}"}, "EXCHANGE"),
        ({"cluster": "c", "global_replica_path": "/t/{uuid}/{shard}"}, "no {shard}"),
        ({"cluster": "c", "dedupe_window_seconds": 0}, "positive"),
    ],
)
def test_options_are_validated_when_built(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ClusterSchemaError, match=re.escape(message)):
        ClusterOptions(**kwargs)  # type: ignore[arg-type]


class FakeClient:
    """Records the statements ``migrate`` sends; answers the ledger query from ``done``."""

    def __init__(self, done: dict[int, str]) -> None:
        self.done = done
        self.commands: list[str] = []
        self.inserted: list[tuple[str, list[list[object]]]] = []

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str) -> Any:
        assert sql.startswith("SELECT version, checksum FROM schema_migrations FINAL")
        return SimpleNamespace(result_rows=list(self.done.items()))

    def insert(self, table: str, rows: list[list[object]], *, column_names: list[str]) -> None:
        self.inserted.append((table, rows))


def test_migrate_on_a_cluster_sends_the_converted_statements_of_pending_migrations() -> None:
    migs = discover()
    done = {m.version: m.checksum for m in migs[:-2]}
    client = FakeClient(done)
    ran = migrate(client, verbose=False, cluster=OPTIONS)
    assert [m.version for m in ran] == [m.version for m in migs[-2:]]
    steps = dict((m.version, stmts) for m, stmts in plan(cluster=OPTIONS))
    ledger = ledger_statements(OPTIONS)
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/global'" in ledger[0]
    assert client.commands == [*ledger, *steps[migs[-2].version], *steps[migs[-1].version]]
    assert [rows[0][0] for _, rows in client.inserted] == [m.version for m in migs[-2:]]


def test_migrate_print_writes_the_golden_sql_and_connects_to_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nodemeter_stream import migrate_cli

    monkeypatch.setenv("NODEMETER_CLICKHOUSE_URL", "http://127.0.0.1:9")  # nothing listens
    parser = argparse.ArgumentParser()
    migrate_cli.add_arguments(parser)
    assert migrate_cli.run(parser.parse_args(["--cluster", "nodemeter", "--print"])) == 0
    out = capsys.readouterr().out
    assert out.startswith("-- nodemeter schema for cluster nodemeter")
    for name, text in generated().items():
        assert text in out, name


def write_golden() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    files = generated()
    for stale in set(p.name for p in GOLDEN.glob("*.sql")) - set(files):
        (GOLDEN / stale).unlink()
    for name, text in files.items():
        (GOLDEN / name).write_text(text)
    print(f"wrote {len(files)} files to {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: test_cluster_schema.py --write   (regenerates tests/golden/cluster)")
    write_golden()
