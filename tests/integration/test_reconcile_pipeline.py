"""``nodemeter reconcile`` against the real broker and the real worker: emitted = stored
holds with duplicates and malformed records, and is BAD once rows leave the store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from worker_harness import T0, WorkerProcess, encoded, end, produce, usage, wait_caught_up

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

_DELETE = """
import sys
from nodemeter_stream.sink.store import ClickHouseConfig, connect
c = connect(ClickHouseConfig(url=sys.argv[1], database=sys.argv[2]), create_database=False)
c.command(sys.argv[3])
"""


def reconcile(w: WorkerProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "nodemeter.cli", "reconcile", "--bootstrap", w.bootstrap,
            "--url", w.url, "--database", w.database, "--topic-prefix", w.topic_prefix,
            "--app-id", w.app_id, *extra]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=180)


def test_emitted_equals_stored_then_bad_after_a_delete(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    records = []
    for r in range(30):
        rid = f"req-{r:03d}"
        spans = [
            usage(f"tenant-{r % 2}", rid, f"s{i}", input_tokens=10 + i, at=T0) for i in range(3)
        ]
        records += [*spans, end(f"tenant-{r % 2}", rid, 3)]
    messages = encoded(records)
    resent = messages[:20]  # 15 usage events and 5 request ends sent again
    malformed = [(b"k", b"\x00not avro"), (None, b"{}"), (b"x", b"")]
    produce(kafka_bootstrap, topics.usage, [*messages, *resent, *malformed])
    w = WorkerProcess(
        bootstrap=kafka_bootstrap, topic_prefix=topics.prefix, chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log", extra=("--agents", "ingest"),
    ).start()  # fmt: skip
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w)
    finally:
        assert w.stop() == 0, w.log()[-3000:]

    ok = reconcile(w, "--only", "emitted")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    total = len(messages) + len(resent) + len(malformed)
    assert (
        f"records on the topic = 90 stored + 3 dead letters + 20 duplicates + 30 request "
        f"ends ({total})" in ok.stdout
    ), ok.stdout
    assert ok.stdout.count("OK  emitted = stored") == 4, ok.stdout
    assert "reconcile: 4 OK, 0 BAD" in ok.stdout
    assert f"note: emitted = stored checked {topics.usage} offsets p0:0.." in ok.stdout

    subprocess.run(
        [sys.executable, "-c", _DELETE, w.url, w.database,
         "DELETE FROM usage_events WHERE request_id IN ('req-000', 'req-001')"],
        check=True, timeout=120,
    )  # fmt: skip
    bad = reconcile(w, "--only", "emitted")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "BAD emitted = stored" in bad.stdout
    assert "stored events = usage_events FINAL at those offsets: expected 90, actual 84" in (
        bad.stdout
    ), bad.stdout
    assert "reconcile: 3 OK, 1 BAD" in bad.stdout

    usage_err = reconcile(w, "--only", "emitted", "--from", "2026-13-01")
    assert usage_err.returncode == 2 and "is not a date" in usage_err.stderr
