"""Measure the stream worker's throughput end to end; prints events/s.

    python bench/bench_worker.py [--events 100000] [--dup 0.05] [--bad 0.01] [--batch 5000]

Produces the events to a fresh topic set first, then starts ``nodemeter worker`` (a
subprocess, embedded chDB in a temp dir) and times it from start to the moment its
committed offsets reach the end of the topic (startup included), and separately from
its first committed offset (steady state). Uses ``NODEMETER_KAFKA_BOOTSTRAP`` or starts
the local dev broker. ``--profile FILE`` runs the worker under cProfile.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from worker_harness import (  # noqa: E402
    WorkerProcess,
    committed,
    encoded,
    produce,
    query,
    usage,
    wait_caught_up,
)

from nodemeter_stream.smoke import bootstrap_servers  # noqa: E402
from nodemeter_stream.topics import Topics, ensure_topics  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--dup", type=float, default=0.05)
    ap.add_argument("--bad", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--profile", help="write a cProfile of the worker to this file")
    ap.add_argument("--agents", help="agents to run, e.g. 'ingest' (default: all)")
    args = ap.parse_args()

    bootstrap = bootstrap_servers()
    topics = Topics(prefix=f"bench{uuid.uuid4().hex[:6]}.")
    ensure_topics(bootstrap, topics)
    rng = random.Random(1)
    events = [
        usage(
            f"tenant-{i % 7}",
            f"req-{i // 10}",
            f"s{i % 10}",
            node=f"node-{i % 4}",
            input_tokens=rng.randint(0, 5000),
            cpu_ms=rng.randint(1, 50),
        )
        for i in range(args.events)
    ]
    msgs = encoded(events)
    msgs += rng.sample(msgs, int(len(msgs) * args.dup))
    msgs += [(b"bad", b"\xc3\x01" + rng.randbytes(5)) for _ in range(int(args.events * args.bad))]
    rng.shuffle(msgs)
    t = time.monotonic()
    produce(bootstrap, topics.usage, msgs)
    print(f"produced {len(msgs)} records in {time.monotonic() - t:.1f}s")

    with tempfile.TemporaryDirectory() as tmp:
        w = WorkerProcess(
            bootstrap=bootstrap,
            topic_prefix=topics.prefix,
            chdb_path=Path(tmp) / "chdb",
            log_path=Path(tmp) / "worker.log",
            extra=(
                "--batch-size",
                str(args.batch),
                "--log-level",
                "info",
                *(("--agents", args.agents) if args.agents else ()),
            ),
        )
        if args.profile:
            w.python_args = ("-m", "cProfile", "-o", args.profile, "-m")
        t0 = time.monotonic()
        w.start()
        first = None
        while first is None:
            if sum(max(0, o) for o in committed(bootstrap, w.app_id, topics.usage).values()):
                first = time.monotonic()
            time.sleep(0.05)
        wait_caught_up(bootstrap, w.app_id, topics.usage, worker=w, timeout=1800)
        t1 = time.monotonic()
        assert w.stop() == 0, w.log()[-2000:]
        (row,) = query(w.url, w.database, "SELECT count() FROM usage_events FINAL")
    total, steady = t1 - t0, t1 - first
    print(f"stored {row[0]} unique events")
    print(f"worker: {len(msgs)} records in {total:.1f}s = {len(msgs) / total:,.0f} events/s")
    print(f"steady state (from the first commit): {len(msgs) / steady:,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
