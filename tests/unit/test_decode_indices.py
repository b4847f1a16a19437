"""Negative (and too large) Avro enum and union indices are refused with a precise
reason, on the Python decode path and through the worker's classify; fastavro alone
wraps a negative index around (status -1 decoded as PARTIAL)."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime

import fastavro
import pytest

import nodemeter_schemas
from nodemeter import fastcodec
from nodemeter.avrocheck import compile_check
from nodemeter.codec import (
    HEADER_LEN,
    decode_record,
    encode_record,
    request_end_to_avro,
    schema_entry,
    usage_event_to_avro,
)
from nodemeter.errors import DecodeError
from nodemeter.events import GpuSource, Meters, RequestEnd, Status, UsageEvent
from nodemeter_stream.ingest.decode import DeadLetter, Source, classify

T = datetime(2026, 11, 2, 10, tzinfo=UTC)
EV = UsageEvent(
    event_id="e1",
    tenant="acme",
    request_id="r1",
    node_id="gpu",
    span_id="s1",
    event_time=T,
    model="m",
    meters=Meters(gpu_ms=5, gpu_type="L4", gpu_source=GpuSource.MEASURED, custom={"p": 1}),
    status=Status.ERROR,
    attributes={"a": "b"},
)
END = RequestEnd(
    event_id="end1", tenant="acme", request_id="r1", root_span_id="root", span_count=1,
    event_time=T,
)  # fmt: skip


def offset(record: str, avro: dict[str, object], *path: str) -> int:
    """Byte offset of a field in the single-object encoding (the prefix's length)."""
    raw = nodemeter_schemas.load(record)
    schema, value, total = raw, avro, HEADER_LEN
    for name in path:
        fields = schema["fields"]  # type: ignore[index]
        k = [f["name"] for f in fields].index(name)
        buf = io.BytesIO()
        prefix = {**schema, "fields": fields[:k]}  # type: ignore[dict-item]
        fastavro.schemaless_writer(buf, fastavro.parse_schema(prefix), value)
        total += buf.tell()
        schema, value = fields[k]["type"], value[name]  # type: ignore[index]
    return total


def with_byte(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes([value]) + data[at + 1 :]


# zigzag varints: 0x01 = -1, 0x03 = -2, 0x06 = 3, 0x7f = -64
CASES = [
    ("status -1", "usage_event", ("status",), 0x01, "bad_enum_index", "status: enum index -1"),
    ("status -2", "usage_event", ("status",), 0x03, "bad_enum_index", "status: enum index -2"),
    ("status 3", "usage_event", ("status",), 0x06, "bad_enum_index", "outside 0..2"),
    ("gpu_source -1", "usage_event", ("meters", "gpu_source"), 0x01, "bad_enum_index",
     "meters.gpu_source: enum index -1"),
    ("model union -1", "usage_event", ("model",), 0x01, "bad_union_index",
     "model: union branch -1 is outside 0..1"),
    ("parent union -64", "usage_event", ("parent_span_id",), 0x7F, "bad_union_index",
     "parent_span_id: union branch -64"),
    ("tenant length -1", "usage_event", ("tenant",), 0x01, "bad_length", "tenant: negative length -1"),
    ("end status -1", "request_end", ("status",), 0x01, "bad_enum_index", "status: enum index -1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("record", "path", "byte", "reason", "detail"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_indices_are_dead_letters_with_a_precise_reason(
    record: str, path: tuple[str, ...], byte: int, reason: str, detail: str
) -> None:
    rec, avro = (EV, usage_event_to_avro(EV)) if record == "usage_event" else (
        END, request_end_to_avro(END))  # fmt: skip
    good = encode_record(rec)
    bad = with_byte(good, offset(record, avro, *path), byte)
    with pytest.raises(DecodeError) as err:
        decode_record(bad)
    assert err.value.reason == reason and detail in str(err.value)
    assert fastcodec.decode_valid_usage_event(bad) is None  # the compiled path declines
    out = classify(bad, key=b"acme/r1", source=Source(topic="t", partition=0, offset=7))
    assert isinstance(out, DeadLetter) and out.reason == reason and detail in out.detail


def test_fastavro_alone_would_wrap_a_negative_status() -> None:
    # why the check exists: the same bytes through fastavro decode as PARTIAL
    good = encode_record(EV)
    bad = with_byte(good, offset("usage_event", usage_event_to_avro(EV), "status"), 0x01)
    entry = schema_entry("usage_event")
    value = fastavro.schemaless_reader(io.BytesIO(bad[HEADER_LEN:]), entry.parsed, entry.parsed)
    assert value["status"] == "PARTIAL"


def test_the_check_accepts_every_valid_shape_and_ends_where_the_body_ends() -> None:
    for rec in (EV, END, replace(EV, model=None, attributes={})):
        data = encode_record(rec)
        entry = schema_entry("usage_event" if isinstance(rec, UsageEvent) else "request_end")
        assert entry.check(data, HEADER_LEN) == len(data)
    with pytest.raises(DecodeError, match=r"ends inside") as err:
        schema_entry("usage_event").check(encode_record(EV)[:-3], HEADER_LEN)
    assert err.value.reason == "truncated"


def test_array_blocks_and_huge_counts() -> None:
    check = compile_check(
        fastavro.parse_schema(
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "xs", "type": {"type": "array", "items": "string"}}],
            }
        )
    )
    # a block of 2 with its byte size (count -2 = 0x03, size 4 = 0x08), then the end
    data = bytes([0x03, 0x08, 0x02, 0x61, 0x02, 0x62, 0x00])
    assert check(data, 0) == len(data)
    with pytest.raises(DecodeError) as err:  # 2^60 items in 1 byte: refused, not looped
        check(bytes([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0x00]), 0)
    assert err.value.reason == "truncated"
