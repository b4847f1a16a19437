"""What decoding one usage event costs the stream worker, without a broker (one core, best of 5).

    .venv/bin/python bench/profile_decode.py [--events 20000]

Records are made as the worker's integration tests make them
(``tests/integration/worker_harness.py``: ``usage()`` + ``encoded()``, so the bytes the
SDK writes: usage_event v2), plus the same events written with usage_event v1 (what an
older producer sends) and a richer v2 event (model, provider, attributes, as
``bench_emit.py`` sends). For each set: today's ``codec.decode_record``, the same plus
``events.validate_record`` (what ``classify`` does per record), and the compiled paths
of ``nodemeter.fastcodec`` (``decode_record``: a drop-in; ``decode_valid_usage_event``:
decode + validation in one call).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from worker_harness import T0, encoded, usage

from nodemeter import codec, fastcodec
from nodemeter.events import Meters, UsageEvent, event_id_for, validate_record


def harness_events(n: int) -> list[UsageEvent]:
    """Mixed traffic as the worker tests send it: LLM spans, GPU spans, child spans."""
    out = []
    for i in range(n):
        req, span = f"req-{i // 8}", f"span-{i % 8}"
        tenant = ("acme", "globex", "initech")[i % 3]
        if i % 4 == 0:
            out.append(usage(tenant, req, span, node="ocr", gpu_ms=840 + i % 50, cpu_ms=12))
        elif i % 4 == 1:
            out.append(usage(tenant, req, span, parent="span-0", branch="0.1", seq=i % 3))
        else:
            out.append(usage(tenant, req, span, input_tokens=800 + i % 100, output_tokens=90))
    return out


def rich_events(n: int) -> list[UsageEvent]:
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
            event_time=T0,
            attributes={"region": "eu", "user": f"u-{i % 17}"},
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            producer="nodemeter-py/0.1.0",
        )
        for i in range(n)
    ]


def as_v1(event: UsageEvent) -> bytes:
    d = codec.usage_event_to_avro(event)
    del d["trace_id"], d["producer"]
    return codec.encode_payload("usage_event", d, version=1)


def per_event(payloads: list[bytes], fn: Callable[[bytes], object]) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for p in payloads:
            fn(p)
        best = min(best, time.perf_counter() - t0)
    return best / len(payloads) * 1e6


def decode_and_validate(data: bytes) -> Any:
    record = codec.decode_record(data)
    validate_record(record)
    return record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    harness = harness_events(args.events)
    sets = {
        "worker_harness usage, v2 (SDK)": [value for _, value in encoded(harness)],
        "worker_harness usage, v1 (old)": [as_v1(e) for e in harness],
        "rich usage, v2 (SDK)": [value for _, value in encoded(rich_events(args.events))],
    }
    for name, payloads in sets.items():  # the compiled path must give the same records
        for p in payloads[:2000]:
            assert fastcodec.decode_record(p) == codec.decode_record(p), name
    print(
        f"{args.events:,} records a set; compiled decoder: {fastcodec.NATIVE_DECODE}; "
        f"Python {sys.version.split()[0]}"
    )
    paths: list[tuple[str, Callable[[bytes], object]]] = [
        ("codec.decode_record (today)", codec.decode_record),
        ("codec.decode_record + validate_record (today)", decode_and_validate),
        ("fastcodec.decode_record", fastcodec.decode_record),
        ("fastcodec.decode_valid_usage_event", fastcodec.decode_valid_usage_event),
    ]
    header = f"{'µs/event':<48}" + "".join(f"{n[:30]:>32}" for n in sets)
    print(header)
    for label, fn in paths:
        cells = "".join(f"{per_event(p, fn):>32.2f}" for p in sets.values())
        print(f"{label:<48}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
