"""Schema Registry mode end to end (issue 11, item 7): the SDK's Confluent framing
(magic 0 + schema id) is decoded by the worker with the writer schemas of the registry,
here the registry's HTTP API served on loopback. Before, 100 % of such records became
``bad_magic`` dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_worker_pipeline import worker_for
from worker_harness import encoded, end, produce, query, usage, wait_caught_up

from nodemeter.registry import RegistryEncoder
from nodemeter_stream.ingest.decode import Source, classify
from registry_api import serve

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


@pytest.fixture
def registry_url() -> Iterator[str]:
    with serve() as url:
        yield url


def test_registry_framed_records_are_decoded_and_stored(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, registry_url: str
) -> None:
    enc = RegistryEncoder(registry_url)
    framed = [usage("acme", f"r{i}", "s", input_tokens=i + 1) for i in range(30)]
    plain = [usage("globex", f"g{i}", "s", input_tokens=5) for i in range(5)]
    messages = [(b"acme", enc.encode(ev)) for ev in framed]
    messages.append((b"acme", enc.encode(end("acme", "r0", 1))))
    unknown = b"\x00" + (999).to_bytes(4, "big") + enc.encode(framed[0])[5:]
    messages.append((b"acme", unknown))
    produce(kafka_bootstrap, topics.usage, [*messages, *encoded(plain)])

    w = worker_for(kafka_bootstrap, topics, tmp_path)
    w.env = {"NODEMETER_SCHEMA_REGISTRY_URL": registry_url}
    w.start()
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w, timeout=120)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    got = query(w.url, w.database,
                "SELECT tenant, count(), sum(input_tokens) FROM usage_events FINAL GROUP BY tenant")  # fmt: skip
    assert {r[0]: (int(r[1]), int(r[2])) for r in got} == {
        "acme": (30, sum(range(1, 31))), "globex": (5, 25)
    }  # fmt: skip
    dl = query(w.url, w.database, "SELECT reason, detail FROM dead_letters FINAL")
    assert [r[0] for r in dl] == ["unknown_schema"] and "999" in dl[0][1]
    (rec,) = query(w.url, w.database,
                   "SELECT complete FROM request_records FINAL WHERE request_id = 'r0'")  # fmt: skip
    assert int(rec[0]) == 1  # the framed end record was merged too


def test_without_a_registry_framed_records_are_dead_letters_that_say_why(
    registry_url: str,
) -> None:
    raw = RegistryEncoder(registry_url).encode(usage("acme", "r", "s", input_tokens=1))
    d = classify(raw, key=b"k", source=Source(topic="u", partition=0, offset=0))
    assert d.reason == "registry_not_configured"  # type: ignore[union-attr]
    assert "NODEMETER_SCHEMA_REGISTRY_URL" in d.detail  # type: ignore[union-attr]
