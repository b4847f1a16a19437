"""Soak: does the worker's memory or restart time grow with the history it has seen?

    python bench/bench_soak.py [--events 2000000] [--checkpoint 200000] [--quick]

Pushes ``--events`` unique usage events (plus ``--dup`` duplicates and ``--bad``
malformed records, as bench_worker.py; current event times) through the full pipeline
worker (``nodemeter worker`` subprocess, all agents unless ``--agents``, chDB in a temp
dir), produced in chunks of ``--chunk`` generated one at a time. At two points, once the
worker caught up (committed offsets at the end of the usage topic and, with the pricing
agent, of usage-by-tenant) after ``--checkpoint`` events and again after all of them:

* RSS: VmRSS of the worker process (and of any children) from /proc;
* restart: SIGTERM the worker and wait for it, produce ``--restart-events`` new events,
  start a new worker with the same app id and chDB path, and time from its start to its
  first commit on the usage topic (and to caught up). The new worker goes on to the next
  point, so the second RSS figure is from a worker that restored the first one's state.

Short request timeout and retention (``NODEMETER_WORKER_REQUEST_TIMEOUT_S`` and
``NODEMETER_WORKER_REQUEST_RETENTION_S``, default here 5 s and 30 s; set them to
override) let request state be closed and dropped during the run; every other
``NODEMETER_WORKER_*`` setting is passed through as set. The last line is
``rss_ratio=<rss at --events / rss at --checkpoint> restart_ratio=<t at --events / t at
--checkpoint>``. ``--quick``: 100,000 events, checkpoint at 20,000.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests" / "integration")]

from worker_harness import WorkerProcess, committed, produce  # noqa: E402

from bench_worker import (  # noqa: E402
    event_time_note,
    stage_topics,
    stop,
    stored_events,
    traffic,
    wait_first_commit,
    wait_pipeline,
    worker_args,
)
from nodemeter_stream.smoke import bootstrap_servers  # noqa: E402
from nodemeter_stream.topics import Topics, ensure_topics  # noqa: E402

# Short enough that request state is closed and dropped many times over during a soak.
WORKER_ENV_DEFAULTS = {
    "NODEMETER_WORKER_REQUEST_TIMEOUT_S": "5",
    "NODEMETER_WORKER_REQUEST_RETENTION_S": "30",
}


@dataclass
class Point:
    events: int  # unique usage events the worker had consumed
    rss_kib: int
    restart_first_commit_s: float
    restart_caught_up_s: float


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name may hold spaces or parentheses: ppid follows the last ")"
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kib(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue  # exited meanwhile
    return total


def mib(kib: int) -> str:
    return f"{kib / 1024:,.1f} MiB"


class Soak:
    def __init__(self, args: argparse.Namespace, *, bootstrap: str, tmp: Path) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.topics = Topics(prefix=f"soak{os.urandom(3).hex()}.")
        self.stages = stage_topics(self.topics, args.agents)
        self.rng = random.Random(1)
        self.produced = 0  # unique usage events produced so far
        self.records = 0  # records produced (with duplicates and malformed)
        self.env = {k: os.environ.get(k, v) for k, v in WORKER_ENV_DEFAULTS.items()}
        self.tmp = tmp
        self.app_id = f"nodemeter-soak-{os.urandom(5).hex()}"
        self.worker: WorkerProcess | None = None
        ensure_topics(bootstrap, self.topics)

    def new_worker(self) -> WorkerProcess:
        return WorkerProcess(
            bootstrap=self.bootstrap,
            topic_prefix=self.topics.prefix,
            chdb_path=self.tmp / "chdb",
            log_path=self.tmp / "worker.log",
            app_id=self.app_id,
            extra=worker_args(self.args.batch, self.args.agents),
            env=self.env,
        )

    def produce_up_to(self, total: int) -> None:
        t = time.monotonic()
        start = self.produced
        while self.produced < total:
            n = min(self.args.chunk, total - self.produced)
            msgs = traffic(self.produced, n, dup=self.args.dup, bad=self.args.bad, rng=self.rng)
            produce(self.bootstrap, self.topics.usage, msgs)
            self.produced += n
            self.records += len(msgs)
        print(
            f"  produced events {start:,}..{total - 1:,} ({self.records:,} records so far) "
            f"in {time.monotonic() - t:.1f}s"
        )

    def catch_up(self) -> float:
        assert self.worker is not None
        return wait_pipeline(self.bootstrap, self.worker, self.stages, timeout=self.args.timeout)

    def restart(self) -> tuple[float, float]:
        """Stop the worker, queue new events, start another; seconds to first commit and
        to caught up."""
        assert self.worker is not None
        stop(self.worker)
        before = sum(
            max(0, o) for o in committed(self.bootstrap, self.app_id, self.topics.usage).values()
        )
        self.produce_up_to(self.produced + self.args.restart_events)
        self.worker = self.new_worker()
        t0 = time.monotonic()
        self.worker.start()
        first, _ = wait_first_commit(self.bootstrap, self.worker, self.topics.usage, above=before)
        self.catch_up()
        return first - t0, time.monotonic() - t0

    def point(self, events: int) -> Point:
        """Produce up to ``events``, wait for the worker, measure RSS, then restart."""
        assert self.worker is not None and self.worker.proc is not None
        self.produce_up_to(events)
        t = time.monotonic()
        self.catch_up()
        rss = rss_kib(self.worker.proc.pid)
        print(f"  caught up {time.monotonic() - t:.1f}s after producing; worker RSS {mib(rss)}")
        first_commit, caught_up = self.restart()
        print(
            f"  restart: first commit {first_commit:.1f}s after start, caught up on "
            f"{self.args.restart_events:,} new events after {caught_up:.1f}s"
        )
        return Point(events, rss, first_commit, caught_up)

    def run(self) -> list[Point]:
        self.worker = self.new_worker().start()
        points: list[Point] = []
        try:
            for events in (self.args.checkpoint, self.args.events):
                print(f"point {len(points) + 1}: {events:,} events")
                points.append(self.point(events))
            stop(self.worker)
        finally:
            if self.worker.alive():
                self.worker.kill()
        return points


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000, help="unique usage events in all")
    ap.add_argument("--checkpoint", type=int, default=200_000, help="first measuring point")
    ap.add_argument("--quick", action="store_true", help="--events 100000 --checkpoint 20000")
    ap.add_argument(
        "--chunk", type=int, default=50_000, help="events generated and produced at once"
    )
    ap.add_argument("--restart-events", type=int, default=2000, help="waiting at each restart")
    ap.add_argument("--dup", type=float, default=0.05)
    ap.add_argument("--bad", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--agents", help="agents to run, e.g. 'ingest' (default: all)")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds to wait for each catch-up")
    ap.add_argument("--keep-log", help="copy the workers' log to this file at the end")
    args = ap.parse_args()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    if args.quick:
        args.events, args.checkpoint = 100_000, 20_000
    if not 0 < args.checkpoint < args.events:
        ap.error("need 0 < --checkpoint < --events")

    bootstrap = bootstrap_servers()
    with tempfile.TemporaryDirectory() as tmp:
        soak = Soak(args, bootstrap=bootstrap, tmp=Path(tmp))
        print(event_time_note())
        settings = {**os.environ, **soak.env}
        print(
            "worker settings (environment; request timeout and retention short on purpose): "
            + ", ".join(
                f"{k}={v}" for k, v in sorted(settings.items()) if k.startswith("NODEMETER_WORKER_")
            )
            + f"; agents: {args.agents or 'all'}; batch {args.batch}"
        )
        print(
            f"topic {soak.topics.usage} ({soak.topics.partitions} partitions); per chunk of "
            f"{args.chunk:,} events: +{args.dup:.0%} duplicates, +{args.bad:.0%} malformed"
        )
        t = time.monotonic()
        try:
            points = soak.run()
            stored = stored_events(soak.worker) if soak.worker is not None else "unknown"
        finally:
            if args.keep_log:
                shutil.copyfile(Path(tmp) / "worker.log", args.keep_log)
                print(f"worker log (every run, appended): {args.keep_log}")
        print(
            f"stored {stored} unique events (expected {soak.produced}); {time.monotonic() - t:.0f}s in all"
        )

    print("RSS: the worker once caught up; restart: SIGTERM, new worker, start to first commit")
    for i, p in enumerate(points, 1):
        print(
            f"point {i}: {p.events:>10,} events  RSS {mib(p.rss_kib):>12}  "
            f"restart to first commit {p.restart_first_commit_s:5.1f}s  "
            f"to caught up {p.restart_caught_up_s:5.1f}s"
        )
    a, b = points
    print(
        f"rss_ratio={b.rss_kib / a.rss_kib:.2f} "
        f"restart_ratio={b.restart_first_commit_s / a.restart_first_commit_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
