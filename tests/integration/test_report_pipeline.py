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

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from worker_harness import WorkerProcess, produce, query, wait_caught_up

from nodemeter.codec import encode_record, record_key
from nodemeter.events import GpuSource, Meters, UsageEvent, event_id_for
from nodemeter_stream.pricing.book import EXAMPLES_DIR

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]


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
        log_path=tmp_path / "worker.log",
    )  # fmt: skip

    def drain() -> None:
        # ingest acks a batch only once its forwards are on the broker
        wait_caught_up(kafka_bootstrap, worker.app_id, topics.usage, timeout=180, worker=worker)
        wait_caught_up(
            kafka_bootstrap, worker.app_id, topics.usage_by_tenant, timeout=180, worker=worker
        )

    half = len(messages) // 2
    produce(kafka_bootstrap, topics.usage, messages[:half])
    worker.start()
    try:
        drain()
        assert worker.stop() == 0, worker.log()[-3000:]
        produce(kafka_bootstrap, topics.usage, messages[half:])
        produce(kafka_bootstrap, topics.usage, messages[:30])  # a resend: no second charge
        worker.start()
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
    # per tenant: 8 checks (5, request_costs_by_start since migration 052, cost_minutely
    # amount and lines since 090)
    assert len(rows) == 2 * 8 and all(r[-1] == "1" for r in rows), rec.stdout

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
