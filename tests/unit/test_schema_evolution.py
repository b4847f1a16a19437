"""Schemas: every version parses; usage_event v1 and v2 read each other (fastavro resolution)."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import fastavro
import pytest

import nodemeter_schemas
from nodemeter.codec import (
    decode_payload,
    decode_record,
    encode_payload,
    encode_record,
    schema_entry,
    usage_event_to_avro,
)
from nodemeter.events import Meters, UsageEvent

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
EVENT = UsageEvent(
    event_id="e1",
    tenant="acme",
    request_id="r1",
    node_id="llm",
    span_id="s1",
    event_time=T0,
    meters=Meters(input_tokens=10, output_tokens=2, custom={"pages": 3}),
    attributes={"k": "v"},
    trace_id="0af7651916cd43dd8448eb211c80319c",
    producer="nodemeter-py/0.1.0",
)


def _write(schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


def _read(data: bytes, writer: Any, reader: Any) -> dict[str, Any]:
    out = fastavro.schemaless_reader(
        io.BytesIO(data), fastavro.parse_schema(writer), fastavro.parse_schema(reader)
    )
    assert isinstance(out, dict)
    return out


def test_every_schema_parses_and_new_fields_have_defaults() -> None:
    for record, versions in nodemeter_schemas.available().items():
        for v in versions:
            fastavro.parse_schema(nodemeter_schemas.load(record, v))
        for older, newer in itertools.pairwise(versions):
            old_names = {f["name"] for f in nodemeter_schemas.load(record, older)["fields"]}
            for f in nodemeter_schemas.load(record, newer)["fields"]:
                if f["name"] not in old_names:
                    assert "default" in f, f"{record} v{newer}.{f['name']} needs a default"
    assert {"budget_alert", "budget_state", "dead_letter", "usage_event"} <= set(
        nodemeter_schemas.available()
    )


def test_v1_written_v2_read() -> None:
    v1, v2 = nodemeter_schemas.load("usage_event", 1), nodemeter_schemas.load("usage_event", 2)
    rec = usage_event_to_avro(EVENT)
    del rec["trace_id"], rec["producer"]
    out = _read(_write(v1, rec), v1, v2)
    assert out["trace_id"] is None and out["producer"] == ""  # defaults filled in
    assert out["meters"]["custom"] == {"pages": 3} and out["event_time"] == T0


def test_v2_written_v1_read() -> None:
    v1, v2 = nodemeter_schemas.load("usage_event", 1), nodemeter_schemas.load("usage_event", 2)
    out = _read(_write(v2, usage_event_to_avro(EVENT)), v2, v1)
    assert "trace_id" not in out and out["meters"]["input_tokens"] == 10 and out["tenant"] == "acme"


def test_codec_reads_v1_bytes_and_writes_the_latest() -> None:
    rec = usage_event_to_avro(EVENT)
    del rec["trace_id"], rec["producer"]
    old = encode_payload("usage_event", rec, version=1)
    decoded = decode_record(old)
    assert decoded.trace_id is None and decoded.producer == ""  # type: ignore[union-attr]
    assert decoded.meters == EVENT.meters  # type: ignore[union-attr]
    new = encode_record(EVENT)
    assert new[2:10] == schema_entry("usage_event", 2).fingerprint
    assert decode_record(new) == EVENT


@pytest.mark.parametrize(
    ("record", "payload"),
    [
        (
            "budget_alert",
            {
                "alert_id": "a1",
                "tenant": "acme",
                "budget_id": "monthly",
                "window_start": T0,
                "window_end": T0.replace(month=6),
                "limit_amount": Decimal("1000.000000000000"),
                "spend_amount": Decimal("800.000000000001"),
                "threshold_pct": 80,
                "level": "WARNING",
                "event_time": T0,
            },
        ),
        (
            "budget_state",
            {
                "tenant": "acme",
                "budget_id": "monthly",
                "window_start": T0,
                "window_end": T0.replace(month=6),
                "limit_amount": Decimal("1000"),
                "spend_amount": Decimal("0.000000000001"),
                "updated_at": T0,
            },
        ),
        (
            "dead_letter",
            {
                "source_topic": "nodemeter.usage.v1",
                "source_partition": 3,
                "source_offset": 42,
                "reason": "truncated",
                "payload": b"\xc3\x01\x00",
                "received_at": T0,
            },
        ),
    ],
)
def test_worker_records_round_trip_exactly(record: str, payload: dict[str, Any]) -> None:
    name, out = decode_payload(encode_payload(record, payload))
    assert name == record
    for k, v in payload.items():
        assert out[k] == v, k
    if "spend_amount" in payload:
        assert isinstance(out["spend_amount"], Decimal)  # money stays exact
