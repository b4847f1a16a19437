"""Decoder fuzz: random mutations of valid records through the worker's ``classify``
(compiled decoder, then the Python one, then validation) and, for what is accepted,
into the real ``usage_events`` table on chDB. Every mutation must end either accepted,
stable and stored, or as a typed dead letter; nothing may raise.

Bounded for CI (20,000 cases or 10 s, whichever comes first: about 2 s). The long run:

    NODEMETER_FUZZ_CASES=400000 NODEMETER_FUZZ_SECONDS=0 \\
        nice .venv/bin/pytest tests/integration/test_decoder_fuzz.py -q -s -p no:randomly

(``NODEMETER_FUZZ_SEED`` picks another seed; the summary line gives the figures.)
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodemeter import codec
from nodemeter.codec import HEADER_LEN, encode_payload, encode_record, usage_event_to_avro
from nodemeter.events import GpuSource, Meters, RequestEnd, Status, UsageEvent
from nodemeter_stream.ingest.decode import Accepted, DeadLetter, Source, classify
from nodemeter_stream.ingest.rows import USAGE_EVENT_COLUMNS, usage_event_row
from nodemeter_stream.sink.clickhouse import INSERT_SETTINGS

pytestmark = pytest.mark.clickhouse

CASES = int(os.environ.get("NODEMETER_FUZZ_CASES", "20000"))
SECONDS = float(os.environ.get("NODEMETER_FUZZ_SECONDS", "10"))
SEED = int(os.environ.get("NODEMETER_FUZZ_SEED", "12"))
T = datetime(2026, 11, 2, 10, tzinfo=UTC)
RETENTION_DAYS = 400  # usage_events' TTL (migration 001)

BASE = UsageEvent(
    event_id="e",
    tenant="acme",
    request_id="r1",
    node_id="llm.answer",
    span_id="s1",
    parent_span_id="root",
    branch_path="0.1",
    workflow="qa",
    model="gpt-4o",
    provider="openai",
    sequence=2,
    event_time=T,
    meters=Meters(
        input_tokens=812,
        output_tokens=96,
        cached_input_tokens=64,
        gpu_ms=1200,
        gpu_type="H100",
        gpu_source=GpuSource.MEASURED,
        custom={"pages": 3, "vectors": 70_000},
    ),
    status=Status.PARTIAL,
    attributes={"region": "eu", "ü": "ñ"},
    trace_id="t" * 32,
)


def corpus() -> list[bytes]:
    minimal = UsageEvent(
        event_id="m", tenant="globex", request_id="r", node_id="n", span_id="n", event_time=T
    )
    end = RequestEnd(
        event_id="end", tenant="acme", request_id="r1", root_span_id="root", span_count=3,
        event_time=T + timedelta(seconds=1), status=Status.ERROR,
    )  # fmt: skip
    v1 = usage_event_to_avro(BASE)
    v1 = {k: v for k, v in v1.items() if k not in ("trace_id", "producer")}
    return [
        encode_record(BASE),
        encode_record(minimal),
        encode_record(replace(BASE, model=None, provider=None, attributes={})),
        encode_record(end),
        encode_payload("usage_event", v1, version=1),
    ]


# small zigzag varints, negative ones included (0x01 = -1, 0x03 = -2, 0x7f = -64):
# what turns an enum or union index, a length or a count into an edge case
EDGE_BYTES = [0x00, 0x01, 0x02, 0x03, 0x04, 0x06, 0x7F, 0x80, 0xFF]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(7)
        # mostly the body: a damaged header is only ever bad_magic or unknown_schema
        lo = HEADER_LEN if len(b) > HEADER_LEN and rng.random() < 0.9 else 0
        i = rng.randint(lo, len(b))
        if how == 0 and i < len(b):
            b[i] = rng.randrange(256)
        elif how == 1 and i < len(b):
            b[i] ^= 1 << rng.randrange(8)
        elif how == 2 and i < len(b):
            b[i] = rng.choice(EDGE_BYTES)
        elif how == 3 and i < len(b):
            del b[i : i + rng.randint(1, 8)]
        elif how == 4:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif how == 5 and b:
            del b[rng.randrange(len(b)) :]  # truncate
        elif b:
            j = rng.randrange(len(b))
            b[i:i] = b[j : j + rng.randint(1, 16)]  # duplicate a chunk elsewhere
    return bytes(b)


def test_mutated_records_are_accepted_and_stored_or_typed_dead_letters(ch: Any) -> None:
    rng = random.Random(SEED)
    seeds = corpus()
    reasons: Counter[str] = Counter()
    rows: list[list[Any]] = []
    keys: set[tuple[str, str]] = set()
    accepted = ends = 0
    horizon = datetime.now(UTC) - timedelta(days=RETENTION_DAYS - 1)
    start = time.monotonic()
    n = 0
    while n < CASES and (not SECONDS or time.monotonic() - start < SECONDS):
        n += 1
        data = mutate(rng, rng.choice(seeds))
        src = Source(topic="fuzz", partition=0, offset=n)
        out = classify(data, key=b"k", source=src)  # must not raise
        if isinstance(out, DeadLetter):
            # typed: a reason code, not the defensive catch-all for odd decoded types
            assert out.reason.isidentifier() and out.reason != "invalid", (data.hex(), out)
            reasons[out.reason] += 1
            continue
        assert isinstance(out, Accepted)
        record = out.record
        # the Python path gives the same record, and it survives a round trip
        assert codec.decode_record(data) == record, data.hex()
        assert codec.decode_record(encode_record(record)) == record, data.hex()
        accepted += 1
        if isinstance(record, UsageEvent):
            rows.append(usage_event_row(record, topic="fuzz", offset=n))
            if record.event_time > horizon:  # older ones the table's TTL drops, by design
                keys.add((record.tenant, record.event_id))
        else:
            ends += 1
    elapsed = time.monotonic() - start
    if rows:  # every accepted usage event, in one insert: a value it cannot hold fails it
        ch.insert(  # with the sink's settings: a mutated time can land in any month
            "usage_events", rows, column_names=list(USAGE_EVENT_COLUMNS), settings=INSERT_SETTINGS
        )
    stored = ch.query(
        "SELECT uniqExact(tenant, event_id) FROM usage_events "
        f"WHERE event_time > now() - INTERVAL {RETENTION_DAYS - 1} DAY"
    ).result_rows[0][0]
    assert stored == len(keys)  # every accepted (tenant, event_id) is there
    print(
        f"\n[fuzz] seed {SEED}: {n} mutations in {elapsed:.1f} s ({n / elapsed:,.0f}/s); "
        f"accepted {accepted} ({len(rows)} usage events stored, {len(keys)} distinct in the TTL; {ends} request "
        f"ends), dead letters {n - accepted}: {dict(reasons.most_common())}"
    )
    assert n >= min(CASES, 500)  # the bound is time, but a CI run must still mean something
    assert reasons["bad_enum_index"] and reasons["bad_union_index"]
