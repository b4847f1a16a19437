"""``nodemeter dlq redrive`` end to end: the real broker, the real worker (ingest and
pricing) and chDB.

A worker with the default clock skew (300 s) dead-letters three events dated an hour
ahead as ``future_event_time``. The "fix": a worker allowed two hours of skew. A redrive
sends the three original records back, byte for byte, to the partitions they came
from; they are stored and billed once. A second redrive sends them again and adds
nothing (the worker's event-id dedupe). A truncated dead-letter copy of the same reason
is reported as skipped and never sent.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from worker_harness import WorkerProcess, consume_all, end_offsets, produce, query

from nodemeter.cli import main
from nodemeter.codec import encode_record, record_key
from nodemeter.events import Meters, UsageEvent, event_id_for
from nodemeter_stream import offsets
from nodemeter_stream.ingest.decode import DeadLetter, Source
from nodemeter_stream.ingest.dlq import dlq_record
from nodemeter_stream.pricing import load_config
from nodemeter_stream.pricing.book import EXAMPLES_DIR

# two worker starts: about 50 s
pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

TENANT = "initech"  # the default book


def input_price(at: datetime) -> Decimal:
    """gpt-4o's flat input price in the default book at ``at`` (it has versions)."""
    found = load_config(EXAMPLES_DIR).resolve(
        "default", meter="input_tokens", model="gpt-4o", provider="", gpu_type="", at=at
    )
    assert found is not None
    return found[1].unit_price


def event(i: int, at: datetime) -> UsageEvent:
    rid = f"redrive-r{i}"
    return UsageEvent(
        event_id=event_id_for(TENANT, rid, "s", 0), tenant=TENANT, request_id=rid,
        node_id="llm", span_id="s", workflow="wf", event_time=at, model="gpt-4o",
        meters=Meters(input_tokens=1000),
    )  # fmt: skip


def dlq(bootstrap: str, topics: Any, *args: str) -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["dlq", *args, "--bootstrap", bootstrap, "--topic-prefix", topics.prefix])
    return rc, (json.loads(out.getvalue()) if "--json" in args else {}), err.getvalue()


def caught_up(bootstrap: str, worker: WorkerProcess, topics: Any) -> None:
    offsets.wait_caught_up(
        bootstrap, worker.app_id, [topics.usage, topics.usage_by_tenant], timeout=90,
        alive=worker.alive,
    )  # fmt: skip


def test_redrive_after_the_fix_bills_once_and_twice_adds_nothing(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    future = [event(i, now + timedelta(hours=1)) for i in range(3)]
    control = event(9, now - timedelta(minutes=1))
    originals = {(record_key(e), encode_record(e)) for e in future}

    def worker(*extra: str) -> WorkerProcess:
        return WorkerProcess(
            bootstrap=kafka_bootstrap, topic_prefix=topics.prefix, chdb_path=tmp_path / "chdb",
            log_path=tmp_path / "worker.log", extra=extra, app_id=app_id,
        )  # fmt: skip

    app_id = f"nodemeter-test-redrive-{topics.prefix.strip('.')}"
    first = worker().start()  # default skew: 300 s
    try:
        produce(kafka_bootstrap, topics.usage, [(record_key(e), encode_record(e))
                                                for e in (*future, control)])  # fmt: skip
        letters = consume_all(kafka_bootstrap, topics.dlq, expect=3, timeout=90)
        assert len(letters) == 3, first.log()[-3000:]
        caught_up(kafka_bootstrap, first, topics)
    finally:
        assert first.stop() == 0, first.log()[-3000:]
    # a copy cut to 100 bytes (as for a record over 512 KiB): reported, never sent
    cut = DeadLetter(reason="future_event_time", detail="cut", key=record_key(event(7, now)),
                     payload=encode_record(event(7, now)) * 3, tenant=TENANT,
                     source=Source(topic=topics.usage, partition=0, offset=10_000))  # fmt: skip
    produce(kafka_bootstrap, topics.dlq, [dlq_record(cut, now_ms=0, max_payload=100)[:2]])

    rc, stats, _ = dlq(kafka_bootstrap, topics, "stats", "--json")
    assert rc == 0 and stats["reasons"]["future_event_time"]["count"] == 4
    assert stats["reasons"]["future_event_time"]["truncated"] == 1
    rc, dry, _ = dlq(kafka_bootstrap, topics, "redrive", "--reason", "future_event_time",
                     "--dry-run", "--json")  # fmt: skip
    assert (rc, dry["redriven"], dry["delivered"]) == (0, 3, 0)
    usage_end = sum(end_offsets(kafka_bootstrap, topics.usage).values())
    assert usage_end == 4  # the dry run sent nothing

    second = worker("--max-future-skew", "7200").start()  # the fix
    try:
        for _ in range(2):
            rc, summary, progress = dlq(kafka_bootstrap, topics, "redrive", "--reason",
                                        "future_event_time", "--tenant", TENANT, "--json")  # fmt: skip
            assert rc == 0, progress
            assert summary["matched"] == 4 and summary["redriven"] == 3
            assert summary["delivered"] == 3 and summary["failed"] == 0
            assert summary["skipped"] == {"truncated_copy": 1}
            assert "[dlq read]" in progress
            caught_up(kafka_bootstrap, second, topics)
    finally:
        assert second.stop() == 0, second.log()[-3000:]

    # byte-identical, to the partitions they came from; the truncated copy never sent
    msgs = consume_all(kafka_bootstrap, topics.usage, expect=10, timeout=30)
    assert len(msgs) == 10  # 4 produced + 3 redriven twice
    copies = Counter((m.key(), m.value()) for m in msgs)
    assert {kv: copies[kv] for kv in originals} == {kv: 3 for kv in originals}
    partitions: dict[tuple[bytes, bytes], set[int]] = {}
    for m in msgs:
        partitions.setdefault((m.key(), m.value()), set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())  # each copy where the original was

    ids = ", ".join(f"'{e.event_id}'" for e in future)
    url, db = f"chdb://{tmp_path / 'chdb'}", "nodemeter"
    # stored once: count() without FINAL sees every row ever inserted
    assert query(url, db, f"SELECT count() FROM usage_events WHERE event_id IN ({ids})") == [[3]]
    [[lines, amount]] = query(url, db, "SELECT count(), sum(amount) FROM priced_lines "
                              f"WHERE event_id IN ({ids}) AND line_kind = 'usage'")  # fmt: skip
    assert (lines, Decimal(amount)) == (3, 3 * 1000 * input_price(future[0].event_time))
