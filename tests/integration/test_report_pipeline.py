"""The analytics on what the real pipeline wrote: Kafka broker -> worker (ingest +
pricing) -> chDB, with a worker restart and a resend in between; then, in their own
processes (the worker owns the chDB path while it runs), ``nodemeter sql -q reconcile``
and ``nodemeter report``.

Checks: the rollups fed by the views while the worker inserted (batched, with
deduplication tokens, across a restart and a resend) reconcile with priced_lines to
the unit; the report's per-node totals equal sums taken directly from priced_lines;
the workflow graph in the HTML page has the edges of the traffic, the parallel branch
included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from worker_harness import WorkerProcess, committed, end_offsets, produce, query

from nodemeter.codec import encode_record, record_key
from nodemeter.events import GpuSource, Meters, UsageEvent, event_id_for
from nodemeter_stream.pricing.book import EXAMPLES_DIR

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

# the stock worker CLI with the pricing agent registered whatever AGENT_MODULES says
_LAUNCH = """
import dataclasses, sys
from nodemeter_stream import worker_cli
_orig = worker_cli.config_from_args
def _cfg(args):
    c = _orig(args)
    mods = tuple(m for m in c.agent_modules if m != "nodemeter_stream.agents.pricing")
    return dataclasses.replace(c, agent_modules=(*mods, "nodemeter_stream.agents.pricing"))
worker_cli.config_from_args = _cfg
sys.exit(worker_cli.main(sys.argv[1:]))
"""

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
# node -> (parent node, meters); llm.a and llm.b run in parallel after features
GRAPH: dict[str, tuple[str | None, dict[str, Any]]] = {
    "preprocess": (None, {"cpu_ms": 120}),
    "db.query": ("preprocess", {"cpu_ms": 40, "api_calls": 1}),
    "features": ("db.query", {"cpu_ms": 300}),
    "llm.a": ("features", {"input_tokens": 1200, "output_tokens": 300}),
    "llm.b": ("features", {"input_tokens": 800, "output_tokens": 500}),
    "gpu.batch": ("llm.a", {"gpu_ms": 450, "gpu_type": "A100", "gpu_source": GpuSource.MEASURED}),
}
EDGES = {(p, n) for n, (p, _) in GRAPH.items() if p}


def traffic(tenant: str, requests: int) -> list[UsageEvent]:
    out = []
    for i in range(requests):
        rid = f"{tenant}-{i}"
        at = T0 + timedelta(minutes=37 * i)
        for k, (node, (parent, meters)) in enumerate(GRAPH.items()):
            model = {"llm.a": "gpt-4o", "llm.b": "gpt-4o-mini"}.get(node)
            out.append(
                UsageEvent(
                    event_id=event_id_for(tenant, rid, node, 0), tenant=tenant, request_id=rid,
                    node_id=node, span_id=node, parent_span_id=parent, workflow="assistant",
                    branch_path={"llm.a": "0", "llm.b": "1"}.get(node, ""), model=model,
                    event_time=at + timedelta(seconds=k), meters=Meters(**meters),
                )
            )  # fmt: skip
    return out


def nodemeter(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("nodemeter")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=180)


def test_reports_reconcile_on_what_the_worker_wrote(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODEMETER_PRICEBOOKS", str(EXAMPLES_DIR))
    events = traffic("acme", 24) + traffic("initech", 24)
    messages = [(record_key(e), encode_record(e)) for e in events]
    worker = WorkerProcess(
        bootstrap=kafka_bootstrap, topic_prefix=topics.prefix, chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log", python_args=(),
    )  # fmt: skip

    def launch() -> None:
        args = [sys.executable, "-c", _LAUNCH, "--bootstrap", worker.bootstrap, "--url", worker.url,
                "--database", worker.database, "--topic-prefix", worker.topic_prefix,
                "--app-id", worker.app_id, "--session-timeout", "6", "--heartbeat-interval", "1",
                "--batch-seconds", "0.3", "--sweep-interval", "0.5"]  # fmt: skip
        worker.proc = subprocess.Popen(
            args, stdout=worker.log_path.open("ab"), stderr=subprocess.STDOUT, env=dict(os.environ)
        )

    def caught_up(topic: str, timeout: float = 180.0) -> None:
        # partitions that never received a record have no committed offset: skip them
        want = {p: hi for p, hi in end_offsets(kafka_bootstrap, topic).items() if hi > 0}
        deadline = time.monotonic() + timeout
        while True:
            assert worker.alive(), worker.log()[-5000:]
            got = committed(kafka_bootstrap, worker.app_id, topic)
            if all(got.get(p, -1) >= hi for p, hi in want.items()):
                return
            assert time.monotonic() < deadline, f"{topic}: committed {got}, end {want}"
            time.sleep(0.3)

    def drain() -> None:
        caught_up(topics.usage)
        time.sleep(1.0)  # forwarded records are in flight until the producer flushed
        caught_up(topics.usage_by_tenant)

    half = len(messages) // 2
    produce(kafka_bootstrap, topics.usage, messages[:half])
    launch()
    try:
        drain()
        assert worker.stop() == 0, worker.log()[-3000:]
        produce(kafka_bootstrap, topics.usage, messages[half:])
        produce(kafka_bootstrap, topics.usage, messages[:30])  # a resend: no second charge
        launch()
        drain()
        assert worker.stop() == 0, worker.log()[-3000:]
    finally:
        if worker.alive():
            worker.kill()

    store = ["--url", worker.url, "--database", worker.database]
    stored = query(worker.url, worker.database, "SELECT count() FROM usage_events FINAL")
    assert stored == [[len(events)]]

    rec = nodemeter("sql", "-q", "reconcile", "--format", "tsv", *store)
    assert rec.returncode == 0, rec.stderr
    rows = [line.split("\t") for line in rec.stdout.splitlines()[1:]]
    assert len(rows) == 2 * 5 and all(r[-1] == "1" for r in rows), rec.stdout

    direct = {
        n: Decimal(a)
        for n, a in query(
            worker.url, worker.database,
            "SELECT node_id, toString(sum(amount)) FROM priced_lines FINAL "
            "WHERE tenant = 'initech' AND node_id != '' GROUP BY node_id",
        )
    }  # fmt: skip
    assert set(direct) == set(GRAPH), direct
    assert direct["llm.a"] > 0 and direct["gpu.batch"] > 0, direct
    # initech pays list prices (acme's usage is inside its monthly credit grant)
    page = tmp_path / "initech.html"
    rep = nodemeter(
        "report", "--tenant", "initech", "--from", "2026-11-01", "--to", "2026-11-30",
        "--html", str(page), "--exact", *store,
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    table = {ln.split()[0]: ln.split() for ln in rep.stdout.splitlines() if ln.split()}
    for node, amount in direct.items():
        assert Decimal(table[node][-3].replace(",", "")) == amount, node
    html = page.read_text()
    for parent, node in EDGES:
        assert f"<title>{parent} → {node}</title>" in html
    assert html.count('class="edge"') == len(EDGES)
