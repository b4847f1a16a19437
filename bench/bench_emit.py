"""Emit overhead of the SDK against raw confluent-kafka ``produce()``, in one run.

    .venv/bin/python bench/bench_emit.py [--events 100000] [--spans 20000] [--rounds 3] [--all-cores]

Uses ``NODEMETER_KAFKA_BOOTSTRAP`` if set, else starts a private local broker
(Kafka 4.4, KRaft) on free ports and stops it afterwards. By default the process
is pinned to one CPU core (librdkafka's threads included) so the figures are
"per core". Prints:

- raw: ``produce()`` of the very same encoded bytes and keys, same producer
  settings (idempotent, acks=all, lz4, linger 5 ms), without and with a
  per-message delivery callback called for every delivery;
- sdk emit: ``Meter.emit(UsageEvent)``: validation + encoding + produce, the
  callback called for failed deliveries only (the default, ``report_successes=False``),
  with the compiled encoder (``nodemeter_native``, when installed) and with the
  pure-Python path forced (``Meter(native=False)``), each against raw;
- sdk span: ``with meter.node(...) as s: s.record(...)`` inside a request,
  median and p99 microseconds per span (one usage record each), both paths.
Rates include waiting for every delivery (flush) at the end. Each throughput
measurement runs ``--rounds`` times, interleaved; the median round is reported.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from nodemeter import fastcodec
from nodemeter.codec import encode_record, record_key
from nodemeter.events import Meters, UsageEvent, event_id_for, utcnow
from nodemeter.meter import Meter, MeterConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_events(n: int) -> list[UsageEvent]:
    now = utcnow()
    return [
        UsageEvent(
            event_id=event_id_for("acme", f"req-{i // 8}", f"span-{i % 8}", 0),
            tenant="acme",
            request_id=f"req-{i // 8}",
            node_id="llm.summarize",
            span_id=f"span-{i % 8}",
            parent_span_id="root",
            branch_path="1",
            workflow="rag",
            model="gpt-4o",
            provider="openai",
            meters=Meters(input_tokens=800 + i % 100, output_tokens=90, cached_input_tokens=512),
            event_time=now,
            attributes={"region": "eu"},
        )
        for i in range(n)
    ]


def timed(n: int, fn: Callable[[], None], flush: Callable[[], Any]) -> tuple[float, float]:
    """(events/s including delivery, µs per event inside the calls)."""
    t0 = time.perf_counter()
    fn()
    t_call = time.perf_counter() - t0
    flush()
    total = time.perf_counter() - t0
    return n / total, t_call / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--spans", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3, help="repeats of each throughput run")
    ap.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    args = ap.parse_args()

    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})  # before any producer thread exists: they inherit it
        print(f"pinned to CPU core {core}")

    cfg_broker = None
    bootstrap = os.environ.get("NODEMETER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        from nodemeter_stream.devenv import kafka

        cfg_broker = kafka.KafkaDevConfig(
            port=free_port(),
            controller_port=free_port(),
            home=Path(tempfile.mkdtemp(prefix="nodemeter-bench-")),
        )
        bootstrap = kafka.up(cfg_broker)
    try:
        run(bootstrap, args.events, args.spans, args.rounds)
    finally:
        if cfg_broker is not None:
            from nodemeter_stream.devenv import kafka

            kafka.down(cfg_broker)
    return 0


def run(bootstrap: str, n: int, spans: int, rounds: int) -> None:
    from nodemeter_stream.topics import Topics, ensure_topics

    topics = Topics(prefix=f"bench{uuid.uuid4().hex[:6]}.")
    ensure_topics(bootstrap, topics)
    topic = topics.usage
    spool = Path(tempfile.mkdtemp(prefix="nodemeter-bench-spool-"))
    config = MeterConfig(bootstrap_servers=bootstrap, topic=topic, spool_dir=spool)
    events = make_events(n)
    encoded = [(encode_record(e), record_key(e)) for e in events]
    print(
        f"{n:,} events of {len(encoded[0][0])} bytes; broker {bootstrap}; Python {sys.version.split()[0]}"
    )
    print(
        f"compiled encoder (nodemeter_native): {'in use' if fastcodec.NATIVE else 'NOT installed'}"
    )

    # warm up connections and metadata for every path
    # raw: every delivery reported (what "raw + delivery callback" measures)
    raw = Producer(MeterConfig(bootstrap_servers=bootstrap, report_successes=True).producer_conf())
    raw.produce(topic, encoded[0][0], encoded[0][1])
    raw.flush(30)

    def raw_plain() -> None:
        produce = raw.produce
        for value, key in encoded:
            try:
                produce(topic, value, key)
            except BufferError:
                raw.poll(0.05)
                produce(topic, value, key)

    delivered = [0]

    def on_delivery(err: Any, msg: Any) -> None:
        delivered[0] += 1

    def raw_cb() -> None:
        produce = raw.produce
        for i, (value, key) in enumerate(encoded):
            produce(topic, value, key, on_delivery=on_delivery)
            if i % 1000 == 0:
                raw.poll(0)

    meters = {"native": Meter(config), "python": Meter(config, native=False)}
    for meter in meters.values():
        meter.emit(events[0])
        meter.flush(30)

    def sdk_emit(meter: Meter) -> Callable[[], None]:
        def loop() -> None:
            emit = meter.emit
            for e in events:
                emit(e)

        return loop

    paths: dict[str, tuple[Callable[[], None], Callable[[], Any]]] = {
        "raw produce()": (raw_plain, lambda: raw.flush(60)),
        "raw produce() + delivery callback": (raw_cb, lambda: raw.flush(60)),
    }
    if meters["native"].native:
        m = meters["native"]
        paths["sdk Meter.emit(), native"] = (sdk_emit(m), lambda: m.flush(60))
    p = meters["python"]
    paths["sdk Meter.emit(), pure Python"] = (sdk_emit(p), lambda: p.flush(60))

    results: dict[str, list[tuple[float, float]]] = {label: [] for label in paths}
    for _ in range(rounds):
        for label, (fn, flush) in paths.items():
            results[label].append(timed(n, fn, flush))
    print(f"--- throughput, one core (median of {rounds} rounds; rates include delivery) ---")
    for label, rounds_ in results.items():
        rs = sorted(rounds_)
        r, us = rs[len(rs) // 2]
        spread = f"{rs[0][0]:,.0f} - {rs[-1][0]:,.0f}"
        print(
            f"{label:<34} {r:>11,.0f} events/s   {us:5.2f} µs/event in the call   (rounds: {spread})"
        )
    # Ratios per round (each round runs every path back to back, so a load change on a
    # shared machine moves raw and SDK together), then their median.
    plain, cb = results["raw produce()"], results["raw produce() + delivery callback"]
    for label in paths:
        if label.startswith("sdk"):
            vs_raw = sorted(r[0] / raw_r[0] for r, raw_r in zip(results[label], plain, strict=True))
            vs_cb = sorted(r[0] / c[0] for r, c in zip(results[label], cb, strict=True))
            print(
                f"{label + ' / raw':<40} {vs_raw[len(vs_raw) // 2]:6.1%}   "
                f"(/ raw + callback: {vs_cb[len(vs_cb) // 2]:6.1%}; "
                f"rounds {vs_raw[0]:.0%} - {vs_raw[-1]:.0%})"
            )

    print("--- a node span with one usage record ---")
    for name, meter in meters.items():
        if name == "native" and not meter.native:
            continue
        samples: list[int] = []
        with meter.request(tenant="acme", workflow="bench"):
            for i in range(spans):
                t0 = time.perf_counter_ns()
                with meter.node("llm.summarize", model="gpt-4o") as span:
                    span.record(input_tokens=800 + i % 100, output_tokens=90)
                samples.append(time.perf_counter_ns() - t0)
                if i % 2000 == 0:
                    meter._producer.poll(0)
        meter.flush(60)
        samples.sort()
        med = statistics.median(samples) / 1000
        p99 = samples[int(len(samples) * 0.99)] / 1000
        print(
            f"span with one record, {name:<6}: median {med:.1f} µs, p99 {p99:.1f} µs ({spans:,} spans)"
        )
    for name, meter in meters.items():
        stats = meter.stats.as_dict()
        meter.close()
        print(f"meter stats ({name}): {stats}")
        assert stats["lost"] == 0 and stats["spooled"] == 0, "the benchmark must not lose or spool"


if __name__ == "__main__":
    sys.exit(main())
