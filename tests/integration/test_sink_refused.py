"""Rows ClickHouse refuses for good do not stop the sink (issue 12, item 4), on chDB.

A block with one row that cannot be stored (a custom meter past UInt64, as 18,448
events of one request once summed to) was retried forever, and the whole stream, every
tenant, stopped behind it. Now the block is split until the refused row is alone: the
other rows are stored, the refused one is a ``store_rejected`` dead letter with its
source position, the metric counts it, and a replay of the block stores nothing twice.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Any

import pytest

from nodemeter_stream.ingest.rows import USAGE_EVENT_COLUMNS, usage_event_row
from nodemeter_stream.metrics import WorkerMetrics
from nodemeter_stream.sink.clickhouse import (
    INSERT_SETTINGS,
    REJECTED,
    Block,
    ClickHouseSink,
    permanent,
)
from nodemeter_stream.smoke import sample_events

pytestmark = pytest.mark.clickhouse


def test_a_refused_row_is_dead_lettered_and_the_rest_is_stored(ch: Any) -> None:
    events = sample_events(9, tenant="t-refused")
    rows = [
        usage_event_row(ev, topic="u", partition=2, offset=100 + i) for i, ev in enumerate(events)
    ]
    custom = USAGE_EVENT_COLUMNS.index("custom")
    rows[5][custom] = {"vectors": 2**64}  # does not fit Map(String, UInt64)
    block = Block(table="usage_events", columns=USAGE_EVENT_COLUMNS, rows=rows,
                  token="usage_events:u:2:100-108")  # fmt: skip
    metrics = WorkerMetrics()
    sink = ClickHouseSink(client_factory=lambda: ch, metrics=metrics, retry_initial_s=0.01)

    async def go() -> None:
        await sink.write([block])
        await sink.write([block])  # a replay after a crash: nothing stored twice
        sink.stop()  # not close(): the client is the fixture's

    asyncio.run(asyncio.wait_for(go(), 60))
    stored = ch.query(
        "SELECT source_offset FROM usage_events WHERE tenant = 't-refused' ORDER BY source_offset"
    ).result_rows
    assert [r[0] for r in stored] == [100 + i for i in range(9) if i != 5]
    dead = ch.query(
        "SELECT source_topic, source_partition, source_offset, reason, detail, tenant, payload "
        "FROM dead_letters WHERE reason = {r:String}",
        parameters={"r": REJECTED},
    ).result_rows
    assert len(dead) == 1
    topic, partition, offset, _, detail, tenant, payload = dead[0]
    assert (topic, partition, offset, tenant) == ("u", 2, 105, "t-refused")
    assert detail.startswith("usage_events: DataError")
    assert json.loads(payload)["event_id"] == events[5].event_id
    assert metrics.sink_rejected_rows.labels(table="usage_events")._value.get() == 2  # both writes


def test_only_errors_no_retry_can_fix_are_permanent() -> None:
    from clickhouse_connect.driver.exceptions import DataError, OperationalError, ProgrammingError

    assert permanent(DataError("Unable to create native array for column `a`"))
    assert permanent(RuntimeError("Code: 321. DB::Exception: (VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE)"))
    # schema errors are a deployment fault every row would hit: stall, do not dead-letter
    assert not permanent(ProgrammingError("Unrecognized column 'nope' in table t"))
    assert not permanent(RuntimeError("Code: 60. DB::Exception: Table x does not exist"))
    assert permanent(RuntimeError("Code: 53. DB::Exception: Type mismatch (TYPE_MISMATCH)"))
    assert not permanent(OperationalError("Error HTTPConnectionPool: Connection refused"))
    assert not permanent(ConnectionError("Connection refused"))
    assert not permanent(ProgrammingError("The client has been closed"))
    assert not permanent(
        RuntimeError("Code: 241. DB::Exception: Memory limit (MEMORY_LIMIT_EXCEEDED)")
    )
    assert not permanent(RuntimeError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)"))


def test_a_block_over_many_months_is_stored_once(ch: Any) -> None:
    """A batch of valid events can span more months (partitions) than ClickHouse takes
    in one insert by default (100): a backfill, or a producer with a broken clock inside
    the valid range. That was TOO_MANY_PARTS on every retry, and the stream stalled. The
    sink lifts the limit (valid times bound it); a replay still stores nothing twice."""
    ch.command(
        "CREATE TABLE sink_months (month Date, offset UInt64) ENGINE = MergeTree "
        "PARTITION BY toYYYYMM(month) ORDER BY offset "
        "SETTINGS non_replicated_deduplication_window = 1000"
    )
    try:
        months = [date(2000 + i // 12, i % 12 + 1, 1) for i in range(150)]
        rows = [[m, i] for i, m in enumerate(months)]
        block = Block(table="sink_months", columns=("month", "offset"), rows=rows,
                      token="sink_months:u:0:0-149")  # fmt: skip
        with pytest.raises(Exception, match="Code: 252"):  # what the sink used to retry
            ch.insert("sink_months", rows, column_names=["month", "offset"])
        assert INSERT_SETTINGS["max_partitions_per_insert_block"] == 0
        sink = ClickHouseSink(client_factory=lambda: ch, retry_initial_s=0.01)

        async def go() -> None:
            await sink.write([block])
            await sink.write([block])  # a replay after a crash
            sink.stop()

        asyncio.run(asyncio.wait_for(go(), 60))
        got = ch.query(
            "SELECT count(), uniqExact(toYYYYMM(month)), sum(offset) FROM sink_months"
        ).result_rows[0]
        assert tuple(got) == (150, 150, sum(range(150)))
    finally:
        ch.command("DROP TABLE IF EXISTS sink_months")
