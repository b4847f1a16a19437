"""The stream worker's throughput against the Faust ceiling, in one run on one broker.

    python bench/bench_worker.py [--events 100000] [--dup 0.05] [--bad 0.01] [--batch 5000]
                                 [--agents ingest] [--profile FILE] [--keep-log FILE]

Builds one message list (``--events`` unique usage events with a current event time,
plus ``--dup`` resent duplicates and ``--bad`` malformed records, shuffled) and produces
it to two fresh topics with the same partition count:

a) the pipeline: ``nodemeter worker`` (a subprocess, all agents unless ``--agents``,
   embedded chDB in a temp dir) reads the usage topic; timed from start and from its
   first committed offset to the moment its committed offsets reach the end of the
   usage topic and then, when the pricing agent runs, of the usage-by-tenant topic;
b) the Faust ceiling: ``bench/faust_ceiling.py`` (a subprocess) reads the second topic
   with a trivial agent on the same ``faust.App`` settings, timed from its first batch to
   its last record.

The last line is ``pipeline=<events/s> faust_ceiling=<records/s> ratio=<pipeline/ceiling>``.
Uses ``NODEMETER_KAFKA_BOOTSTRAP`` or starts the local dev broker (left running, as
``nodemeter dev kafka up`` leaves it). ``--profile FILE`` runs the worker under cProfile.
"""

from __future__ import annotations

import argparse
import inspect
import io
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from worker_harness import WorkerProcess, committed, encoded, produce, query, usage  # noqa: E402

from nodemeter_stream import offsets  # noqa: E402
from nodemeter_stream.smoke import bootstrap_servers  # noqa: E402
from nodemeter_stream.topics import Topics, ensure_topics  # noqa: E402

Message = tuple[bytes, bytes]

# usage() of the harness takes ``at=`` (event time); without it events carry its fixed T0
LIVE_TIMES = "at" in inspect.signature(usage).parameters
SPREAD_S = 5.0  # event times of one traffic chunk span the last few seconds


def event_time_note() -> str:
    if LIVE_TIMES:
        return (
            f"event_time: current (datetime.now(UTC) at generation, spread over {SPREAD_S:.0f} s)"
        )
    return "event_time: the harness's fixed T0 (its usage() takes no at=)"


def traffic(start: int, n: int, *, dup: float, bad: float, rng: random.Random) -> list[Message]:
    """Usage events ``start .. start+n-1`` (10 spans a request, 7 tenants), then ``dup`` of
    them resent and ``bad`` malformed records, shuffled."""
    t0 = datetime.now(UTC) - timedelta(seconds=SPREAD_S)
    step = timedelta(seconds=SPREAD_S) / max(n, 1)

    def at(i: int) -> dict[str, Any]:
        return {"at": t0 + step * (i - start)} if LIVE_TIMES else {}

    events = [
        usage(
            f"tenant-{i % 7}",
            f"req-{i // 10}",
            f"s{i % 10}",
            node=f"node-{i % 4}",
            input_tokens=rng.randint(0, 5000),
            cpu_ms=rng.randint(1, 50),
            **at(i),
        )
        for i in range(start, start + n)
    ]
    msgs = encoded(events)
    msgs += rng.sample(msgs, int(len(msgs) * dup))
    msgs += [(b"bad", b"\xc3\x01" + rng.randbytes(5)) for _ in range(int(n * bad))]
    rng.shuffle(msgs)
    return msgs


def runs_pricing(agents: str | None) -> bool:
    return not agents or any(a.strip().endswith("pricing") for a in agents.split(","))


def stage_topics(topics: Topics, agents: str | None) -> list[str]:
    """The topics whose committed offsets say the pipeline is caught up, in order."""
    return [topics.usage, *([topics.usage_by_tenant] if runs_pricing(agents) else [])]


def worker_args(batch: int, agents: str | None) -> tuple[str, ...]:
    return (
        "--batch-size",
        str(batch),
        "--log-level",
        "info",
        *(("--agents", agents) if agents else ()),
    )


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    return sum(max(0, o) for o in committed(bootstrap, group, topic).values())


def wait_first_commit(
    bootstrap: str, w: WorkerProcess, topic: str, *, above: int = 0, timeout: float = 600.0
) -> tuple[float, int]:
    """Poll until the worker's committed offsets on ``topic`` sum above ``above``; return
    (monotonic time seen, committed total)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = committed_total(bootstrap, w.app_id, topic)
        if got > above:
            return time.monotonic(), got
        if not w.alive():
            raise AssertionError(f"the worker exited before its first commit\n{w.log()[-5000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no commit on {topic} within {timeout:.0f}s\n{w.log()[-5000:]}")


def wait_pipeline(
    bootstrap: str, w: WorkerProcess, topics: Sequence[str], *, timeout: float
) -> float:
    """Wait until the worker committed to the end of every topic, stage by stage."""
    try:
        return offsets.wait_caught_up(
            bootstrap, w.app_id, list(topics), timeout=timeout, alive=w.alive
        )
    except offsets.NotCaughtUpError as exc:
        raise AssertionError(f"{exc}\n{w.log()[-5000:]}") from exc


def stop(w: WorkerProcess) -> None:
    """SIGTERM and wait; a worker that did not exit cleanly fails the run with its log."""
    rc = w.stop(timeout=120)
    if rc != 0:
        raise AssertionError(f"worker exited with {rc}\n{w.log()[-5000:]}")


def stored_events(w: WorkerProcess) -> str:
    try:
        ((n,),) = query(w.url, w.database, "SELECT count() FROM usage_events FINAL")
    except Exception as exc:  # the read-back is a check, not the measurement
        return f"unknown ({type(exc).__name__}: {str(exc)[-300:]})"
    return str(n)


def faust_ceiling(
    bootstrap: str, topic: str, *, expect: int, batch: int, partitions: int
) -> tuple[float, int]:
    """Run bench/faust_ceiling.py on ``topic``; its records/s and first batch's size."""
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "faust_ceiling.py"),
        *("--bootstrap", bootstrap, "--topic", topic, "--expect", str(expect)),
        *("--batch", str(batch), "--partitions", str(partitions)),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    for line in res.stdout.splitlines():
        if line.strip():
            print(f"  ceiling: {line.strip()}")
    found = re.search(
        r"faust_ceiling records=\d+ seconds=[\d.]+ records_per_s=(\d+) first_batch=(\d+)",
        res.stdout,
    )
    if res.returncode != 0 or not found:
        raise AssertionError(f"faust_ceiling.py failed (rc {res.returncode})\n{res.stderr[-5000:]}")
    return float(found.group(1)), int(found.group(2))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000, help="unique usage events")
    ap.add_argument("--dup", type=float, default=0.05, help="share resent as duplicates")
    ap.add_argument("--bad", type=float, default=0.01, help="share of malformed records")
    ap.add_argument("--batch", type=int, default=5000, help="records per batch (both runs)")
    ap.add_argument("--profile", help="write a cProfile of the worker to this file")
    ap.add_argument("--agents", help="agents to run, e.g. 'ingest' (default: all)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for catch-up")
    ap.add_argument("--keep-log", help="copy the worker's log to this file")
    args = ap.parse_args()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file

    bootstrap = bootstrap_servers()
    run_id = uuid.uuid4().hex[:6]
    topics = Topics(prefix=f"bench{run_id}.")
    ceiling_topics = Topics(prefix=f"bench{run_id}-ceiling.", partitions=topics.partitions)
    ensure_topics(bootstrap, topics)
    ensure_topics(bootstrap, ceiling_topics)
    msgs = traffic(0, args.events, dup=args.dup, bad=args.bad, rng=random.Random(1))
    n_dup, n_bad = int(args.events * args.dup), int(args.events * args.bad)
    print(event_time_note())
    t = time.monotonic()
    produce(bootstrap, topics.usage, msgs)
    produce(bootstrap, ceiling_topics.usage, msgs)
    print(
        f"produced {len(msgs)} records ({args.events} unique usage events, {n_dup} duplicates, "
        f"{n_bad} malformed) to {topics.usage} and {ceiling_topics.usage} "
        f"({topics.partitions} partitions each) in {time.monotonic() - t:.1f}s"
    )
    records = len(msgs)
    del msgs

    stages = stage_topics(topics, args.agents)
    with tempfile.TemporaryDirectory() as tmp:
        w = WorkerProcess(
            bootstrap=bootstrap,
            topic_prefix=topics.prefix,
            chdb_path=Path(tmp) / "chdb",
            log_path=Path(tmp) / "worker.log",
            extra=worker_args(args.batch, args.agents),
        )
        if args.profile:
            w.python_args = ("-m", "cProfile", "-o", args.profile, "-m")
        try:
            t0 = time.monotonic()
            w.start()
            first, in_first = wait_first_commit(bootstrap, w, topics.usage)
            wait_pipeline(bootstrap, w, stages, timeout=args.timeout)
            t1 = time.monotonic()
            stop(w)
        finally:
            if w.alive():
                w.kill()
        stored = stored_events(w)
        if args.keep_log:
            shutil.copyfile(w.log_path, args.keep_log)
    total, steady = t1 - t0, t1 - first
    pipeline = records / steady
    print(
        f"pipeline (agents: {args.agents or 'all'}; caught up on {', '.join(stages)}): "
        f"{records} records, {total:.1f}s from start = {records / total:,.0f} events/s; "
        f"{steady:.1f}s from the first commit = {pipeline:,.0f} events/s"
    )
    rest = records - in_first
    print(
        f"  the first commit covered {in_first} records; the other {rest} in {steady:.1f}s "
        f"= {rest / steady:,.0f} events/s"
    )
    print(f"  stored {stored} unique events (expected {args.events})")

    ceiling, ceiling_first = faust_ceiling(
        bootstrap,
        ceiling_topics.usage,
        expect=records,
        batch=args.batch,
        partitions=ceiling_topics.partitions,
    )
    print(
        "counted: every record produced (unique events + duplicates + malformed); pipeline = "
        "records / seconds from the worker's first commit to caught up (committed offsets); "
        "faust_ceiling = records / seconds from the trivial agent's first batch to its last record"
    )
    for name, early in (
        ("the worker's first commit", in_first),
        ("the ceiling's first batch", ceiling_first),
    ):
        if early > records / 10:
            print(
                f"note: {name} held {early / records:.0%} of the records, counted but not timed: "
                "too few --events for a meaningful rate"
            )
    print(f"pipeline={pipeline:.0f} faust_ceiling={ceiling:.0f} ratio={pipeline / ceiling:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
