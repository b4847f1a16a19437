"""Quota before work, end to end: a tenant crosses its hard limit in the real pipeline
(broker, worker with both agents, chDB), and the SDK in another process refuses its next
``meter.request(..., enforce_budget=True)`` within a bound, read from the compacted
budget-state topic. The measured delay is printed (``-s``) and stated in the docs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from worker_harness import WorkerProcess, encoded, produce, usage, wait_caught_up

from nodemeter_stream.pricing.book import EXAMPLES_DIR

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

# generic output tokens (no model) cost $0.000002 each in the default book
TENANTS_YAML = """
defaults:
  price_book: default
  time_zone: UTC
  billing_window: month
  budgets:
    - {name: monthly, amount: "1000.00"}
tenants:
  acme:
    price_book: default
    time_zone: UTC
    billing_window: month
    budgets:
      - {name: monthly, amount: "1.00", hard_limit: true}
"""
BOUND_S = 60  # the stated bound on this machine, under load (docs/sdk.md)

SDK = """
import json, sys, time
from pathlib import Path
from nodemeter.errors import BudgetExceededError
from nodemeter.meter import Meter, MeterConfig
m = Meter(MeterConfig(bootstrap_servers=sys.argv[1], topic=sys.argv[2], budget_topic=sys.argv[3],
                      spool_dir=Path(sys.argv[4])))
last, deadline = None, time.time() + 300
while time.time() < deadline:
    c = m.check_budget("acme")
    if (c.allowed, c.reason) != last:
        last = (c.allowed, c.reason)
        print(json.dumps({"t": time.time(), "allowed": c.allowed, "reason": c.reason,
                          "spend": str(c.spend_amount)}), flush=True)
    if not c.allowed:
        try:
            with m.request(tenant="acme", enforce_budget=True):
                pass
            print(json.dumps({"refused": False}), flush=True)
        except BudgetExceededError as exc:
            print(json.dumps({"refused": True, "message": str(exc)}), flush=True)
        print(json.dumps({"globex_allowed": m.check_budget("globex").allowed}), flush=True)
        break
    time.sleep(0.05)
m.close(timeout=2)
"""


def read_until(proc: subprocess.Popen[str], pred: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"the SDK process ended (rc={proc.poll()})")
        msg = json.loads(line)
        if pred(msg):
            return msg
    raise AssertionError(f"no matching line within {timeout} s")


def test_the_sdk_in_another_process_refuses_once_the_hard_limit_is_crossed(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    books = tmp_path / "books"
    books.mkdir()
    shutil.copy(EXAMPLES_DIR / "default.yaml", books / "default.yaml")
    (books / "tenants.yaml").write_text(TENANTS_YAML)
    now = datetime.now(UTC)
    w = WorkerProcess(bootstrap=kafka_bootstrap, topic_prefix=topics.prefix,
                      chdb_path=tmp_path / "chdb", log_path=tmp_path / "worker.log",
                      env={"NODEMETER_PRICEBOOKS": str(books)})  # fmt: skip
    sdk: subprocess.Popen[str] | None = None
    try:
        # under the limit: $0.10 of $1.00
        produce(kafka_bootstrap, topics.usage, encoded([
            usage("acme", "r1", "s", output_tokens=50_000, at=now),
            usage("globex", "g1", "s", output_tokens=50_000, at=now),
        ]))  # fmt: skip
        w.start()
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w, timeout=180)
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage_by_tenant, worker=w, timeout=60)
        sdk = subprocess.Popen(
            [sys.executable, "-c", SDK, kafka_bootstrap, topics.usage, topics.budget_state,
             str(tmp_path / "spool")],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        # "no_data" until the view has read the topic once, then "ok"
        first = read_until(sdk, lambda m: m.get("reason") != "no_data", 60)
        assert first["allowed"] and first["reason"] == "ok", first
        # the crossing: $1.20 more
        produce(kafka_bootstrap, topics.usage,
                encoded([usage("acme", "r2", "s", output_tokens=600_000, at=now)]))  # fmt: skip
        crossed_at = time.time()
        blocked = read_until(sdk, lambda m: m.get("allowed") is False, BOUND_S + 30)
        delay = blocked["t"] - crossed_at
        refused = read_until(sdk, lambda m: "refused" in m, 10)
        other = read_until(sdk, lambda m: "globex_allowed" in m, 10)
    finally:
        if sdk is not None:
            sdk.kill()
        assert w.stop() == 0, w.log()[-3000:]
    print(f"\n[budget check] refused {delay:.2f} s after the crossing event was produced")
    assert blocked["reason"] == "exceeded"
    assert Decimal(blocked["spend"]) == Decimal("1.30")  # exact: 650,000 x 0.000002
    assert refused["refused"] and "over its hard limit: budget 'monthly'" in refused["message"]
    assert other["globex_allowed"] is True
    assert delay < BOUND_S, f"refused only {delay:.1f} s after the crossing"
