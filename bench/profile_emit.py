"""Where the time of one ``Meter.emit`` goes, without a broker (one core, best of 5).

    .venv/bin/python bench/profile_emit.py [--events 50000]

Times each step of the emit path on the events ``bench_emit.py`` sends: validation,
encoding and key on the pure-Python path and on the compiled one, then a whole
``Meter.emit`` with a producer whose ``produce()`` does nothing (the SDK's own
overhead), and a real confluent-kafka ``produce()`` into a local queue (no broker:
the records are purged, not sent).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench_emit import make_events
from nodemeter import fastcodec
from nodemeter.codec import record_key
from nodemeter.events import UsageEvent, validate_record
from nodemeter.meter import Meter, MeterConfig


class NullProducer:
    def produce(self, topic: str, value: bytes, key: bytes | None, on_delivery: Any) -> None:
        pass

    def flush(self, timeout: float) -> int:
        return 0

    def poll(self, timeout: float) -> int:
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        pass

    def list_topics(self, topic: str | None = None, timeout: float = 1.0) -> Any:
        return None

    def __len__(self) -> int:  # nothing queued: every produce() is dropped
        return 0


def per_event(events: list[UsageEvent], fn: Callable[[UsageEvent], object]) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for e in events:
            fn(e)
        best = min(best, time.perf_counter() - t0)
    return best / len(events) * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    events = make_events(args.events)
    spool = Path(tempfile.mkdtemp(prefix="nodemeter-profile-"))
    cfg = MeterConfig(bootstrap_servers="127.0.0.1:1", topic="t", spool_dir=spool)

    rows: list[tuple[str, float]] = [("loop + call of a no-op", per_event(events, lambda e: None))]
    rows += [
        ("python: events.validate_record", per_event(events, validate_record)),
        ("python: fastcodec.encode", per_event(events, fastcodec.encode)),
        ("python: codec.record_key", per_event(events, record_key)),
        (
            "python: validate + encode + key",
            per_event(events, fastcodec.python_validate_and_encode),
        ),
    ]
    if fastcodec.NATIVE:
        rows.append(
            ("native: validate + encode + key", per_event(events, fastcodec.validate_and_encode))
        )
    for native in ([True] if fastcodec.NATIVE else []) + [False]:
        meter = Meter(
            cfg, producer_factory=lambda c: NullProducer(), native=native, background=False
        )
        label = "native" if native else "python"
        rows.append((f"Meter.emit, {label}, no-op produce()", per_event(events, meter.emit)))
        meter.close()

    raw = Producer({**cfg.producer_conf(), "queue.buffering.max.messages": 10_000_000})
    encoded = [(fastcodec.encode(e), record_key(e)) for e in events]

    def on_delivery(err: Any, msg: Any) -> None:
        pass

    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for value, key in encoded:
            raw.produce("t", value, key, on_delivery=on_delivery)
        best = min(best, time.perf_counter() - t0)
        raw.purge()
    rows.append(("confluent produce() + callback arg", best / len(events) * 1e9))

    print(f"{len(events):,} usage events; compiled encoder: {fastcodec.NATIVE}")
    for label, ns in rows:
        print(f"{label:<40} {ns:8.0f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
