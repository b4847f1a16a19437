"""Every statement of the cluster schema parses in the real engine (chDB).

chDB has no cluster, no Keeper and no remote servers, so it cannot run ``ON CLUSTER``
DDL, Replicated engines or Distributed tables; its parser reads them all. Each statement
goes through ``formatQuery`` (a syntax error raises), and the formatted text is checked
for what the generator meant: the cluster named, the engines replicated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from nodemeter_stream.sink.cluster import ClusterOptions
from nodemeter_stream.sink.migrate import ledger_statements, plan
from nodemeter_stream.sink.store import ClickHouseConfig, connect

pytestmark = pytest.mark.clickhouse

OPTIONS = ClusterOptions(cluster="nodemeter")


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    client = connect(
        ClickHouseConfig(url="chdb://:memory:", database="default"), create_database=False
    )
    yield client
    client.close()


def formatted(engine: Any, sql: str) -> str:
    literal = "'" + sql.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(engine.query(f"SELECT formatQuery({literal})").result_rows[0][0])


def test_every_generated_statement_parses(engine: Any) -> None:
    statements = [*ledger_statements(OPTIONS)]
    statements += [s for _, stmts in plan(cluster=OPTIONS) for s in stmts]
    failed, tables = [], 0
    for stmt in statements:
        try:
            text = formatted(engine, stmt)
        except Exception as exc:  # the engine's syntax error, with the statement
            failed.append(f"{exc}\n{stmt}")
            continue
        if not text.startswith("INSERT"):
            assert re.search(r"\bON CLUSTER nodemeter\b", text), text
        if re.match(r"CREATE (OR REPLACE )?TABLE", text):
            tables += 1
            assert re.search(r"\nENGINE = (Replicated\w*MergeTree|Distributed)\(", text), text
    assert not failed, f"{len(failed)} of {len(statements)} statements do not parse:\n" + (
        "\n\n".join(failed[:3])
    )
    assert tables > 20


def test_the_parser_check_catches_a_broken_statement(engine: Any) -> None:
    with pytest.raises(Exception, match="Syntax error"):
        formatted(engine, "CREATE TABLE t ON CLUSTER (tenant String) ENGINE = ReplicatedMergeTree")
