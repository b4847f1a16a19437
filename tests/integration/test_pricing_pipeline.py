"""A month of usage for three tenants through the real broker, the worker and chDB.

Tenants cross tier boundaries (graduated output tokens and GPU time, volume pages and
GPU time, packages, included units, a credit grant) and budget thresholds; the worker
is stopped in the middle and restarted. ClickHouse totals per (tenant, window) must
equal totals computed here independently, in closed form from the window's total
quantities; each threshold alert must appear exactly once in ClickHouse and on the
budget-alert topic; the compacted budget-state topic must carry the final spend.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from worker_harness import (
    WorkerProcess,
    committed,
    consume_all,
    end_offsets,
    produce,
    query,
    wait_caught_up,
)

from nodemeter.codec import decode_payload, encode_record, record_key
from nodemeter.events import GpuSource, Meters, UsageEvent, event_id_for
from nodemeter_stream.pricing import PricingConfig, load_config
from nodemeter_stream.pricing.book import EXAMPLES_DIR, ChargeModel, Rate
from nodemeter_stream.pricing.windows import window_for, zone

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

D = Decimal
TENANTS_YAML = """
tenants:
  acme:
    price_book: acme-enterprise
    time_zone: America/New_York
    billing_window: month
    budgets:
      - {name: monthly, amount: "300.00", hard_limit: true}
  globex:
    price_book: globex-startup
    time_zone: Europe/Berlin
    billing_window: day
    budgets:
      - {name: daily, window: day, amount: "10.00"}
      - {name: monthly, window: month, amount: "150.00"}
  initech:
    price_book: default
    time_zone: Asia/Tokyo
    billing_window: month
    budgets:
      - {name: monthly, amount: "260.00"}
"""

# Launch the stock worker CLI with the pricing agent registered whatever AGENT_MODULES says.
_LAUNCH = """
import asyncio, dataclasses, faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # stack dump on demand (diagnostics)
def _tasks(*_):  # asyncio task stacks on SIGUSR2 (diagnostics for a stalled worker)
    for t in asyncio.all_tasks(asyncio.get_event_loop_policy().get_event_loop()):
        t.print_stack(file=sys.stderr)
signal.signal(signal.SIGUSR2, _tasks)
from nodemeter_stream import worker_cli
_orig = worker_cli.config_from_args
def _cfg(args):
    c = _orig(args)
    mods = tuple(m for m in c.agent_modules if m != "nodemeter_stream.agents.pricing")
    return dataclasses.replace(c, agent_modules=(*mods, "nodemeter_stream.agents.pricing"))
worker_cli.config_from_args = _cfg
sys.exit(worker_cli.main(sys.argv[1:]))
"""


class PricingWorker(WorkerProcess):
    """The harness's worker process, started through ``_LAUNCH``."""

    def start(self) -> PricingWorker:
        args = [
            sys.executable, "-c", _LAUNCH, "--bootstrap", self.bootstrap, "--url", self.url,
            "--database", self.database, "--topic-prefix", self.topic_prefix, "--app-id", self.app_id,
            "--session-timeout", "6", "--heartbeat-interval", "1", "--batch-seconds", "0.3",
            "--sweep-interval", "0.5",
            # the scenario's month is fixed (November 2026, closed by events of 2 December
            # 2026), so its events must not count as from the future whatever today is
            "--max-future-skew", str(10 * 365 * 86400), *self.extra,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        return self


def month_of_usage() -> list[UsageEvent]:
    out: list[UsageEvent] = []

    def ev(tenant: str, i: int, at: datetime, **m: Any) -> UsageEvent:
        model = m.pop("model", None)
        rid = f"{tenant}-r{i}"
        return UsageEvent(
            event_id=event_id_for(tenant, rid, "s", 0), tenant=tenant, request_id=rid,
            node_id="step", span_id="s", event_time=at, model=model, workflow="wf",
            meters=Meters(**m),
        )  # fmt: skip

    h100 = {"gpu_type": "H100", "gpu_source": GpuSource.MEASURED}
    start = datetime(2026, 11, 2, 0, 30, tzinfo=UTC)
    for i in range(280):  # Nov 2 .. Nov 29, every 2.4 hours
        at = start + timedelta(minutes=144 * i)
        out.append(ev("acme", i, at, model="gpt-4o", input_tokens=2000 + i, output_tokens=50_000 + 7 * i,
                      cached_input_tokens=1000, gpu_ms=200_000 + i, api_calls=25, **h100))  # fmt: skip
        out.append(ev("globex", i, at, model="gpt-4o-mini", input_tokens=150_000, output_tokens=100_000,
                      gpu_ms=1_000_000, gpu_type="A100", gpu_source=GpuSource.MEASURED,
                      custom={"reranks": 55 + i % 3}))  # fmt: skip
        out.append(ev("initech", i, at, model="gpt-4o", input_tokens=5000, output_tokens=20_000,
                      gpu_ms=150_000 + 3 * i, custom={"pages": 50 + i % 5}, api_calls=10, **h100))  # fmt: skip
    for j, tenant in enumerate(("acme", "globex", "initech")):  # December closes November
        at = datetime(2026, 12, 2, 12, tzinfo=UTC) + timedelta(minutes=j)
        out.append(ev(tenant, 10_000 + j, at, cpu_ms=1_000_000))
    return out


# --- the independent reference: closed form from each window's total quantities -------


def closed_form(rate: Rate, total: int) -> Decimal:
    paid = max(total - rate.included_units, 0)
    if rate.charge is ChargeModel.FLAT:
        return rate.unit_price * paid
    if rate.charge is ChargeModel.PACKAGE:
        return rate.package_price * (-(-paid // rate.package_size))
    if rate.charge is ChargeModel.VOLUME:
        lo = 0
        for t in rate.tiers:
            if t.up_to is None or total <= t.up_to:
                return t.unit_price * paid
            lo = t.up_to
        raise AssertionError(lo)
    amount, lo = D(0), 0  # graduated: paid units occupy positions [included, total)
    for t in rate.tiers:
        hi = t.up_to if t.up_to is not None else total
        amount += t.unit_price * max(0, min(hi, total) - max(lo, rate.included_units))
        lo = hi
    return amount


def max_overshoot(rate: Rate, total: int) -> Decimal:
    """Upper bound of provisional minus final charges (volume prices settle at close)."""
    if rate.charge is not ChargeModel.VOLUME:
        return D(0)
    return max(t.unit_price for t in rate.tiers) * total - closed_form(rate, total)


def reference(cfg: PricingConfig, events: list[UsageEvent]) -> tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str], Decimal]]:  # fmt: skip
    """(net total, overshoot bound) per (tenant, billing window)."""
    qty: dict[tuple[str, str, str, str, str, int], int] = defaultdict(int)
    rates: dict[tuple[str, str, str, str, str, int], tuple[Rate, str]] = {}
    for ev in events:
        plan = cfg.plan_for(ev.tenant)
        win = window_for(ev.event_time, plan.billing_window, zone(plan.time_zone))
        for meter, q in ev.meters.quantities().items():
            gpu = ev.meters.gpu_type if meter == "gpu_ms" else ""
            found = cfg.resolve(plan.price_book, meter=meter, model=ev.model or "", provider="",
                                gpu_type=gpu, at=ev.event_time)  # fmt: skip
            assert found is not None, (ev.tenant, meter)
            version, rate = found
            key = (ev.tenant, win.window_id, meter, ev.model or "", gpu, version.version)
            qty[key] += q
            rates[key] = (rate, version.book)
    gross: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    over: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for key, q in qty.items():
        rate, _ = rates[key]
        gross[key[:2]] += closed_form(rate, q)
        over[key[:2]] += max_overshoot(rate, q)
    net = {}
    for (tenant, wid), g in gross.items():
        plan = cfg.plan_for(tenant)
        w = window_for(datetime.fromisoformat(f"{wid}-01" if len(wid) == 7 else wid).replace(
            hour=12, tzinfo=zone(plan.time_zone)), plan.billing_window, zone(plan.time_zone))  # fmt: skip
        gv = cfg.grant_version(plan.price_book, w.start, w.end)
        grant = gv.credit_grant if gv else D(0)
        net[(tenant, wid)] = g - min(grant, g)
    return net, over


Alert = tuple[str, str, str, int]


def scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[UsageEvent], dict[tuple[str, str], Decimal], set[Alert]]:  # fmt: skip
    """The events, the expected net total per (tenant, window) and the expected alerts."""
    books = tmp_path / "books"
    books.mkdir()
    for name in ("default.yaml", "acme.yaml", "globex.yaml"):
        shutil.copy(EXAMPLES_DIR / name, books / name)
    (books / "tenants.yaml").write_text(TENANTS_YAML)
    monkeypatch.setenv("NODEMETER_PRICEBOOKS", str(books))
    monkeypatch.setenv("NODEMETER_PRICING_GRACE_S", "3600")
    cfg = load_config(books)
    events = month_of_usage()
    net, over = reference(cfg, events)

    # expected alerts: thresholds the final spend reaches; the data keeps every threshold
    # clear of the provisional overshoot so the expectation is unambiguous
    spend: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    bound: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for (tenant, wid), amount in net.items():
        for b in cfg.plan_for(tenant).budgets:
            bw = wid[:7] if b.window.value == "month" else wid
            spend[(tenant, b.name, bw)] += amount
            bound[(tenant, b.name, bw)] += over[(tenant, wid)]
    expected_alerts: set[Alert] = set()
    for (tenant, name, bw), s in spend.items():
        b = next(x for x in cfg.plan_for(tenant).budgets if x.name == name)
        for t in b.thresholds:
            level = b.amount * t / 100
            assert not (s < level <= s + bound[(tenant, name, bw)]), (tenant, name, bw, t)
            if s >= level:
                expected_alerts.add((tenant, name, bw, t))
    assert len(expected_alerts) >= 8  # the data does cross budgets
    return events, net, expected_alerts


def drain(bootstrap: str, topics: Any, worker: WorkerProcess) -> None:
    """Wait until the worker committed everything on the usage and usage-by-tenant topics."""
    try:
        wait_caught_up(bootstrap, worker.app_id, topics.usage, timeout=120, worker=worker)
    except TimeoutError:
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGUSR2)
        time.sleep(2)
        raise
    time.sleep(1.0)  # forwarded records are in flight until the producer flushed
    # three tenants on four partitions: an empty partition never gets a commit
    want = {p: hi for p, hi in end_offsets(bootstrap, topics.usage_by_tenant).items() if hi}
    deadline = time.monotonic() + 180
    while True:
        assert worker.alive(), worker.log()[-5000:]
        got = committed(bootstrap, worker.app_id, topics.usage_by_tenant)
        if all(got.get(p, -1) >= hi for p, hi in want.items()):
            return
        assert time.monotonic() < deadline, (got, want)
        time.sleep(0.3)


def check_clickhouse(worker: WorkerProcess, net: dict[tuple[str, str], Decimal], expected_alerts: set[Alert]) -> None:  # fmt: skip
    rows = query(
        worker.url, worker.database,
        "SELECT tenant, window_id, toString(sum(amount)) FROM priced_lines FINAL GROUP BY tenant, window_id",
    )  # fmt: skip
    assert {(t, w): D(s) for t, w, s in rows} == net
    # the rollups fed by materialized views count every line once (a batch re-applied
    # after a crash must not insert a stored line again under another token)
    per_tenant: dict[str, Decimal] = defaultdict(Decimal)
    for (t, _), v in net.items():
        per_tenant[t] += v
    for table in ("cost_hourly", "tenant_spend_daily"):
        rolled = query(
            worker.url, worker.database, f"SELECT tenant, toString(sum(amount)) FROM {table} GROUP BY tenant"
        )  # fmt: skip
        assert {t: D(s) for t, s in rolled} == dict(per_tenant), table
    (lines,) = query(
        worker.url, worker.database, "SELECT count() = uniqExact(line_id) FROM priced_lines"
    )
    assert lines[0] in (1, True), "a priced line was inserted twice"
    kinds = query(
        worker.url, worker.database,
        "SELECT line_kind, countIf(amount < 0) FROM priced_lines FINAL GROUP BY line_kind ORDER BY line_kind",
    )  # fmt: skip
    assert {k: int(n) for k, n in kinds}["usage"] == 0  # usage lines never negative
    crossed = query(
        worker.url, worker.database,
        "SELECT charge_model, line_kind, max(tier) FROM priced_lines FINAL "
        "GROUP BY charge_model, line_kind ORDER BY charge_model, line_kind",
    )  # fmt: skip
    got = {(c, k): int(t) for c, k, t in crossed}
    # the month crosses tier bounds (graduated and volume), settles volume, uses grants,
    # included units and packages
    assert got[("graduated", "usage")] == 2 and got[("volume", "usage")] >= 2
    assert ("volume", "settlement") in got and ("credit", "credit") in got
    assert ("included", "usage") in got and ("package", "usage") in got
    alerts = query(
        worker.url, worker.database,
        "SELECT tenant, budget, window_id, threshold_pct, count() FROM budget_alerts FINAL GROUP BY ALL",
    )  # fmt: skip
    assert {(t, b, w, int(p)) for t, b, w, p, _ in alerts} == expected_alerts
    assert all(int(n) == 1 for *_, n in alerts)


def alerts_on_topic(bootstrap: str, topics: Any, expect: int) -> list[dict[str, Any]]:
    msgs = consume_all(bootstrap, topics.budget_alerts, expect=expect + 1, timeout=15)
    return [decode_payload(m.value())[1] for m in msgs]


def key_of(d: dict[str, Any]) -> Alert:
    return (d["tenant"], d["budget_id"], d["attributes"]["window_id"], d["threshold_pct"])


@pytest.mark.fault
def test_month_of_usage_prices_exactly_and_alerts_once_across_a_restart(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, net, expected_alerts = scenario(tmp_path, monkeypatch)
    messages = [(record_key(e), encode_record(e)) for e in events]
    half = len(messages) // 2
    worker = PricingWorker(
        bootstrap=kafka_bootstrap, topic_prefix=topics.prefix, chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log",
    )  # fmt: skip
    produce(kafka_bootstrap, topics.usage, messages[:half])
    worker.start()
    try:
        drain(kafka_bootstrap, topics, worker)
        assert worker.stop() == 0, worker.log()[-3000:]
        produce(kafka_bootstrap, topics.usage, messages[half:])
        produce(kafka_bootstrap, topics.usage, messages[:40])  # a resend: must not count twice
        worker.start()
        drain(kafka_bootstrap, topics, worker)
        assert worker.stop() == 0, worker.log()[-3000:]
    finally:
        if worker.alive():
            worker.kill()

    check_clickhouse(worker, net, expected_alerts)
    decoded = alerts_on_topic(kafka_bootstrap, topics, len(expected_alerts))
    ids = [d["alert_id"] for d in decoded]
    assert len(ids) == len(set(ids)) == len(expected_alerts)  # exactly once, across the restart
    assert {key_of(d) for d in decoded} == expected_alerts

    latest: dict[bytes, dict[str, Any]] = {}
    for m in consume_all(kafka_bootstrap, topics.budget_state, expect=10_000, timeout=10):
        latest[m.key()] = decode_payload(m.value())[1]
    acme_nov = [r for r in latest.values() if r["tenant"] == "acme" and r["window_id"] == "2026-11"]
    assert [r["spend_amount"] for r in acme_nov] == [net[("acme", "2026-11")]]
    assert (
        acme_nov[0]["status"] == "WARNING" and acme_nov[0]["hard_limit"] is True
    )  # 50% < spend < 100%


@pytest.mark.fault
def test_sigkill_mid_month_then_restart_prices_exactly(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker is SIGKILLed while pricing (right after the ingest agent committed the
    first part of the month, while the pricing agent works through it): nothing lost,
    nothing counted twice in ClickHouse; on the topic every expected alert id arrives
    (a re-send carries the same id).

    The kill comes once the ingest agent has acknowledged that part (it acknowledges a
    batch only once its forwards, one record per tenant and batch, are on the
    usage-by-tenant topic), so that it hits the pricing agent (a kill inside an ingest
    batch is the worker SIGKILL test's business).
    """
    events, net, expected_alerts = scenario(tmp_path, monkeypatch)
    messages = [(record_key(e), encode_record(e)) for e in events]
    worker = PricingWorker(
        bootstrap=kafka_bootstrap, topic_prefix=topics.prefix, chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log",
    )  # fmt: skip
    cut = len(messages) * 2 // 3
    produce(kafka_bootstrap, topics.usage, messages[:cut])
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while (
            sum(max(0, o) for o in committed(kafka_bootstrap, worker.app_id, topics.usage).values())
            < cut
        ):
            assert worker.alive() and time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.05)
        worker.kill()  # SIGKILL while the pricing agent is busy with what ingest forwarded
        worker.start()
        produce(kafka_bootstrap, topics.usage, messages[cut:])
        drain(kafka_bootstrap, topics, worker)
        assert worker.stop() == 0, worker.log()[-3000:]
    finally:
        if worker.alive():
            worker.kill()

    check_clickhouse(worker, net, expected_alerts)
    decoded = alerts_on_topic(kafka_bootstrap, topics, len(expected_alerts))
    assert {key_of(d) for d in decoded} == expected_alerts
    by_id: dict[str, set[Alert]] = defaultdict(set)
    for d in decoded:
        by_id[d["alert_id"]].add(key_of(d))
    assert len(by_id) == len(expected_alerts) and all(len(v) == 1 for v in by_id.values())
