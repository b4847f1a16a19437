"""The pricing agent's in-doubt lookup of stored lines, on chDB: found by id within the
hours of their event times (priced_lines is sorted by tenant, window, hour: 050), so a
re-applied batch reads that part of the window, not all of it, and finds every line."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from nodemeter.events import Meters, UsageEvent
from nodemeter_stream.pricing import PricingEngine, load_config, new_state
from nodemeter_stream.pricing.book import EXAMPLES_DIR
from nodemeter_stream.pricing.lines import PRICED_LINE_COLUMNS
from nodemeter_stream.sink.clickhouse import ClickHouseSink
from nodemeter_stream.sink.state import StateStore

pytestmark = pytest.mark.clickhouse


def test_stored_lines_are_found_within_their_hours(ch: Any) -> None:
    engine = PricingEngine(load_config(EXAMPLES_DIR))
    state = new_state("initech")
    lines = []
    for i in range(6):  # one event every 5 hours, 12:10 Tokyo time onwards
        at = datetime(2026, 11, 5, 3, 10, 0, 123456, tzinfo=UTC) + timedelta(hours=5 * i)
        ev = UsageEvent(event_id=f"e{i}", tenant="initech", request_id=f"r{i}", node_id="n",
                        span_id="s", event_time=at, meters=Meters(input_tokens=10 + i))  # fmt: skip
        lines += engine.process(state, {}, ev).lines
    stored, unstored = lines[:4], lines[4:]
    ch.insert("priced_lines", [ln.row() for ln in stored], column_names=list(PRICED_LINE_COLUMNS))
    sink = ClickHouseSink(client_factory=lambda: ch)
    store = StateStore(sink, group="g")
    key = ("initech", lines[0].window_id)
    ids = {key: [ln.line_id for ln in lines]}
    # event times given in another zone: the bounds are compared in UTC
    tokyo = timezone(timedelta(hours=9))
    span = (lines[0].event_time.astimezone(tokyo), lines[-1].event_time.astimezone(tokyo))

    async def go() -> tuple[set[str], set[str], set[str]]:
        bounded = await store.stored_lines(ids, {key: span})
        unbounded = await store.stored_lines(ids)
        # bounds that miss the lines' hours find none of them
        later = (span[1] + timedelta(hours=2), span[1] + timedelta(hours=3))
        missed = await store.stored_lines(ids, {key: later})
        sink.stop()
        return bounded, unbounded, missed

    bounded, unbounded, missed = asyncio.run(go())
    assert bounded == unbounded == {ln.line_id for ln in stored}
    assert missed == set() and not {ln.line_id for ln in unstored} & bounded
