"""``nodemeter alerts tail`` against the real broker."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from nodemeter.cli import main
from nodemeter_stream.pricing import BudgetAlert
from nodemeter_stream.pricing.budgets import alert_id
from nodemeter_stream.pricing.records import encode_alert

pytestmark = pytest.mark.kafka


def test_alerts_tail_prints_each_alert_once(
    kafka_bootstrap: str, topics: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from confluent_kafka import Producer

    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    alerts = [
        BudgetAlert(
            alert_id=alert_id(tenant, "monthly", "2026-11", t),
            tenant=tenant,
            budget="monthly",
            workflow="",
            window_id="2026-11",
            window_start=start,
            window_end=end,
            threshold_percent=t,
            budget_amount=Decimal("100"),
            spent=Decimal(t),
            currency="USD",
            hard_limit=False,
            crossed_at=start,
            event_id=f"e{t}",
        )
        for tenant in ("acme", "globex")
        for t in (50, 80)
    ]
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for a in [*alerts, alerts[0]]:  # a re-sent alert (same id) is shown once
        k, v = encode_alert(a)
        p.produce(topics.budget_alerts, key=k, value=v)
    assert p.flush(30) == 0
    rc = main(["alerts", "tail", "--bootstrap", kafka_bootstrap, "--topic-prefix", topics.prefix,
               "--from-beginning", "--tenant", "acme", "--idle-timeout", "5"])  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert len(out) == 2
    assert "acme budget=monthly window=2026-11 threshold=50% spent=50 of 100 USD" in out[0]
    assert "threshold=80%" in out[1]
