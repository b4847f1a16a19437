"""``nodemeter sql`` with ``-p``: parameters are bound by the server, so a ``%`` in the
SQL is just a character, and a parameter the SQL does not use is a clear error, never
client-side ``%`` formatting (which raised an uncaught ValueError)."""

from __future__ import annotations

from typing import Any

import pytest

from nodemeter.cli import main

pytestmark = pytest.mark.clickhouse


@pytest.fixture
def store(ch: Any, clickhouse_config: Any) -> list[str]:
    return ["--url", clickhouse_config.url, "--database", clickhouse_config.database]


def test_percent_in_sql_with_a_bound_parameter(
    store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    sql = "SELECT '100%' AS pct, '%s %(t)s' AS fmt, {t:String} AS t"
    assert main(["sql", "--format", "tsv", sql, "-p", "t=acme' OR 1=1 --", *store]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "100%\t%s %(t)s\tacme' OR 1=1 --"


@pytest.mark.parametrize("sql", ["SELECT '100%' AS pct", "SELECT 1 WHERE 'a' LIKE '%'"])
def test_an_unused_parameter_is_a_clear_error(
    store: list[str], capsys: pytest.CaptureFixture[str], sql: str
) -> None:
    assert main(["sql", sql, "-p", "t=acme", *store]) == 1
    err = capsys.readouterr().err
    assert "parameter(s) ['t'] not used in the SQL" in err and "{t:String}" in err
    assert "Traceback" not in err
