"""The real Apache Kafka broker: round trips and the dev tool's lifecycle."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from worker_harness import consume_all

from nodemeter.codec import decode_record, encode_record, record_key
from nodemeter_stream.devenv import kafka
from nodemeter_stream.smoke import sample_events

pytestmark = pytest.mark.kafka


def test_produce_and_consume_round_trips_exact_records(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}roundtrip"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    events = sample_events(20, tenant="t-roundtrip")
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    for ev in events:
        producer.produce(topic, value=encode_record(ev), key=record_key(ev))
    assert producer.flush(30) == 0

    msgs = consume_all(kafka_bootstrap, topic, expect=len(events))
    got = sorted((decode_record(m.value()) for m in msgs), key=lambda e: e.span_id)
    assert got == sorted(events, key=lambda e: e.span_id)
    # one request's records share a partition (key = tenant/request_id)
    assert len({m.partition() for m in msgs}) == 1
    assert {m.key() for m in msgs} == {b"t-roundtrip/" + events[0].request_id.encode()}


def test_up_twice_is_harmless(local_kafka: Any) -> None:
    if local_kafka is None:
        pytest.skip("the session uses an external broker, not the local dev broker")
    before = kafka.read_pid(local_kafka)
    assert kafka.up(local_kafka) == local_kafka.bootstrap
    assert kafka.read_pid(local_kafka) == before
    st = kafka.status(local_kafka)
    assert st["running"] is True and st["pid"] == before


def test_port_in_use_is_a_clear_error(tmp_path: Any) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        cfg = kafka.KafkaDevConfig(port=port, controller_port=port + 1, home=tmp_path)
        with pytest.raises(kafka.KafkaDevError, match=f"port 127.0.0.1:{port} is in use"):
            kafka.up(cfg)
    assert kafka.read_pid(cfg) is None


def test_probe_says_no_for_a_non_kafka_listener() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        assert kafka.kafka_answers("127.0.0.1", holder.getsockname()[1], timeout=0.3) is False


def test_config_rejects_bad_ports() -> None:
    with pytest.raises(kafka.KafkaDevError):
        kafka.KafkaDevConfig(port=0)
    with pytest.raises(kafka.KafkaDevError):
        kafka.KafkaDevConfig(port=9000, controller_port=9000)


def test_cluster_ids_never_look_like_an_option() -> None:
    # base64url ids start with '-' one time in 64; the storage tool would take that for a flag
    ids = [kafka.cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
