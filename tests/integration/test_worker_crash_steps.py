"""A crash right after each step of a batch, in each agent, then a restart: exact.

``NODEMETER_FAULT_CRASH_AT=AGENT:STEP:N`` (``agents.effects.CrashPoint``) ends the
worker like a SIGKILL right after STEP of the agent's N-th batch: after its intent,
after its ClickHouse writes, after its Kafka sends (forwards, alerts, dead letters) and
after it recorded its states with the progress (before the ack). A second worker in the
same group then runs to caught up. What ClickHouse holds must be exact: every event
once, every request's nodes, the priced usage, and the rollups fed by materialized
views equal to their base tables (a re-applied batch must not insert a stored row
again under another token).
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_worker_faults import drain, problems_in_store, stop_all, traffic, worker
from worker_harness import encoded, produce, query

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow, pytest.mark.fault]

STEPS = [
    (agent, step)
    for agent in ("ingest_usage", "price_usage")
    for step in ("intent", "write", "send", "record")
]


def rollups_match(w: Any) -> list[str]:
    out = []
    (row,) = query(
        w.url, w.database,
        "SELECT (SELECT toString(sum(amount)) FROM priced_lines FINAL), "
        "(SELECT toString(sum(amount)) FROM cost_hourly), "
        "(SELECT toString(sum(amount)) FROM tenant_spend_daily), "
        "(SELECT sum(input_tokens) FROM usage_events FINAL), "
        "(SELECT sum(input_tokens) FROM usage_hourly), "
        "(SELECT count() = uniqExact(line_id) FROM priced_lines)",
    )  # fmt: skip
    lines, hourly, daily, events, usage_hourly, once = row
    if not Decimal(lines) == Decimal(hourly) == Decimal(daily):
        out.append(f"money: priced_lines {lines}, cost_hourly {hourly}, tenant_spend_daily {daily}")
    if int(events) != int(usage_hourly):
        out.append(f"input_tokens: usage_events {events}, usage_hourly {usage_hourly}")
    if once not in (1, True, "1", "true"):
        out.append("a priced line was stored twice")
    return out


@pytest.mark.parametrize(("agent", "step"), STEPS, ids=[f"{a}-{s}" for a, s in STEPS])
def test_a_crash_after_each_step_of_a_batch_loses_and_doubles_nothing(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, agent: str, step: str
) -> None:
    records, expected = traffic(60, seed=STEPS.index((agent, step)))
    produce(kafka_bootstrap, topics.usage, encoded(records))
    first = worker(kafka_bootstrap, topics.prefix, tmp_path, "crash", "--batch-size", "100")
    first.env["NODEMETER_FAULT_CRASH_AT"] = f"{agent}:{step}:2"
    second = None
    try:
        first.start()
        assert first.proc is not None
        rc = first.proc.wait(120)
        assert rc == 137, first.log()[-3000:]
        assert "fault injection: crashing" in first.log()
        time.sleep(1)
        second = worker(kafka_bootstrap, topics.prefix, tmp_path, "after", app_id=first.app_id)
        second.start()
        drain(kafka_bootstrap, topics, second)
        assert second.stop() == 0, second.log()[-3000:]
    finally:
        stop_all(first, second)
    assert second is not None
    problems = problems_in_store(second, expected) + rollups_match(second)
    assert not problems, "\n".join(problems) + f"\nlogs: {tmp_path}"
