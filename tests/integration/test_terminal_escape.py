"""``nodemeter report`` and ``nodemeter sql`` print values from the store with control
characters escaped: a producer's id cannot forge a TOTAL row, hide rows or send
terminal escape sequences (real chDB, the commands in-process)."""

from __future__ import annotations

from typing import Any

import pytest
from analytics_data import NOV_START, insert_lines, line

from nodemeter.cli import main

pytestmark = pytest.mark.clickhouse

FORGED = "llm\nTOTAL                              0  0.000000 USD  100.0%"
ESC = "gpu\x1b[2K\x1b[1A\r\u202eadon"  # erase the line, cursor up, bidi override


@pytest.fixture
def store(ch: Any, clickhouse_config: Any) -> list[str]:
    at = NOV_START.replace(day=2, hour=10)
    insert_lines(ch, [
        line(request_id="r\n1", node_id=FORGED, meter="cpu_ms", quantity=10, unit_price="1", at=at),
        line(request_id="r2", node_id=ESC, meter="cpu_ms", quantity=5, unit_price="1", at=at),
    ])  # fmt: skip
    return ["--url", clickhouse_config.url, "--database", clickhouse_config.database]


def _no_raw_controls(text: str) -> None:
    body = text.replace("\n", "")  # the output's own line breaks
    assert "\x1b" not in body and "\r" not in body and "\u202e" not in body


def test_report_escapes_ids(store: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["report", "--tenant", "acme", "--from", "2026-11-01", "--to", "2026-11-30"]
    assert main([*argv, *store]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    lines = out.splitlines()
    totals = [ln for ln in lines if ln.startswith("TOTAL")]
    assert len(totals) == 1 and "15.000000 USD" in totals[0]  # only the real one
    assert any(ln.startswith("llm\\nTOTAL ") for ln in lines)
    assert any(ln.startswith("gpu\\x1b[2K\\x1b[1A\\r\\u202eadon ") for ln in lines)
    assert any(ln.startswith("  r\\n1  10.000000 USD  (llm\\nTOTAL ") for ln in lines)


@pytest.mark.parametrize("fmt", ["table", "tsv"])
def test_sql_escapes_values_and_names(
    store: list[str], capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    sql = "SELECT node_id AS `n\x1b[8m`, request_id FROM priced_lines FINAL ORDER BY request_id"
    assert main(["sql", "--format", fmt, sql, *store]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    lines = out.splitlines()
    assert len(lines) == (4 if fmt == "table" else 3)  # header (+ rule) + 2 rows
    assert lines[0].startswith("n\\x1b[8m")
    assert lines[-2].startswith("llm\\nTOTAL ") and lines[-2].rstrip().endswith("r\\n1")
    assert lines[-1].startswith("gpu\\x1b[2K")
