"""Throughput of the pricing core (pure engine, no broker): prints figures, asserts nothing.

    .venv/bin/python bench/bench_pricing.py [--events 30000] [--batch 500] [--repeat 3]

Measures events/s of ``price_batch`` (the worker's call: encoded usage-by-tenant
records, tenant states stored as JSON between batches, ``keep_lines=False``) for the
example price books over one month for three tenants (graduated, volume, package,
included units, a credit grant, cached tokens, budgets), on the same data for the
frozen reference engine (``tests/unit/_pricing_reference``, the engine before the speed
work) and for the current one, and checks that both give the same lines. Then the
raw ``PricingEngine.process`` loop and the cost of a worker restart between batches.
Times are CPU time of this process (``time.process_time``), best of ``--repeat`` runs
taken in turn, so that other load on the machine moves both figures alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nodemeter.codec import encode_record
from nodemeter.events import GpuSource, Meters, UsageEvent
from nodemeter_stream.pricing import PricingEngine, load_config, new_state
from nodemeter_stream.pricing.batch import Item, price_batch
from nodemeter_stream.pricing.book import EXAMPLES_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))


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


def items(evs: list[UsageEvent]) -> list[Item]:
    """Records of the usage-by-tenant topic: one partition per tenant, offsets in order."""
    parts = {"acme": 0, "globex": 1, "initech": 2}
    return [
        Item("usage-by-tenant", parts[ev.tenant], i, ev.tenant.encode(), encode_record(ev),
             ingest=("usage", 0, i))
        for i, ev in enumerate(evs)
    ]  # fmt: skip


def run_batches(engine: Any, recs: list[Item], batch: int) -> tuple[float, list[dict[str, Any]]]:
    """price_batch over ``recs`` in batches; states stored as JSON text between batches
    (as the worker stores them). Returns (seconds in price_batch, lines as dicts)."""
    stored: dict[str, str] = {}
    lines: list[dict[str, Any]] = []
    secs = 0.0
    for lo in range(0, len(recs), batch):

        def get_state(tenant: str) -> Any:
            text = stored.get(tenant)
            return json.loads(text) if text is not None else None

        t = time.process_time()
        result = price_batch(engine, recs[lo : lo + batch], get_state=get_state)
        secs += time.process_time() - t
        for tenant, (_, state) in result.states.items():
            stored[tenant] = json.dumps(state)
        lines += [ln.to_dict() for ln in result.lines]
    return secs, lines


def run(
    make: Callable[[], Any], evs: list[UsageEvent], *, restart_every: int = 0
) -> tuple[float, int]:
    engine = make()
    states: dict[str, dict[str, Any]] = {}
    seen: dict[str, Any] = {}
    lines = 0
    t = time.process_time()
    for i, ev in enumerate(evs):
        if restart_every and i % restart_every == 0:
            states, seen = json.loads(json.dumps(states)), json.loads(json.dumps(seen))
        state = states.setdefault(ev.tenant, new_state(ev.tenant))
        lines += len(engine.process(state, seen, ev).lines)
    for state in states.values():
        lines += len(engine.close_all(state).lines)
    return time.process_time() - t, lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = ap.parse_args()
    from _pricing_reference import example_documents
    from _pricing_reference.book import parse_documents as ref_parse_documents
    from _pricing_reference.engine import PricingEngine as RefEngine

    ref_docs = example_documents(EXAMPLES_DIR)  # without the (newer) model aliases
    engines: dict[str, Callable[[], Any]] = {
        "reference": lambda: RefEngine(ref_parse_documents(ref_docs), keep_lines=False),
        "current": lambda: PricingEngine(load_config(EXAMPLES_DIR), keep_lines=False),
    }
    evs = events(args.events)
    recs = items(evs)
    rates: dict[str, float] = {}
    outputs: dict[str, list[dict[str, Any]]] = {}
    best = dict.fromkeys(engines, float("inf"))
    for _ in range(args.repeat):  # interleaved, so a change of machine load hits both
        for name, make in engines.items():
            secs, outputs[name] = run_batches(make(), recs, args.batch)
            best[name] = min(best[name], secs)
    for name in engines:
        rates[name] = len(recs) / best[name]
        print(f"price_batch {name:>9}: {len(recs)} events in batches of {args.batch}, "
              f"{len(outputs[name])} lines, best of {args.repeat}: {best[name]:.2f}s "
              f"= {rates[name]:,.0f} events/s ({1e6 / rates[name]:.0f} us/event)")  # fmt: skip
    # the current engine's lines carry fields added after the reference (rate_match,
    # input_list_cost): compare on the reference's own fields
    ref_lines = outputs["reference"]
    cur_lines = [
        {k: v for k, v in cur.items() if k in ref}
        for ref, cur in zip(ref_lines, outputs["current"], strict=False)
    ]
    same = len(ref_lines) == len(outputs["current"]) and ref_lines == cur_lines
    print(f"speed-up {rates['current'] / rates['reference']:.2f}x; "
          f"lines identical on the reference's fields: {same}")  # fmt: skip
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in engines}
    for _ in range(args.repeat):
        for name, make in engines.items():
            runs[name].append(run(make, evs))
    for name in engines:
        secs, lines = min(runs[name])
        print(f"engine.process {name:>9}: {len(evs)} events, {lines} lines in {secs:.2f}s "
              f"= {len(evs) / secs:,.0f} events/s")  # fmt: skip
    n = min(len(evs), 3000)
    for name, make in engines.items():
        secs, _ = run(make, evs[:n], restart_every=500)
        print(f"{name:>9} with a state recovery (JSON round trip) every 500 events: "
              f"{n} events in {secs:.2f}s = {n / secs:,.0f} events/s")  # fmt: skip


if __name__ == "__main__":
    main()
