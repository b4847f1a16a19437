"""The Faust ceiling: how fast a trivial faust-streaming agent reads a topic.

    python bench/faust_ceiling.py --bootstrap HOST:PORT --topic TOPIC [--expect N] [--batch 5000]
                                  [--transport faust|nodemeter] [--intake noack_take|batches]

One agent (``concurrency=1``) on the worker's own ``faust.App`` settings
(``nodemeter_stream.app.faust_app``: memory:// store, session/heartbeat/commit
intervals, ``stream_buffer_maxsize``, ``stream_wait_empty=False``, ...) but Faust's own
aiokafka transport (``kafka://``) does ``async for batch in stream.noack_take(batch,
within=0.5)`` and acks every event: no decoding, no state, no writes, none of the
worker's commit guard or intake. Whatever the worker does beyond this is the price of
the pipeline; this is the most Faust alone gives.

``--transport nodemeter`` reads through the worker's transport (``commit_guard``: its
fetch loop hands a record to the conductor directly when nothing can make it wait) and
``--intake batches`` takes batches as the worker's agents do (``agents/intake.py``):
the two together are the intake the worker itself runs on.

Times from the first batch received to the moment ``--expect`` records were read
(default: the topic's end offsets at start) and prints, last::

    faust_ceiling records=<N> seconds=<first batch to last record> records_per_s=<N/s> first_batch=<n>

(the records of the first batch arrived before the clock started: with few records
they make the rate meaningless).

``bench/bench_worker.py`` runs it as a subprocess and parses that line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import uuid
from typing import Any

RESULT_PREFIX = "faust_ceiling "


def say(line: str) -> None:
    # Faust's worker redirects sys.stdout to its logger; write to the real stdout.
    out = sys.__stdout__ or sys.stdout
    out.write(line + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    from nodemeter_stream.offsets import end_offsets

    t_start = time.monotonic()
    expect = (
        args.expect
        if args.expect is not None
        else sum(end_offsets(args.bootstrap, args.topic).values())
    )
    if expect <= 0:
        say(f"nothing to read on {args.topic}")
        return 2
    with tempfile.TemporaryDirectory(prefix="faust-ceiling-") as datadir:
        return read_all(args, expect, datadir=datadir, t_start=t_start)


def read_all(args: argparse.Namespace, expect: int, *, datadir: str, t_start: float) -> int:
    import faust

    from nodemeter_stream.agents.intake import ack_events, batches
    from nodemeter_stream.app import WorkerConfig, faust_app
    from nodemeter_stream.commit_guard import SCHEME

    cfg = WorkerConfig(
        bootstrap=args.bootstrap,
        app_id=f"faust-ceiling-{uuid.uuid4().hex[:10]}",
        partitions=args.partitions,
        batch_size=args.batch,
        batch_seconds=args.within,
        # the worker harness's settings (tests/integration/worker_harness.py)
        session_timeout_s=6.0,
        heartbeat_interval_s=1.0,
        data_dir=datadir,
    )
    app = faust_app(cfg, scheme="kafka" if args.transport == "faust" else SCHEME)
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    take = (
        (lambda stream: stream.noack_take(args.batch, within=args.within))
        if args.intake == "noack_take"
        else (lambda stream: batches(stream, args.batch, args.within))
    )
    seen = first_batch = 0
    t_first: float | None = None

    @app.agent(topic, concurrency=1, name="read_only")
    async def read_only(stream: Any) -> None:
        nonlocal seen, first_batch, t_first
        async for batch in take(stream):
            if t_first is None:
                t_first, first_batch = time.monotonic(), len(batch)
            if args.intake == "noack_take":
                for event in batch:
                    await stream.ack(event)
            else:
                ack_events(batch)
            seen += len(batch)
            if seen >= expect:
                t_last = time.monotonic()
                secs = t_last - t_first
                say(
                    f"read {seen} records: start to first batch {t_first - t_start:.1f}s, "
                    f"first batch ({first_batch} records) to last record {secs:.2f}s"
                )
                say(
                    f"{RESULT_PREFIX}records={seen} seconds={secs:.3f} "
                    f"records_per_s={seen / secs:.0f} first_batch={first_batch}"
                )
                os.kill(os.getpid(), signal.SIGTERM)  # mode's graceful stop
                return

    worker = faust.Worker(app, loglevel=args.log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.spinner = None  # it writes terminal control codes into the captured output
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    else:
        code = 0
    return code if seen >= expect else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--expect", type=int, help="records to read (default: the end offsets now)")
    ap.add_argument("--partitions", type=int, default=4, help="the app's topic_partitions")
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--within", type=float, default=0.5)
    ap.add_argument(
        "--transport",
        default="faust",
        choices=["faust", "nodemeter"],
        help="faust: Faust's own aiokafka transport (the ceiling); nodemeter: the worker's",
    )
    ap.add_argument(
        "--intake",
        default="noack_take",
        choices=["noack_take", "batches"],
        help="noack_take + stream.ack (the ceiling), or the worker's agents/intake.py",
    )
    ap.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
