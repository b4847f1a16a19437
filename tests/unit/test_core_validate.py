"""Decode + validate into Accepted / DeadLetter values (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from nodemeter.codec import SINGLE_OBJECT_MAGIC, encode_payload, encode_record, usage_event_to_avro
from nodemeter.events import Meters, UsageEvent, event_id_for
from nodemeter_stream.ingest.decode import Accepted, DeadLetter, Source, classify

SRC = Source(topic="t.nodemeter.usage.v1", partition=2, offset=41)
T = datetime(2026, 11, 1, tzinfo=UTC)


def event(**kw: object) -> UsageEvent:
    base = UsageEvent(
        event_id=event_id_for("acme", "r1", "s1", 0),
        tenant="acme",
        request_id="r1",
        node_id="llm",
        span_id="s1",
        event_time=T,
        meters=Meters(input_tokens=5),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_valid_event_is_accepted_with_its_bytes_and_source() -> None:
    raw = encode_record(event())
    out = classify(raw, key=b"acme/r1", source=SRC)
    assert isinstance(out, Accepted)
    assert out.record.event_id == event().event_id
    assert out.payload == raw and out.source == SRC


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xc3\x01abc", "truncated"),
        (b"", "truncated"),
        (b"\x01\x01" + b"\x00" * 20, "bad_magic"),
        # a first byte 0 is Confluent Schema Registry framing: without a registry the
        # dead letter says so (tests/integration/test_worker_registry.py)
        (b"\x00\x01" + b"\x00" * 20, "registry_not_configured"),
        (SINGLE_OBJECT_MAGIC + b"\xff" * 8 + b"\x00\x00", "unknown_schema"),
    ],
)
def test_undecodable_bytes_become_dead_letters(raw: bytes, reason: str) -> None:
    out = classify(raw, key=b"k", source=SRC)
    assert isinstance(out, DeadLetter)
    assert out.reason == reason
    assert out.source == SRC and out.payload == raw and out.key == b"k"


def test_truncated_body_is_a_dead_letter() -> None:
    raw = encode_record(event())
    out = classify(raw[:-7], key=None, source=SRC)
    assert isinstance(out, DeadLetter) and out.reason == "truncated"


def test_none_value_is_a_dead_letter() -> None:
    out = classify(None, key=b"k", source=SRC)
    assert isinstance(out, DeadLetter) and out.reason == "empty"


def test_oversize_is_rejected_before_decoding() -> None:
    raw = encode_record(event())
    out = classify(raw, key=None, source=SRC, max_bytes=len(raw) - 1)
    assert isinstance(out, DeadLetter) and out.reason == "oversize"


def _payload_with(**meters: int) -> bytes:
    d = usage_event_to_avro(event())
    d["meters"].update(meters)
    return encode_payload("usage_event", d)


@pytest.mark.parametrize(
    ("meters", "reason"),
    [({"input_tokens": -1}, "negative_quantity"), ({"output_tokens": 10**12}, "absurd_quantity")],
)
def test_bad_quantities_are_dead_letters_with_tenant(meters: dict[str, int], reason: str) -> None:
    out = classify(_payload_with(**meters), key=b"acme/r1", source=SRC)
    assert isinstance(out, DeadLetter)
    assert out.reason == reason
    assert out.tenant == "acme" and out.event_id == event().event_id


def test_missing_tenant_is_a_dead_letter() -> None:
    d = usage_event_to_avro(event())
    d["tenant"] = ""
    out = classify(encode_payload("usage_event", d), key=None, source=SRC)
    assert isinstance(out, DeadLetter) and out.reason == "missing_tenant"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sequence": 2**32}, "invalid_sequence"),
        ({"event_time": datetime(1970, 1, 1, tzinfo=UTC)}, "invalid_time"),
        ({"event_time": datetime(2999, 1, 1, tzinfo=UTC)}, "invalid_time"),
    ],
)
def test_values_clickhouse_cannot_store_are_dead_letters(
    change: dict[str, object], reason: str
) -> None:
    # otherwise every retry of the insert would fail and stall the stream
    out = classify(encode_record(event(**change)), key=b"k", source=SRC)
    assert isinstance(out, DeadLetter) and out.reason == reason
