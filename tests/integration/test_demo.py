"""The main job end to end: `nodemeter demo` on the real broker and embedded chDB."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]


def test_demo_runs_end_to_end_and_reconciles(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = dict(os.environ, NODEMETER_KAFKA_BOOTSTRAP=kafka_bootstrap)
    exe = Path(sys.executable).with_name("nodemeter")
    proc = subprocess.run(
        [str(exe), "demo", "--requests", "24", "--days", "3", "--duplicates", "6", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=400, env=env,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    # acme runs twice the requests of the others: 48 + 24 + 24, plus one request of a tenant
    # without a plan; seven usage events each
    assert "OK  emitted = stored: 679 unique usage events sent, 679 in ClickHouse" in out
    # 5 malformed records (ingest) + 7 events of the unknown tenant (pricing)
    assert "OK  bad input = dead letters: 5 malformed + 7 of an unknown tenant sent, 12 dead" in out
    assert "OK  priced lines = rollups: reconciled" in out
    assert re.search(r"OK  alerts once: (\d+) on .*, \1 in budget_alerts", out)
    # nodemeter reconcile at the end: every check OK (exit status 0 is the demo's too)
    assert re.search(r"reconcile: \d+ OK, 0 BAD \(all checks agree\)", out), out[-3000:]
    assert "OK  stored = billed   umbrella all history" in out and "7 refused by pricing" in out
    for tenant in ("acme", "globex", "initech"):
        assert f"Cost per node for tenant {tenant}" in out
        page = (tmp_path / f"report-{tenant}.html").read_text()
        assert '<svg class="graph"' in page and "llm.summarize" in page
        # the parallel branch is drawn as fork and join edges
        assert "<title>llm.answer → llm.summarize</title>" in page
        assert "<title>llm.classify → gpu.rerank</title>" in page
