"""``nodemeter demo``: the whole pipeline on the embedded defaults, end to end.

1. starts the local Kafka broker (or uses ``NODEMETER_KAFKA_BOOTSTRAP``),
2. runs the stream worker as a subprocess on an embedded chDB store,
3. drives a week of realistic traffic through the SDK for three tenants with
   different price books: preprocessing, a database query, feature engineering,
   LLM inference, a parallel branch with two LLM calls and a batched GPU model
   node, plus resent duplicates and a few malformed records,
4. waits until the worker has committed everything, stops it, and
5. prints the per-node report for each tenant, writes the HTML pages, checks
   that totals reconcile: emitted = stored, malformed = dead letters, priced
   lines = rollups, and runs ``nodemeter reconcile`` on the result.

Every run uses fresh topics (a run-id prefix) and recreates the ``demo``
database, so its figures stand on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from nodemeter.codec import encode_payload
from nodemeter.events import event_id_for
from nodemeter.kafkalog import with_logger

TENANTS = ("acme", "globex", "initech")
UNKNOWN_TENANT = "umbrella"  # has no plan: its usage must end up in the dead letters

# The demo's tenant plans: the example price books, with budgets sized for a week of
# demo traffic so that thresholds are crossed and alerts can be seen.
DEMO_PLANS = """\
# written by `nodemeter demo`: budgets sized for a week of demo traffic
unknown_tenants: reject      # usage of a tenant without a plan is dead-lettered
defaults:
  price_book: default
  time_zone: UTC
  billing_window: month
  budgets:
    - {name: monthly, amount: "100.00"}
tenants:
  acme:
    price_book: acme-enterprise
    time_zone: America/New_York
    billing_window: month
    budgets:
      - {name: monthly, amount: "20.00", thresholds: [50, 80, 100], hard_limit: true}
  globex:
    price_book: globex-startup
    time_zone: Europe/Berlin
    billing_window: day
    budgets:
      - {name: daily, window: day, amount: "0.50", thresholds: [50, 80, 100, 120]}
      - {name: monthly, window: month, amount: "5.00"}
  initech:
    price_book: default
    time_zone: Asia/Tokyo
    billing_window: month
    budgets:
      - {name: monthly, amount: "0.15", thresholds: [50, 80, 100]}
"""
WORKFLOW = "support-rag"
GPU_BATCH = 8
DATABASE = "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests", type=int, default=120, help="requests per tenant (default 120)"
    )
    parser.add_argument(
        "--days", type=int, default=7, help="days of traffic to simulate (default 7)"
    )
    parser.add_argument(
        "--duplicates", type=int, default=15, help="requests re-sent as duplicates (15)"
    )
    parser.add_argument("--dir", type=Path, default=Path(".nodemeter/demo"), help="work directory")
    parser.add_argument("--seed", type=int, default=7, help="random seed for the traffic")


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


# --- traffic ----------------------------------------------------------------------------


@dataclass
class SimClock:
    """The SDK's clock during the demo: simulated, timezone-aware event time.

    Every reading moves it on by ``tick``, so the spans of a request end one after
    the other (the report draws the workflow graph from that order), and a re-run
    of the same request from the same start reads the same times.
    """

    now: datetime
    tick: timedelta = timedelta(milliseconds=40)

    def __call__(self) -> datetime:
        self.now += self.tick
        return self.now


@dataclass
class Traffic:
    requests: int = 0
    events: int = 0
    duplicate_requests: int = 0
    duplicate_events: int = 0
    malformed: int = 0
    unknown_tenant_events: int = 0
    request_ids: list[tuple[str, str]] = field(default_factory=list)
    # what a re-run needs to resend byte-identical records: event time and GPU share
    replay: dict[str, tuple[datetime, int]] = field(default_factory=dict)


PROFILES: dict[str, dict[str, Any]] = {
    # tenant -> (models, traffic shape)
    "acme": {
        "model": "gpt-4o",
        "provider": "openai",
        "small": "gpt-4o-mini",
        "gpu": "H100",
        "scale": 30,  # long-document QA: 24k-120k token prompts
        "volume": 2,  # twice the requests of the others
    },
    "globex": {
        "model": "claude-sonnet-4",
        "provider": "anthropic",
        "small": "claude-haiku-4",
        "gpu": "A100",
        "scale": 2,
        "volume": 1,
    },
    "initech": {
        "model": "gpt-4o-mini",
        "provider": "openai",
        "small": "gpt-4o-mini",
        "gpu": "L4",
        "scale": 1,
        "volume": 1,
    },
}


async def one_request(
    meter: Any, tenant: str, request_id: str, rng: random.Random, gpu_ms: int
) -> None:
    """One request of the support-rag workflow, with a parallel pair of LLM calls."""
    p = PROFILES.get(tenant, PROFILES["initech"])
    scale = p["scale"]
    with meter.request(tenant=tenant, workflow=WORKFLOW, request_id=request_id):
        with meter.node("preprocess") as s:
            s.record(cpu_ms=rng.randint(5, 40))
        with meter.node("db.query") as s:
            s.record(api_calls=1, cpu_ms=rng.randint(2, 15))
        with meter.node("features") as s:
            s.record(cpu_ms=rng.randint(20, 120), custom={"feature_rows": rng.randint(50, 400)})
        with meter.node("llm.answer", model=p["model"], provider=p["provider"]) as s:
            prompt = rng.randint(800, 4000) * scale
            cached = prompt // 2 if rng.random() < 0.6 else 0
            s.record(
                input_tokens=prompt - cached,
                cached_input_tokens=cached,
                cache_write_tokens=0 if cached else prompt // 4,
                output_tokens=rng.randint(150, 700) * min(scale, 3),
                model=p["model"],
                provider=p["provider"],
            )

        async def side(node: str, tokens_in: int, tokens_out: int) -> None:
            with meter.node(node, model=p["small"], provider=p["provider"]) as s:
                s.record(
                    input_tokens=tokens_in,
                    output_tokens=tokens_out,
                    model=p["small"],
                    provider=p["provider"],
                )
                await asyncio.sleep(0)

        await asyncio.gather(
            side("llm.summarize", rng.randint(300, 1200), rng.randint(60, 200)),
            side("llm.classify", rng.randint(100, 400), rng.randint(2, 10)),
        )
        with meter.node("gpu.rerank") as s:
            s.record(
                gpu_ms=gpu_ms, gpu_type=p["gpu"], gpu_source="MEASURED", cpu_ms=rng.randint(1, 5)
            )


def drive_traffic(
    meter: Any,
    clock: SimClock,
    *,
    requests: int,
    days: int,
    duplicates: int,
    seed: int,
    start: datetime,
) -> Traffic:
    """Emit ``requests`` per tenant spread over ``days``; re-run some requests as duplicates."""
    from nodemeter.gpu import apportion

    rng = random.Random(seed)
    traffic = Traffic()
    for tenant in TENANTS:
        count = requests * PROFILES[tenant]["volume"]
        span = timedelta(days=days) / max(1, count)
        for batch_start in range(0, count, GPU_BATCH):
            batch = range(batch_start, min(count, batch_start + GPU_BATCH))
            # one GPU batch serves these requests: split its time by their sequence lengths
            shares = apportion(
                rng.randint(40, 160) * len(batch), [rng.randint(64, 512) for _ in batch]
            )
            for i, gpu_ms in zip(batch, shares, strict=True):
                began = start + span * i + timedelta(seconds=rng.randint(0, 600))
                clock.now = began
                request_id = f"{tenant}-{i:05d}"
                asyncio.run(
                    one_request(
                        meter, tenant, request_id, random.Random(f"{seed}/{request_id}"), gpu_ms
                    )
                )
                traffic.requests += 1
                traffic.request_ids.append((tenant, request_id))
                traffic.replay[request_id] = (began, gpu_ms)
    traffic.events = _emitted(meter)
    # Producer retries / service re-runs: the same request again gives the same event ids.
    for tenant, request_id in rng.sample(
        traffic.request_ids, min(duplicates, len(traffic.request_ids))
    ):
        clock.now, gpu_ms = traffic.replay[request_id]
        before = _emitted(meter)
        rerun_rng = random.Random(f"{seed}/{request_id}")
        asyncio.run(one_request(meter, tenant, request_id, rerun_rng, gpu_ms))
        traffic.duplicate_requests += 1
        traffic.duplicate_events += _emitted(meter) - before
    return traffic


def _emitted(meter: Any) -> int:
    return int(meter.stats.as_dict().get("produced", 0))


def malformed_records(now: datetime) -> list[tuple[bytes | None, bytes, str]]:
    """Bad records a buggy producer could send; each must land in the dead-letter topic."""
    good = {
        "event_id": event_id_for("acme", "bad-1", "s", 0),
        "tenant": "acme",
        "request_id": "bad-1",
        "node_id": "llm.answer",
        "span_id": "s",
        "event_time": now,
        "meters": {"input_tokens": -50},
    }
    negative = encode_payload("usage_event", _with_defaults(good))
    missing_tenant = encode_payload(
        "usage_event",
        _with_defaults(
            {**good, "tenant": "", "request_id": "bad-2", "meters": {"input_tokens": 5}}
        ),
    )
    return [
        (b"acme/bad-0", b"\x00\x01garbage", "not Avro single-object encoding"),
        (b"acme/bad-1", negative, "negative quantity"),
        (b"/bad-2", missing_tenant, "missing tenant"),
        (b"acme/bad-3", negative[:20], "truncated"),
        (b"acme/bad-4", b"\xc3\x01" + b"\xff" * 8 + b"\x02", "unknown schema fingerprint"),
    ]


def _with_defaults(d: dict[str, Any]) -> dict[str, Any]:
    meters: dict[str, Any] = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "gpu_ms": 0,
        "gpu_type": "",
        "gpu_source": "NONE",
        "cpu_ms": 0,
        "api_calls": 0,
        "custom": {},
    }
    meters.update(d.get("meters", {}))
    out: dict[str, Any] = {
        "parent_span_id": None,
        "branch_path": "",
        "workflow": WORKFLOW,
        "model": None,
        "provider": None,
        "sequence": 0,
        "status": "OK",
        "billable": True,
        "non_billable_reason": None,
        "attributes": {},
    }
    out.update(d)
    out["meters"] = meters
    return out


# --- orchestration ----------------------------------------------------------------------


def demo_pricebooks(work: Path) -> Path:
    """The example price books plus the demo's tenant plans, in one directory."""
    from nodemeter_stream.pricing.book import EXAMPLES_DIR

    books = work / "pricebooks"
    shutil.rmtree(books, ignore_errors=True)
    books.mkdir(parents=True)
    for f in sorted(Path(EXAMPLES_DIR).glob("*.yaml")):
        if f.name != "tenants.yaml":
            shutil.copy(f, books / f.name)
    (books / "tenants.yaml").write_text(DEMO_PLANS)
    return books


def _worker(
    bootstrap: str, url: str, prefix: str, app_id: str, log: Path
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "nodemeter_stream.worker_cli",
        "--bootstrap",
        bootstrap,
        "--url",
        url,
        "--database",
        DATABASE,
        "--topic-prefix",
        prefix,
        "--app-id",
        app_id,
        "--batch-seconds",
        "0.5",
        "--request-timeout",
        "20",
        "--sweep-interval",
        "1",
        "--session-timeout",
        "10",
        "--heartbeat-interval",
        "1",
    ]
    out = log.open("ab")
    env = dict(os.environ, NODEMETER_PRICEBOOKS=str(demo_pricebooks(log.parent)))
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_group_stable(
    bootstrap: str, group: str, alive: Callable[[], bool], timeout: float = 90
) -> None:
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(with_logger({"bootstrap.servers": bootstrap}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the worker exited during start")
        try:
            desc = admin.describe_consumer_groups([group])[group].result(10)
            if desc.state == ConsumerGroupState.STABLE and desc.members:
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"worker group {group} did not become stable in {timeout}s")


def run(args: argparse.Namespace) -> int:
    """Run the demo; a local broker it had to start is stopped again at the end."""
    started_here = False
    if not os.environ.get("NODEMETER_KAFKA_BOOTSTRAP"):
        from nodemeter_stream.devenv import kafka

        started_here = not kafka.status()["running"]
    try:
        return _run(args)
    finally:
        if started_here:
            kafka.down()


def _run(args: argparse.Namespace) -> int:
    from nodemeter.meter import Meter, MeterConfig
    from nodemeter_stream.analytics import html, reconcile
    from nodemeter_stream.analytics.report import collect, render_table
    from nodemeter_stream.offsets import wait_caught_up
    from nodemeter_stream.sink.migrate import migrate
    from nodemeter_stream.sink.store import ClickHouseConfig, connect
    from nodemeter_stream.smoke import bootstrap_servers
    from nodemeter_stream.topics import Topics, ensure_topics

    t0 = time.monotonic()
    work: Path = args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"demo-{run_id}."
    topics = Topics(prefix=prefix)
    url = f"chdb://{work / 'chdb'}"
    cfg = ClickHouseConfig(url=url, database=DATABASE)

    say("1/5 Kafka")
    bootstrap = bootstrap_servers()
    ensure_topics(bootstrap, topics)
    say(f"    broker {bootstrap}; topics {topics.usage}, {topics.dlq}, {topics.budget_alerts}")

    say(f"2/5 ClickHouse (embedded chDB at {work / 'chdb'}, database {DATABASE!r}, recreated)")
    client = connect(cfg)
    client.command(f"DROP DATABASE IF EXISTS {DATABASE}")
    client = connect(cfg)
    migrate(client, verbose=False)
    client.close()

    app_id = f"nodemeter-demo-{run_id}"
    log = work / "worker.log"
    log.unlink(missing_ok=True)
    worker = _worker(bootstrap, url, prefix, app_id, log)
    alive: Callable[[], bool] = lambda: worker.poll() is None  # noqa: E731
    try:
        _wait_group_stable(bootstrap, app_id, alive)
        say(f"    worker up (pid {worker.pid}, group {app_id}); log: {log}")

        per_tenant = ", ".join(f"{t} {args.requests * PROFILES[t]['volume']}" for t in TENANTS)
        say(f"3/5 traffic over {args.days} days: requests {per_tenant}")
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=args.days)
        clock = SimClock(start)
        spool = work / f"spool-{run_id}"
        meter = Meter(
            MeterConfig(bootstrap_servers=bootstrap, topic=topics.usage, spool_dir=spool),
            clock=clock,
        )
        traffic = drive_traffic(
            meter,
            clock,
            requests=args.requests,
            days=args.days,
            duplicates=args.duplicates,
            seed=args.seed,
            start=start,
        )
        # a service misconfigured with a tenant that has no plan: valid events, refused by pricing
        before = _emitted(meter)
        clock.now = start
        asyncio.run(one_request(meter, UNKNOWN_TENANT, "umbrella-00000", random.Random(1), 50))
        traffic.requests += 1
        traffic.unknown_tenant_events = _emitted(meter) - before - 1  # minus its RequestEnd
        meter.flush(30)
        stats = meter.stats.as_dict()
        meter.close()
        from confluent_kafka import Producer

        bad = malformed_records(end)
        raw = Producer(
            with_logger({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
        )
        for key, value, _why in bad:
            raw.produce(topics.usage, value=value, key=key)
        raw.flush(30)
        traffic.malformed = len(bad)
        emitted = stats.get("produced", 0)
        say(
            f"    SDK emitted {emitted} records ({traffic.duplicate_events} of them resent duplicates "
            f"from {traffic.duplicate_requests} re-run requests, {traffic.unknown_tenant_events} for "
            f"unknown tenant {UNKNOWN_TENANT!r}); {traffic.malformed} malformed records"
        )

        say("4/5 waiting for the worker to commit everything")
        last = [-1]

        def progress(remaining: int) -> None:
            if remaining != last[0]:
                last[0] = remaining
                print(f"\r[demo]     {remaining:>6} records to go ", end="", flush=True)

        waited = wait_caught_up(
            bootstrap,
            app_id,
            [topics.usage, topics.usage_by_tenant],
            timeout=300,
            alive=alive,
            progress=progress,
        )
        print()
        say(f"    caught up in {waited:.1f}s; stopping the worker (SIGTERM)")
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
    shutil.rmtree(work / f"spool-{run_id}", ignore_errors=True)

    say("5/5 results")
    client = connect(cfg, create_database=False)
    rows = lambda sql: client.query(sql).result_rows  # noqa: E731
    records_sent = emitted - traffic.duplicate_events
    (stored_events,) = rows("SELECT count() FROM (SELECT event_id FROM usage_events FINAL)")[0]
    (stored_requests,) = rows("SELECT uniqExact(tenant, request_id) FROM usage_events")[0]
    (dead,) = rows("SELECT count() FROM dead_letters FINAL")[0]
    unique_usage = records_sent - traffic.requests  # minus one RequestEnd per request
    checks = reconcile.run_checks(client)
    for tenant in TENANTS:
        report = collect(client, tenant=tenant, start=start, end=end + timedelta(hours=1))
        print()
        print(render_table(report), end="")
        page = work / f"report-{tenant}.html"
        page.write_text(html.render(report), encoding="utf-8")
        print(f"HTML report: {page}")
    from nodemeter_stream.analytics import statement_render, statements
    from nodemeter_stream.pricing import load_config

    books = load_config(work / "pricebooks")  # the worker's books (written by _worker)
    for tenant in TENANTS:  # each tenant's statement for its latest window: a draft
        window = statements.latest_window(client, tenant) or ""
        st = statements.statement(client, books, tenant, window, grace=timedelta(hours=1))
        print()
        print(statement_render.render_text(st, items=False), end="")
    alerts = rows(
        "SELECT tenant, budget, threshold_pct, count(), groupArray(window_id) "
        "FROM (SELECT * FROM budget_alerts FINAL ORDER BY window_id) "
        "GROUP BY tenant, budget, threshold_pct ORDER BY tenant, budget, threshold_pct"
    )
    print()
    say(
        f"budget alerts (each once per tenant, budget, window, threshold): {sum(a[3] for a in alerts)}"
    )
    for tenant, budget, pct, n, windows in alerts:
        shown = ", ".join(windows[:4]) + (f", +{len(windows) - 4} more" if len(windows) > 4 else "")
        say(f"    {tenant:8} {budget:8} {pct:>3}% crossed in {n} window(s): {shown}")
    total = rows(
        "SELECT tenant, currency, sum(amount) FROM priced_lines FINAL GROUP BY tenant, currency ORDER BY tenant"
    )
    for tenant, currency, amount in total:
        say(f"    spend {tenant:8} {Decimal(amount):.2f} {currency} (exact: {amount})")
    print()
    from nodemeter_stream.offsets import end_offsets

    alerts_stored = sum(a[3] for a in alerts)
    alerts_sent = sum(end_offsets(bootstrap, topics.budget_alerts).values())
    ok_alerts = alerts_sent == alerts_stored
    ok_events = stored_events == unique_usage
    expected_dead = traffic.malformed + traffic.unknown_tenant_events
    ok_dead = dead == expected_dead
    ok_money = all(c.ok for c in checks)
    say(
        f"{'OK ' if ok_events else 'BAD'} emitted = stored: {unique_usage} unique usage events sent, "
        f"{stored_events} in ClickHouse ({traffic.duplicate_events} duplicates dropped), {stored_requests} requests"
    )
    say(
        f"{'OK ' if ok_dead else 'BAD'} bad input = dead letters: {traffic.malformed} malformed + "
        f"{traffic.unknown_tenant_events} of an unknown tenant sent, {dead} dead-lettered"
    )
    say(f"{'OK ' if ok_money else 'BAD'} priced lines = rollups: {reconcile.summary(checks)}")
    say(
        f"{'OK ' if ok_alerts else 'BAD'} alerts once: {alerts_sent} on {topics.budget_alerts}, "
        f"{alerts_stored} in budget_alerts"
    )
    client.close()
    print()
    say("nodemeter reconcile (emitted = stored = billed, lines = rollups):")
    from nodemeter import cli

    rc = cli.main(["reconcile", "--url", url, "--database", DATABASE, "--bootstrap", bootstrap,
                   "--topic-prefix", prefix, "--app-id", app_id])  # fmt: skip
    say(f"done in {time.monotonic() - t0:.0f}s")
    return 0 if ok_events and ok_dead and ok_money and ok_alerts and rc == 0 else 1
