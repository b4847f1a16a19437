"""``nodemeter report`` / ``sql`` / ``rebuild`` on chDB with known rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from analytics_data import insert_lines, known_lines, load_known

from nodemeter.cli import main
from nodemeter_stream.analytics import queries

pytestmark = pytest.mark.clickhouse

HERE = Path(__file__).resolve().parent


@pytest.fixture
def store(ch: Any, clickhouse_config: Any) -> list[str]:
    """CLI flags for the test's migrated database holding the known rows."""
    load_known(ch)
    return ["--url", clickhouse_config.url, "--database", clickhouse_config.database]


def test_report_table_and_html(
    store: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "acme.html"
    argv = ["report", "--tenant", "acme", "--from", "2026-11-01", "--to", "2026-11-30"]
    assert main([*argv, "--html", str(page), *store]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("Cost per node for tenant acme, 2026-11-01 00:00 to 2026-12-01")
    assert lines[4].split() == ["gpu.rerank", "qa", "-", "2", "0.029000", "USD", "68.8%"]
    assert ["TOTAL", "10", "0.042125", "USD", "100.0%"] in [ln.split() for ln in lines]
    assert (
        "  r1  0.031625 USD  (gpu.rerank 0.025000, llm.answer 0.006525, preprocess 0.000100)"
        in lines
    )
    assert "[report] 4/4 top requests" in err  # progress on stderr, not in the table
    html = page.read_text()
    assert html.count('class="node"') == 4 and "llm.summarize" in html
    assert 'data-node="gpu.rerank" data-cost="0.029000000000"' in html


def test_report_for_one_day_uses_hourly_buckets(
    store: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    page = tmp_path / "day.html"
    argv = ["report", "--tenant", "acme", "--from", "2026-11-03", "--to", "2026-11-03"]
    assert main([*argv, "--html", str(page), *store]) == 0
    out = capsys.readouterr().out
    assert ["TOTAL", "4", "0.010500", "USD", "100.0%"] in [ln.split() for ln in out.splitlines()]
    assert "Cost over time (1 h buckets, USD)" in page.read_text()


def test_report_rejects_a_backwards_period(
    store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", "--tenant", "acme", "--from", "2026-11-05", "--to", "2026-11-01", *store]
    assert main(argv) == 1
    assert "is not before" in capsys.readouterr().err


def test_sql_runs_text_and_library_queries(
    store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    sql = "SELECT tenant, sum(amount) AS amount FROM priced_lines FINAL GROUP BY tenant ORDER BY tenant"
    assert main(["sql", sql, "--format", "tsv", *store]) == 0
    assert (
        capsys.readouterr().out == "tenant\tamount\nacme\t0.342125000000\nglobex\t5.000000000000\n"
    )
    q = ["sql", "-q", "node_costs", "-p", "tenant=globex", "-p", "start=2026-11-01"]
    assert main([*q, "-p", "end=2026-12-01", *store]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["workflow", "node_id", "currency", "models", "amount", "lines"]
    assert out[2].split() == ["qa", "llm.answer", "USD", "[claude]", "5.000000000000", "1"]


def test_sql_errors_are_clear(store: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "-q", "node_costs", "-p", "tenant=acme", *store]) == 1
    assert "missing: start, end" in capsys.readouterr().err
    assert main(["sql", "-q", "no_such_query", *store]) == 1
    listed = f"the library has: {', '.join(queries.names())}"
    assert listed.startswith("the library has: budget_status, cache_savings, ")
    assert listed in capsys.readouterr().err
    assert main(["sql", *store]) == 1
    assert "either SQL text or --query" in capsys.readouterr().err


def test_sql_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--list"]) == 0
    out = capsys.readouterr().out
    assert "top_requests                 (tenant String" in out
    assert "reconcile                    (-)" in out


def test_rebuild_fixes_a_double_counted_rollup(
    ch: Any, store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rebuild", *store]) == 0
    out = capsys.readouterr().out
    assert "cost_hourly: 2 partition(s), 12 base rows -> 12 rows" in out
    assert out.endswith("reconciled: rollups match the base tables (16 checks, 2 tenants)\n")
    gpu = [r for r in known_lines() if r[5] == "gpu.rerank" and r[4] == "r2"]
    insert_lines(ch, gpu, insert_deduplication_token="another-block")  # a re-priced line
    assert main(["sql", "-q", "reconcile", "--format", "tsv", *store]) == 0
    assert "\t0\n" in capsys.readouterr().out  # a check with ok = 0
    rollups = [
        "cost_hourly",
        "cost_minutely",
        "tenant_spend_daily",
        "request_node_costs",
        "request_costs_by_start",
    ]
    assert main(["rebuild", *rollups, *store]) == 0
    assert capsys.readouterr().out.endswith("(16 checks, 2 tenants)\n")


def test_installed_command_end_to_end(tmp_path: Path) -> None:
    """The real entry point in its own process (it owns its own chDB path)."""
    url = f"chdb://{tmp_path / 'store'}"
    seed = (
        f"import sys; sys.path.insert(0, {str(HERE)!r})\n"
        "from analytics_data import load_known\n"
        "from nodemeter_stream.sink.migrate import migrate\n"
        "from nodemeter_stream.sink.store import ClickHouseConfig, connect\n"
        f"c = connect(ClickHouseConfig(url={url!r}, database='nm'))\n"
        "migrate(c, verbose=False); load_known(c)\n"
    )
    subprocess.run([sys.executable, "-c", seed], check=True, timeout=120)
    exe = Path(sys.executable).with_name("nodemeter")
    page = tmp_path / "r.html"
    proc = subprocess.run(
        [str(exe), "report", "--tenant", "acme", "--from", "2026-11-01", "--to", "2026-11-30",
         "--url", url, "--database", "nm", "--html", str(page)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "TOTAL" in proc.stdout and "0.042125 USD" in proc.stdout
    assert "[report] 4/4" in proc.stderr
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_store_errors_are_clear(
    clickhouse_url: str, store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = ["--url", clickhouse_url, "--database", "no_such_db"]
    assert main(["report", "--tenant", "acme", *missing]) == 1
    assert "database 'no_such_db' not found" in capsys.readouterr().err
    assert main(["rebuild", *missing]) == 1
    assert "run `nodemeter migrate`" in capsys.readouterr().err
    assert main(["sql", "SELEC 1", *store]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("nodemeter sql: error: the query failed: Code: 62.")
        and "Syntax error" in err
    )
