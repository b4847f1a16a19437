"""A quiet tenant's last window settles on the wall clock: broker -> worker -> chDB.

acme (example books: New York, monthly, $25 credit grant, volume-priced H100 time)
uses the GPU in October 2026 and then sends nothing more. With
``NODEMETER_PRICING_TICK_S=1`` the pricing agent's timer sees October due (its end +
grace is in the past on the wall clock), appends a WindowTick for acme to the
usage-by-tenant topic, and pricing the tick settles the window: the volume true-up
appears in priced_lines and the window total equals the closed-form exact total.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_pricing_pipeline import reference
from worker_harness import WorkerProcess, committed, consume_all, end_offsets, produce, query

from nodemeter.codec import decode_payload, encode_record, record_key
from nodemeter.events import GpuSource, Meters, UsageEvent, event_id_for
from nodemeter_stream.ingest import forward
from nodemeter_stream.pricing import load_config
from nodemeter_stream.pricing.book import EXAMPLES_DIR

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

D = Decimal


def october_gpu() -> list[UsageEvent]:
    """30M then 10M H100 ms: provisional 30.00 (tier 1) + 9.00 (40M reached tier 2);
    exact 40M x 0.0000009 = 36.00, so the settlement is -3.00; credit 25.00 either way.
    One request, so one key and partition: the forward records carry them in this order
    (the provisional split depends on the order; the settled total does not)."""
    out = []
    rid = "acme-oct"
    for i, ms in enumerate((30_000_000, 10_000_000)):
        out.append(
            UsageEvent(
                event_id=event_id_for("acme", rid, f"s{i}", 0), tenant="acme", request_id=rid,
                node_id="train", span_id=f"s{i}", workflow="wf",
                event_time=datetime(2026, 10, 10 + i, 15, tzinfo=UTC),
                meters=Meters(gpu_ms=ms, gpu_type="H100", gpu_source=GpuSource.MEASURED),
            )
        )  # fmt: skip
    return out


def wait_for_tick(bootstrap: str, topics: Any, worker: WorkerProcess) -> list[Any]:
    """Until a tick (a record that is not a forward of usage events) is on usage-by-tenant
    and the worker committed everything there; returns the topic's records."""
    deadline = time.monotonic() + 180
    while True:
        assert worker.alive(), worker.log()[-5000:]
        assert time.monotonic() < deadline, worker.log()[-5000:]
        ends = end_offsets(bootstrap, topics.usage_by_tenant)
        total = sum(ends.values())
        if total >= 2:  # at least one forward and one tick
            records = consume_all(bootstrap, topics.usage_by_tenant, expect=total, timeout=20)
            if any(not forward.is_forward(m.value()) for m in records):
                got = committed(bootstrap, worker.app_id, topics.usage_by_tenant)
                if all(got.get(p, -1) >= hi for p, hi in ends.items() if hi):
                    return records
        time.sleep(0.5)


def test_a_quiet_tenants_window_settles_on_a_tick(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODEMETER_PRICEBOOKS", str(EXAMPLES_DIR))
    monkeypatch.setenv("NODEMETER_PRICING_TICK_S", "1")
    monkeypatch.delenv("NODEMETER_PRICING_GRACE_S", raising=False)  # default: 1 hour
    events = october_gpu()
    net, _ = reference(load_config(EXAMPLES_DIR), events)
    assert net == {("acme", "2026-10"): D("11.00")}  # 36.00 - 25.00 credit
    produce(kafka_bootstrap, topics.usage, [(record_key(e), encode_record(e)) for e in events])
    worker = WorkerProcess(
        bootstrap=kafka_bootstrap, topic_prefix=topics.prefix, chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log",
    )  # fmt: skip
    worker.start()
    try:
        records = wait_for_tick(kafka_bootstrap, topics, worker)
        assert worker.stop() == 0, worker.log()[-3000:]
    finally:
        if worker.alive():
            worker.kill()

    forwarded = [
        e for m in records if forward.is_forward(m.value()) for e in forward.decode(m.value())
    ]
    assert len(forwarded) == len(events)  # each event forwarded once (one record per batch)
    ticks = [
        (m.key(), decode_payload(m.value())[1])
        for m in records
        if not forward.is_forward(m.value())
    ]
    assert ticks and all(k == b"acme" and t["tenant"] == "acme" for k, t in ticks)
    assert all(t["as_of"] > datetime(2026, 11, 1, 5, tzinfo=UTC) for _, t in ticks)

    rows = query(
        worker.url, worker.database,
        "SELECT line_kind, charge_model, toString(sum(amount)), count() FROM priced_lines FINAL "
        "WHERE tenant = 'acme' AND window_id = '2026-10' GROUP BY line_kind, charge_model "
        "ORDER BY line_kind, charge_model",
    )  # fmt: skip
    got = {(k, c): (D(s), int(n)) for k, c, s, n in rows}
    assert got == {
        ("credit", "credit"): (D("-25"), 1),  # 25.00 taken by the first event; no change
        ("settlement", "volume"): (D("-3"), 1),  # the true-up the tick brought
        ("usage", "volume"): (D("39"), 2),  # provisional
    }
    totals = query(
        worker.url, worker.database,
        "SELECT tenant, window_id, toString(sum(amount)) FROM priced_lines FINAL "
        "GROUP BY tenant, window_id",
    )  # fmt: skip
    assert {(t, w): D(s) for t, w, s in totals} == net
