"""``bench/bench_pricing.py`` keeps running as the price books grow, and its check (the
current engine prices every line as the frozen reference engine does) holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_pricing_runs_and_its_lines_match_the_reference() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            str(ROOT / d) for d in ("producers", "stream_jobs", "schemas")
        ),
    }
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_pricing.py"), "--events", "300", "--repeat", "1"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "lines identical on the reference's fields: True" in res.stdout, res.stdout
    assert res.stdout.count("events/s") == 6, res.stdout
