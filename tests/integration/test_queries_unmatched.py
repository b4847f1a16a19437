"""``unmatched_models``: what a tenant was billed through a generic rate, on chDB, with
lines priced by the real engine from the example books (issue 11, item 2)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest

from nodemeter.events import GpuSource, Meters, UsageEvent
from nodemeter_stream.analytics import queries
from nodemeter_stream.pricing import PricingEngine, load_config, new_state
from nodemeter_stream.pricing.book import EXAMPLES_DIR
from nodemeter_stream.pricing.lines import PRICED_LINE_COLUMNS

pytestmark = pytest.mark.clickhouse

NOV, DEC = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def test_unmatched_models(ch: Any) -> None:
    engine = PricingEngine(load_config(EXAMPLES_DIR))
    states = {t: new_state(t) for t in ("initech", "acme")}
    usage = [
        ("initech", "gpt-4o-2024-08-06", {"input_tokens": 1000}),  # alias: not listed
        ("initech", "llama-3-70b", {"input_tokens": 1_000_000}),  # generic: $1
        ("initech", "llama-3-70b", {"output_tokens": 500_000}),  # generic: $1
        ("initech", None, {"gpu_ms": 3_600_000, "gpu_type": "Tesla T4",
                           "gpu_source": GpuSource.MEASURED}),  # generic GPU: $1.80
        ("acme", "llama-3-70b", {"input_tokens": 10}),  # another tenant
    ]  # fmt: skip
    rows = []
    for i, (tenant, model, meters) in enumerate(usage):
        ev = UsageEvent(event_id=f"e{i}", tenant=tenant, request_id=f"r{i}", node_id="n",
                        span_id="s", event_time=datetime(2026, 11, 5, i, tzinfo=UTC),
                        model=model, meters=Meters(**meters))  # fmt: skip
        rows += [ln.row() for ln in engine.process(states[tenant], {}, ev).lines]
    ch.insert("priced_lines", rows, column_names=list(PRICED_LINE_COLUMNS))
    # a redelivered event's lines again, in another block: counted once
    ch.insert("priced_lines", rows[1:3], column_names=list(PRICED_LINE_COLUMNS))

    got = queries.run(ch, "unmatched_models", tenant="initech", start=NOV, end=DEC).rows
    assert [r[:7] for r in got] == [
        ("", "Tesla T4", "gpu_ms", "USD", 1, D(3_600_000), D("1.8")),
        ("llama-3-70b", "", "input_tokens", "USD", 1, D(1_000_000), D("1")),
        ("llama-3-70b", "", "output_tokens", "USD", 1, D(500_000), D("1")),
    ]
    assert queries.run(ch, "unmatched_models", tenant="initech", start=DEC,
                       end=datetime(2027, 1, 1, tzinfo=UTC)).rows == []  # fmt: skip
