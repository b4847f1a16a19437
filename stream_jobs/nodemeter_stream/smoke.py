"""``nodemeter smoke``: the smallest end-to-end run on the real components.

Produces a few usage events to Kafka, consumes them back, writes them to ClickHouse
(embedded chDB by default) and prints the stored rows. Starts the local broker when
no ``NODEMETER_KAFKA_BOOTSTRAP`` is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from nodemeter.codec import decode_record, encode_record, record_key
from nodemeter.events import GpuSource, Meters, UsageEvent, event_id_for
from nodemeter.kafkalog import with_logger
from nodemeter_stream.ingest.rows import USAGE_EVENT_COLUMNS, usage_event_row
from nodemeter_stream.sink.migrate import migrate
from nodemeter_stream.sink.store import ClickHouseConfig, connect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=6, help="how many events to send (default 6)")
    parser.add_argument(
        "--url", help="ClickHouse URL (default NODEMETER_CLICKHOUSE_URL or chdb://.nodemeter/chdb)"
    )


def bootstrap_servers() -> str:
    env = os.environ.get("NODEMETER_KAFKA_BOOTSTRAP")
    if env:
        return env
    from nodemeter_stream.devenv import kafka

    return kafka.up()


def sample_events(n: int, *, tenant: str = "acme", now: datetime | None = None) -> list[UsageEvent]:
    now = now or datetime.now(UTC)
    request_id = f"smoke-{uuid.uuid4().hex[:8]}"
    nodes = ["preprocess", "retrieve", "llm.answer", "gpu.rerank"]
    out = []
    for i in range(n):
        node = nodes[i % len(nodes)]
        span = f"span-{i}"
        gpu = node.startswith("gpu")
        out.append(
            UsageEvent(
                event_id=event_id_for(tenant, request_id, span, 0),
                tenant=tenant,
                request_id=request_id,
                node_id=node,
                span_id=span,
                workflow="smoke",
                model="gpt-4o-mini" if node.startswith("llm") else None,
                event_time=now + timedelta(milliseconds=i),
                meters=Meters(
                    input_tokens=100 * (i + 1) if node.startswith("llm") else 0,
                    output_tokens=10 * (i + 1) if node.startswith("llm") else 0,
                    gpu_ms=25 * (i + 1) if gpu else 0,
                    gpu_type="A100" if gpu else "",
                    gpu_source=GpuSource.ESTIMATED if gpu else GpuSource.NONE,
                    cpu_ms=3 * (i + 1),
                    api_calls=1 if node == "retrieve" else 0,
                ),
            )
        )
    return out


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, Producer

    from nodemeter_stream.topics import Topics, ensure_topics

    t0 = time.monotonic()
    bootstrap = bootstrap_servers()
    topic = Topics(prefix=f"smoke-{uuid.uuid4().hex[:6]}.").usage
    ensure_topics(bootstrap, Topics(prefix=topic.removesuffix("nodemeter.usage.v1")))
    events = sample_events(args.events)
    producer = Producer(
        with_logger({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    )
    for ev in events:
        producer.produce(topic, value=encode_record(ev), key=record_key(ev))
    if producer.flush(30) != 0:
        print("smoke: not every event was delivered", file=sys.stderr)
        return 1
    print(f"produced {len(events)} events to {topic} at {bootstrap}")

    consumer = Consumer(
        with_logger(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"smoke-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    rows: list[list[object]] = []
    deadline = time.monotonic() + 60
    while len(rows) < len(events) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        record = decode_record(msg.value() or b"")
        assert isinstance(record, UsageEvent)
        rows.append(
            usage_event_row(
                record,
                topic=msg.topic() or "",
                partition=msg.partition() or 0,
                offset=msg.offset() or 0,
            )
        )
    consumer.close()
    print(f"consumed {len(rows)} events")

    cfg = ClickHouseConfig(**({"url": args.url} if args.url else {}))
    client = connect(cfg)
    migrate(client, verbose=False)
    client.insert("usage_events", rows, column_names=list(USAGE_EVENT_COLUMNS))
    ids = [ev.event_id for ev in events]
    result = client.query(
        "SELECT node_id, input_tokens, output_tokens, gpu_ms, cpu_ms, api_calls "
        "FROM usage_events FINAL WHERE event_id IN {ids:Array(String)} ORDER BY event_time",
        parameters={"ids": ids},
    )
    print(f"stored in ClickHouse ({cfg.redacted()}, database {cfg.database}):")
    header = ("node_id", "input_tokens", "output_tokens", "gpu_ms", "cpu_ms", "api_calls")
    print("  " + " | ".join(f"{h:>13}" for h in header))
    for r in result.result_rows:
        print("  " + " | ".join(f"{v!s:>13}" for v in r))
    ok = len(result.result_rows) == len(events)
    print(
        f"smoke {'OK' if ok else 'FAILED'}: {len(result.result_rows)}/{len(events)} rows in {time.monotonic() - t0:.1f}s"
    )
    return 0 if ok else 1
