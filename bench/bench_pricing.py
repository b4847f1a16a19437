"""Throughput of the pricing core (pure engine, no broker): prints figures, asserts nothing.

    .venv/bin/python bench/bench_pricing.py [--events 50000]

Measures events/s and lines/s for the example price books over one month for three
tenants (graduated, volume, package, included units, a credit grant, cached tokens), plus
the cost of a worker restart between every batch (state recovered from JSON, as the
changelog does).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from nodemeter.events import GpuSource, Meters, UsageEvent
from nodemeter_stream.pricing import PricingEngine, load_config, new_state
from nodemeter_stream.pricing.book import EXAMPLES_DIR


def events(n: int) -> list[UsageEvent]:
    t0 = datetime(2026, 11, 2, tzinfo=UTC)
    step = timedelta(seconds=27 * 24 * 3600 / max(n, 1))
    out = []
    for i in range(n):
        tenant = ("acme", "globex", "initech")[i % 3]
        out.append(
            UsageEvent(
                event_id=f"e{i}",
                tenant=tenant,
                request_id=f"r{i // 5}",
                node_id="llm",
                span_id=f"s{i}",
                event_time=t0 + step * i,
                workflow="support",
                model="gpt-4o" if tenant != "globex" else "gpt-4o-mini",
                meters=Meters(
                    input_tokens=1200,
                    output_tokens=300,
                    cached_input_tokens=800,
                    gpu_ms=5000,
                    gpu_type="H100",
                    gpu_source=GpuSource.MEASURED,
                    api_calls=2,
                    custom={"pages": 3},
                ),
            )
        )
    return out


def run(evs: list[UsageEvent], *, restart_every: int = 0) -> tuple[float, int]:
    engine = PricingEngine(load_config(EXAMPLES_DIR))
    states: dict[str, dict[str, Any]] = {}
    seen: dict[str, Any] = {}
    lines = 0
    t = time.perf_counter()
    for i, ev in enumerate(evs):
        if restart_every and i % restart_every == 0:
            states, seen = json.loads(json.dumps(states)), json.loads(json.dumps(seen))
        state = states.setdefault(ev.tenant, new_state(ev.tenant))
        lines += len(engine.process(state, seen, ev).lines)
    for state in states.values():
        lines += len(engine.close_all(state).lines)
    return time.perf_counter() - t, lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=30_000)
    args = ap.parse_args()
    evs = events(args.events)
    secs, lines = run(evs)
    print(f"pricing engine: {len(evs)} events, {lines} lines in {secs:.2f}s "
          f"= {len(evs) / secs:,.0f} events/s, {lines / secs:,.0f} lines/s")  # fmt: skip
    n = min(len(evs), 3000)
    secs, _ = run(evs[:n], restart_every=500)
    print(f"with a state recovery (JSON round trip) every 500 events: {n} events in {secs:.2f}s "
          f"= {n / secs:,.0f} events/s")  # fmt: skip


if __name__ == "__main__":
    main()
