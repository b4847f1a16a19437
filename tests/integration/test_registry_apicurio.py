"""Schema Registry mode against a real registry (issue 11, item 7): Apicurio Registry,
built from Maven Central and run on loopback (``schema_registry_url``), through its
Confluent-compatible API. The SDK registers its schemas there and frames its records
with Apicurio's ids; the real worker decodes them with the writer schemas it fetches
from Apicurio and stores each event once. The loopback fake in ``registry_api`` only
stands in for the pure-logic tests."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest
from test_worker_pipeline import worker_for
from worker_harness import (
    committed,
    consume_all,
    end,
    produce,
    query,
    usage,
    wait_caught_up,
)

import nodemeter_schemas
from nodemeter.codec import usage_event_to_avro
from nodemeter.errors import RegistryError, UnknownSchemaError
from nodemeter.events import RequestEnd, UsageEvent
from nodemeter.meter import Meter, MeterConfig
from nodemeter.registry import (
    APICURIO_CCOMPAT_PATH,
    CONFLUENT_MAGIC,
    RegistryClient,
    RegistryEncoder,
    decode_confluent,
)

pytestmark = [pytest.mark.registry, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _put(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT")
    req.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_sdk_to_worker_round_trip_through_apicurio_and_unknown_ids_dead_letter(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, schema_registry_url: str
) -> None:
    cfg = MeterConfig(
        bootstrap_servers=kafka_bootstrap,
        topic=topics.usage,
        spool_dir=tmp_path / "spool",
        registry_url=schema_registry_url,
    )
    meter = Meter(cfg)
    assert meter.registry_ready(timeout=30.0), "the SDK did not register its schemas"

    async def one_request(r: int) -> None:
        async with meter.request(tenant=f"tenant-{r % 3}", request_id=f"req-{r}", workflow="rag"):
            with meter.node("retrieve") as s:
                s.record(api_calls=1, cpu_ms=3)
            with meter.node("llm", model="gpt-4o", provider="openai") as s:
                s.record(input_tokens=100 + r, output_tokens=7)

    async def main() -> None:
        await asyncio.gather(*(one_request(r) for r in range(20)))

    asyncio.run(main())
    assert meter.flush(30) == 0
    meter.close()
    assert meter.stats.delivered == 20 * 3 and meter.stats.spooled == 0

    # Apicurio holds both subjects (RecordNameStrategy), and every record on the topic
    # is Confluent-framed with an id Apicurio resolves to the schema of its type
    subjects = _get(f"{schema_registry_url}/subjects")
    assert {"dev.nodemeter.v1.UsageEvent", "dev.nodemeter.v1.RequestEnd"} <= set(subjects)
    msgs = consume_all(kafka_bootstrap, topics.usage, expect=60)
    assert len(msgs) == 60
    client = RegistryClient(schema_registry_url)
    kinds: dict[type, int] = {}
    for m in msgs:
        value = m.value()
        assert value[:1] == CONFLUENT_MAGIC
        rec = decode_confluent(value, client)
        kinds[type(rec)] = kinds.get(type(rec), 0) + 1
    assert kinds == {UsageEvent: 40, RequestEnd: 20}
    # and one record framed with an id Apicurio never handed out (it answers 40403)
    with pytest.raises(UnknownSchemaError, match="987654"):
        client.schema(987_654)
    unknown = CONFLUENT_MAGIC + (987_654).to_bytes(4, "big") + msgs[0].value()[5:]
    produce(kafka_bootstrap, topics.usage, [(b"tenant-0", unknown)])

    w = worker_for(kafka_bootstrap, topics, tmp_path)
    w.env = {"NODEMETER_SCHEMA_REGISTRY_URL": schema_registry_url}
    w.start()
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w, timeout=120)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    rows = query(w.url, w.database,
                 "SELECT event_id, count() FROM usage_events GROUP BY event_id")  # fmt: skip
    assert len(rows) == 40 and all(int(n) == 1 for _, n in rows)  # each event exactly once
    (tokens,) = query(w.url, w.database,
                      "SELECT sum(input_tokens) FROM usage_events FINAL")  # fmt: skip
    assert int(tokens[0]) == sum(100 + r for r in range(20))
    (done,) = query(w.url, w.database,
                    "SELECT countIf(complete = 1) FROM request_records FINAL")  # fmt: skip
    assert int(done[0]) == 20  # the framed end records were merged too
    dl = query(w.url, w.database, "SELECT reason, detail FROM dead_letters FINAL")
    assert [r[0] for r in dl] == ["unknown_schema"] and "987654" in dl[0][1]


def test_a_url_without_the_ccompat_path_delays_and_dead_letters_nothing(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, schema_registry_url: str
) -> None:
    """Apicurio's root URL (without /apis/ccompat/v7) answers 404 to every schema id,
    but not with the registry's 40403: the worker must wait and say why, not dead-letter
    every record as unknown_schema. Fixed, the same records are stored once."""
    enc = RegistryEncoder(schema_registry_url)
    events = [usage("acme", f"m{i}", "s", input_tokens=i + 1) for i in range(5)]
    produce(kafka_bootstrap, topics.usage, [(b"acme", enc.encode(ev)) for ev in events])
    root = schema_registry_url.removesuffix(APICURIO_CCOMPAT_PATH)
    assert root != schema_registry_url

    w = worker_for(kafka_bootstrap, topics, tmp_path)
    w.env = {"NODEMETER_SCHEMA_REGISTRY_URL": root}
    w.start()
    try:
        deadline = time.monotonic() + 90
        while APICURIO_CCOMPAT_PATH not in w.log() and time.monotonic() < deadline:
            assert w.alive(), w.log()[-3000:]
            time.sleep(0.5)
        assert APICURIO_CCOMPAT_PATH in w.log(), w.log()[-3000:]  # says what to fix
    finally:
        w.stop()
    assert max(committed(kafka_bootstrap, w.app_id, topics.usage).values()) <= 0  # none applied
    assert query(w.url, w.database, "SELECT count() FROM dead_letters")[0][0] == 0

    w.env = {"NODEMETER_SCHEMA_REGISTRY_URL": schema_registry_url}
    w.start()
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w, timeout=120)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    got = query(w.url, w.database, "SELECT count(), sum(input_tokens) FROM usage_events FINAL")
    assert (int(got[0][0]), int(got[0][1])) == (5, 15)
    assert query(w.url, w.database, "SELECT count() FROM dead_letters")[0][0] == 0


def test_apicurio_ids_are_stable_and_evolved_schemas_resolve(schema_registry_url: str) -> None:
    """What a fleet of producers relies on: a second SDK process registering the same
    schemas gets the same ids (no new version per process start); nodemeter's schema
    history passes Apicurio's BACKWARD compatibility rule; and a record an older SDK
    wrote with UsageEvent v1 decodes into today's record."""
    first = RegistryEncoder(schema_registry_url)
    first.prepare()
    again = RegistryEncoder(RegistryClient(schema_registry_url))  # a fresh cache
    again.prepare()
    assert again._headers == first._headers

    subject = f"compat-{uuid.uuid4().hex[:8]}.dev.nodemeter.v1.UsageEvent"
    _put(f"{schema_registry_url}/config/{subject}", {"compatibility": "BACKWARD"})
    client = RegistryClient(schema_registry_url)
    v1 = nodemeter_schemas.load("usage_event", 1)
    id_v1 = client.register(subject, v1)
    id_latest = client.register(subject, nodemeter_schemas.load("usage_event"))
    assert id_latest != id_v1
    broken = copy.deepcopy(nodemeter_schemas.load("usage_event"))
    broken["fields"].append({"name": "region", "type": "string"})  # no default
    with pytest.raises(RegistryError, match="HTTP 409"):  # the rule is enforced
        client.register(subject, broken)
    assert len(_get(f"{schema_registry_url}/subjects/{subject}/versions")) == 2

    ev = usage("acme", "r-old", "s", input_tokens=9)
    body = io.BytesIO()
    old = {k: v for k, v in usage_event_to_avro(ev).items() if k not in ("trace_id", "producer")}
    fastavro.schemaless_writer(body, fastavro.parse_schema(v1), old)
    framed = CONFLUENT_MAGIC + id_v1.to_bytes(4, "big") + body.getvalue()
    assert decode_confluent(framed, RegistryClient(schema_registry_url)) == ev


def test_end_record_framing_matches_what_apicurio_serves(schema_registry_url: str) -> None:
    """The id in the frame names, at Apicurio, exactly the schema the body was written
    with: the registry's copy parses to the SDK's schema."""
    enc = RegistryEncoder(schema_registry_url)
    framed = enc.encode(end("acme", "r1", 1))
    served = _get(f"{schema_registry_url}/schemas/ids/{int.from_bytes(framed[1:5], 'big')}")
    assert json.loads(served["schema"]) == nodemeter_schemas.load("request_end")
