"""Write the wire-format test vectors in this folder from the Python SDK.

    .venv/bin/python schemas/vectors/generate.py          # rewrite the JSON files
    .venv/bin/python schemas/vectors/generate.py --check  # exit 1 if they would change

The committed JSON files are the reference, not this script: the tests
(``tests/unit/test_wire_vectors*.py``) compare the SDK and the worker against the files,
so a change in the SDK's bytes fails them. Re-run this only on purpose (a new schema
version, a new vector), read the diff, and say why in the commit. The format of the
files is described in ``README.md`` beside them; the rules in ``docs/wire.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

import nodemeter_schemas
from nodemeter import fastcodec
from nodemeter.codec import (
    SINGLE_OBJECT_MAGIC,
    decode_record,
    encode_payload,
    encode_record,
    record_key,
    request_end_to_avro,
    schema_entry,
    usage_event_to_avro,
)
from nodemeter.context import branch
from nodemeter.errors import InvalidUsageError
from nodemeter.events import (
    LIMITS,
    MAX_ATTRIBUTE_LEN,
    MAX_ATTRIBUTES,
    MAX_CUSTOM_METERS,
    MAX_EVENT_BYTES,
    MAX_ID_LEN,
    GpuSource,
    Meters,
    Record,
    RequestEnd,
    Status,
    UsageEvent,
    event_id_for,
    request_end_id,
)
from nodemeter.meter import Meter, MeterConfig
from nodemeter_stream.ingest.decode import Source, classify

HERE = Path(__file__).resolve().parent
FORMAT = 1
# The clock both sides use for these vectors: the SDK's host clock and the worker's.
NOW = "2026-12-02T00:00:00.000000Z"
SKEW_S = 300
PARTITION_COUNTS = (1, 4, 12)
T = "2026-12-01T12:34:56.789012Z"  # the usual event time


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def micros(dt: datetime) -> int:
    d = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def ts(text: str) -> dict[str, Any]:
    return {"iso": text, "micros": micros(parse_time(text))}


def jint(n: int) -> int | str:
    """An integer as the files write it: a number up to 2^53 - 1, a string past it."""
    return n if -(2**53 - 1) <= n <= 2**53 - 1 else str(n)


def pairs(m: Mapping[str, Any]) -> list[list[Any]]:
    return [[k, jint(v) if isinstance(v, int) else v] for k, v in m.items()]


# --- typed JSON -> records (the generator's reading of README.md) -----------------------


def value(v: Any) -> Any:
    if isinstance(v, dict) and "$repeat" in v:
        return v["$repeat"] * v["$times"]
    if isinstance(v, dict) and "$type" in v:
        kind, raw = v["$type"], v["$value"]
        if kind == "naive_datetime":
            return datetime.fromisoformat(raw)
        if kind == "float":
            return float(raw)
        return raw  # "string", "int", "bool", "null": the value as written
    return v


def integer(v: Any) -> Any:
    """An integer field: a number, or a string of digits past 2^53 ($type: as written)."""
    if isinstance(v, str):
        return int(v)
    return value(v)


def enum(kind: type[Status] | type[GpuSource], v: Any) -> Any:
    """The member for a known symbol; anything else as written (refused by validation)."""
    v = value(v)
    return kind(v) if isinstance(v, str) and v in kind._value2member_map_ else v


def time_of(v: Any) -> Any:
    if isinstance(v, dict) and "iso" in v:
        return parse_time(v["iso"])
    return value(v)


def mapping(v: Any, conv: Callable[[Any], Any] = value) -> Any:
    if isinstance(v, list):
        return {value(k): conv(x) for k, x in v}
    return value(v)


def build_usage(f: Mapping[str, Any]) -> UsageEvent:
    m = f.get("meters", {})
    meters = Meters(
        **{k: integer(m[k]) for k in LIMITS if k in m and k != "custom"}
        | ({"gpu_type": value(m["gpu_type"])} if "gpu_type" in m else {})
        | ({"gpu_source": enum(GpuSource, m["gpu_source"])} if "gpu_source" in m else {})
        | ({"custom": mapping(m["custom"], integer)} if "custom" in m else {})
    )
    kw: dict[str, Any] = {k: value(f[k]) for k in f if k not in ("meters", "attributes")}
    kw.pop("event_time", None)
    if "status" in f:
        kw["status"] = enum(Status, f["status"])
    if "sequence" in f:
        kw["sequence"] = integer(f["sequence"])
    if "attributes" in f:
        kw["attributes"] = mapping(f["attributes"])
    if "event_id" not in f:
        kw["event_id"] = event_id_for(
            kw["tenant"], kw["request_id"], kw["span_id"], kw.get("sequence", 0)
        )
    return UsageEvent(meters=meters, event_time=time_of(f["event_time"]), **kw)


def build_end(f: Mapping[str, Any]) -> RequestEnd:
    kw: dict[str, Any] = {k: value(f[k]) for k in f if k not in ("attributes", "event_time")}
    if "status" in f:
        kw["status"] = enum(Status, f["status"])
    if "span_count" in f:
        kw["span_count"] = integer(f["span_count"])
    if "attributes" in f:
        kw["attributes"] = mapping(f["attributes"])
    if "event_id" not in f:
        kw["event_id"] = request_end_id(kw["tenant"], kw["request_id"])
    return RequestEnd(event_time=time_of(f["event_time"]), **kw)


def build(record: str, f: Mapping[str, Any]) -> Record:
    return build_usage(f) if record == "usage_event" else build_end(f)


def pack(v: Any) -> Any:
    """Long strings of one repeated unit as {"$repeat": unit, "$times": n}, recursively."""
    if isinstance(v, str) and len(v) > 64:
        for n in range(1, 5):
            unit = v[:n]
            if len(v) % n == 0 and unit * (len(v) // n) == v:
                return {"$repeat": unit, "$times": len(v) // n}
        return v
    if isinstance(v, list):
        return [pack(x) for x in v]
    if isinstance(v, dict) and not ("iso" in v or "$type" in v):
        return {k: pack(x) for k, x in v.items()}
    return v


# Values longer than this are given by length and SHA-256 rather than in hex.
MAX_HEX_BYTES = 4096


# --- records -> typed JSON ----------------------------------------------------------------


def canonical(r: Record) -> dict[str, Any]:
    """Every field, defaults filled in, maps as pairs in wire order, time in UTC."""
    if isinstance(r, UsageEvent):
        d = usage_event_to_avro(r)
        d["meters"] = {
            k: (pairs(v) if k == "custom" else jint(v) if isinstance(v, int) else v)
            for k, v in d["meters"].items()
        }
    else:
        d = request_end_to_avro(r)
    d["event_time"] = ts(iso(r.event_time))
    d["attributes"] = pairs(d["attributes"])
    return d


# --- encoding, with each field's bytes ------------------------------------------------------


def segments(r: Record) -> list[list[str]]:
    """(field path, hex) for each value in the body, in schema order."""
    head = [["magic", SINGLE_OBJECT_MAGIC.hex()]]
    name = "usage_event" if isinstance(r, UsageEvent) else "request_end"
    head.append(["fingerprint", schema_entry(name).fingerprint.hex()])
    d = usage_event_to_avro(r) if isinstance(r, UsageEvent) else request_end_to_avro(r)
    schema = nodemeter_schemas.load(name)
    out = head
    for field in schema["fields"]:
        if field["name"] == "meters":
            for mf in field["type"]["fields"]:
                sub = {"type": "record", "name": "X", "fields": [mf]}
                piece = _one(sub, {mf["name"]: d["meters"][mf["name"]]})
                out.append([f"meters.{mf['name']}", piece])
            continue
        sub = {"type": "record", "name": "X", "fields": [field]}
        out.append([field["name"], _one(sub, {field["name"]: d[field["name"]]})])
    return out


def _one(schema: dict[str, Any], payload: dict[str, Any]) -> str:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), payload)
    return buf.getvalue().hex()


def key_info(key: bytes) -> dict[str, Any]:
    crc = zlib.crc32(key)
    return {
        "utf8": key.decode(),
        "hex": key.hex(),
        "crc32": crc,
        "partition": {str(n): crc % n for n in PARTITION_COUNTS},
    }


def expected(r: Record) -> dict[str, Any]:
    key, val = fastcodec.python_validate_and_encode(r)
    assert val == encode_record(r), "fastcodec and fastavro disagree"
    segs = segments(r)
    assert "".join(h for _, h in segs) == val.hex(), "segments do not add up"
    out: dict[str, Any] = {"event_id": r.event_id, "key": key_info(key)}
    out |= value_repr(val)
    if len(val) <= MAX_HEX_BYTES:
        out["value_fields"] = segs
    out["decoded"] = pack(canonical(r))
    return out


def value_repr(val: bytes) -> dict[str, Any]:
    if len(val) <= MAX_HEX_BYTES:
        return {"value_hex": val.hex(), "value_bytes": len(val)}
    return {"value_sha256": hashlib.sha256(val).hexdigest(), "value_bytes": len(val)}


# --- the vectors ---------------------------------------------------------------------------


def base_usage(**kw: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "tenant": "acme",
        "request_id": "req-1",
        "node_id": "llm.answer",
        "span_id": "span-1",
        "event_time": ts(T),
    }
    f.update(kw)
    return f


def base_end(**kw: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "tenant": "acme",
        "request_id": "req-1",
        "root_span_id": "root-1",
        "span_count": 3,
        "event_time": ts(T),
    }
    f.update(kw)
    return f


EMOJI = "\U0001f680"  # 4 bytes of UTF-8, 2 UTF-16 code units, 1 code point


def usage_vectors() -> list[dict[str, Any]]:
    v: list[tuple[str, str, dict[str, Any] | None]] = [
        ("minimal", "Only the required fields; every other field takes its default.", base_usage()),
        (
            "defaults_explicit",
            "minimal with every optional field given its default: null for the unions, "
            "'' / 0 / OK / true / empty for the rest. Same bytes as minimal.",
            base_usage(
                parent_span_id=None,
                branch_path="",
                workflow="",
                model=None,
                provider=None,
                sequence=0,
                meters={
                    **{
                        k: 0
                        for k in fastcodec.METER_FIELDS
                        if k not in ("gpu_type", "gpu_source", "custom")
                    },
                    "gpu_type": "",
                    "gpu_source": "NONE",
                    "custom": [],
                },
                status="OK",
                billable=True,
                non_billable_reason=None,
                trace_id=None,
                producer="",
                attributes=[],
            ),
        ),
        (
            "empty_strings_not_null",
            "Optional unions given '' (the string branch, index 1) instead of null: "
            "different bytes from minimal.",
            base_usage(
                parent_span_id="", model="", provider="", non_billable_reason="", trace_id=""
            ),
        ),
        (
            "llm_call",
            "A typical LLM node: model, provider, tokens with cache reads and writes, a "
            "parent span, workflow, trace id, producer and attributes.",
            base_usage(
                request_id="7f3c2a9e4b1d4e6f8a0b1c2d3e4f5a6b",
                node_id="llm.summarize",
                span_id="9b2f4c6d8e0a1b3c",
                parent_span_id="3e5f7a9b1c2d4e6f",
                branch_path="1",
                workflow="rag",
                model="gpt-4o",
                provider="openai",
                sequence=1,
                meters={
                    "input_tokens": 1200,
                    "output_tokens": 350,
                    "cached_input_tokens": 800,
                    "cache_write_tokens": 64,
                    "api_calls": 1,
                },
                trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
                producer="nodemeter-py/0.1.0",
                attributes=[["region", "eu-west-1"], ["customer_tier", "gold"]],
            ),
        ),
        (
            "attributes_reordered",
            "llm_call's attributes in the other order: other bytes (a map is written in "
            "the order given), the same decoded map and the same event id.",
            None,  # filled below
        ),
        (
            "gpu_measured",
            "GPU milliseconds measured on a device, with its type.",
            base_usage(
                node_id="ocr",
                meters={"gpu_ms": 840, "gpu_type": "NVIDIA L4", "gpu_source": "MEASURED"},
            ),
        ),
        (
            "gpu_estimated",
            "GPU milliseconds estimated (no device timing).",
            base_usage(
                node_id="embed",
                meters={"gpu_ms": 1, "gpu_type": "", "gpu_source": "ESTIMATED", "cpu_ms": 3},
            ),
        ),
        (
            "gpu_source_without_gpu_ms",
            "A gpu_source with gpu_ms 0 is accepted (only gpu_ms > 0 needs a source).",
            base_usage(meters={"gpu_source": "MEASURED", "gpu_type": "H100"}),
        ),
        (
            "custom_units",
            "Custom meters (names [a-z][a-z0-9_.]{0,63}), in the order given.",
            base_usage(
                node_id="retrieve",
                meters={
                    "api_calls": 2,
                    "cpu_ms": 12,
                    "custom": [["documents", 8], ["pages.scanned", 120], ["a", 0]],
                },
            ),
        ),
        (
            "non_billable_with_reason",
            "Warm-up work: billable false with its reason.",
            base_usage(
                node_id="load",
                billable=False,
                non_billable_reason="cold_start",
                meters={"gpu_ms": 12000, "gpu_type": "A10G", "gpu_source": "MEASURED"},
            ),
        ),
        (
            "non_billable_without_reason",
            "billable false, no reason (null): valid on the wire; the Python SDK's "
            "node(billable=False) fills in 'non_billable'.",
            base_usage(billable=False),
        ),
        (
            "status_error",
            "A span that raised: status ERROR, usage still sent.",
            base_usage(status="ERROR", meters={"input_tokens": 10}),
        ),
        (
            "status_partial",
            "status PARTIAL (enum index 2).",
            base_usage(status="PARTIAL", meters={"output_tokens": 1}),
        ),
        (
            "unicode_names",
            "Non-ASCII node, request, workflow, model and attributes (UTF-8 on the wire; "
            "the tenant is ASCII by rule).",
            base_usage(
                tenant="tenant_1.eu:prod@x-y",
                request_id="demande-n°42",
                node_id="résumé.摘要",
                workflow="ワークフロー",
                model="模型-1",
                attributes=[["città", f"Zürich {EMOJI}"], ["", ""]],
            ),
        ),
        (
            "lengths_in_code_points",
            "node_id of 256 code points (the limit counts code points, not bytes or UTF-16 "
            "units): 1024 bytes of UTF-8, 512 UTF-16 units.",
            base_usage(node_id=EMOJI * MAX_ID_LEN),
        ),
        (
            "max_ids",
            "Every id at its limit: tenant 128 chars, other ids 256.",
            base_usage(
                event_id="e" * MAX_ID_LEN,
                tenant="T" + "t" * 127,
                request_id="r" * MAX_ID_LEN,
                node_id="n" * MAX_ID_LEN,
                span_id="s" * MAX_ID_LEN,
                parent_span_id="p" * MAX_ID_LEN,
                branch_path="1" * MAX_ID_LEN,
                workflow="w" * MAX_ID_LEN,
                model="m" * MAX_ID_LEN,
                provider="v" * MAX_ID_LEN,
                trace_id="t" * MAX_ID_LEN,
                producer="x" * MAX_ID_LEN,
                meters={"gpu_type": "g" * MAX_ID_LEN},
            ),
        ),
        (
            "max_meters",
            "Every meter at its per-record limit, 32 custom meters at the custom limit.",
            base_usage(
                meters={
                    **{k: LIMITS[k] for k in LIMITS if k != "custom"},
                    "gpu_source": "MEASURED",
                    "custom": [
                        [f"c{i:02d}" + "x" * 61, LIMITS["custom"]] for i in range(MAX_CUSTOM_METERS)
                    ],
                }
            ),
        ),
        (
            "zero_meters",
            "No usage at all: every meter 0 (valid; the SDK skips empty records, the wire does not).",
            base_usage(meters={k: 0 for k in LIMITS if k != "custom"}),
        ),
        (
            "max_attributes",
            "64 attributes of 900 chars each: 58,000 bytes, under MAX_EVENT_BYTES (64 "
            "attributes of 2048 chars would pass it: see invalid_records encoded_too_large).",
            base_usage(attributes=[[f"k{i:02d}", "v" * 900] for i in range(MAX_ATTRIBUTES)]),
        ),
        (
            "max_attribute_value",
            "One attribute value of 2048 chars.",
            base_usage(attributes=[["k" * MAX_ID_LEN, "v" * MAX_ATTRIBUTE_LEN]]),
        ),
        (
            "max_sequence",
            "sequence 2^31 - 1, the largest Avro int.",
            base_usage(sequence=2**31 - 1),
        ),
        (
            "branch_paths",
            "A nested branch path (branch 2 of branch 1) and an explicitly named one inside.",
            base_usage(branch_path="1.2.en", parent_span_id="parent-1", sequence=3),
        ),
        (
            "explicit_event_id",
            "An event id given rather than derived (the wire takes any id of 1-256 chars).",
            base_usage(event_id="my-own-id-0001"),
        ),
        (
            "time_with_offset",
            "event_time written with a +05:30 offset: the same instant as T in UTC.",
            base_usage(
                event_time={
                    "iso": "2026-12-01T18:04:56.789012+05:30",
                    "micros": micros(parse_time(T)),
                }
            ),
        ),
        (
            "time_whole_second",
            "event_time on a whole second (micros 0).",
            base_usage(event_time=ts("2026-12-01T00:00:00.000000Z")),
        ),
        (
            "time_earliest",
            "event_time 2000-01-01T00:00:00Z, the earliest the worker stores.",
            base_usage(event_time=ts("2000-01-01T00:00:00.000000Z")),
        ),
        (
            "time_at_skew_limit",
            "event_time exactly max_future_skew_s (300 s) after the clock: still accepted.",
            base_usage(event_time=ts("2026-12-02T00:05:00.000000Z")),
        ),
    ]
    out: list[dict[str, Any]] = []
    by_name: dict[str, dict[str, Any]] = {}
    for name, doc, fields in v:
        if name == "attributes_reordered":
            fields = dict(by_name["llm_call"])
            fields["attributes"] = list(reversed(fields["attributes"]))
        assert fields is not None
        by_name[name] = fields
        record = build_usage(fields)
        out.append(
            {"name": name, "description": doc, "fields": pack(fields), "expected": expected(record)}
        )
    minimal = out[0]["expected"]["value_hex"]
    assert out[1]["expected"]["value_hex"] == minimal
    assert out[2]["expected"]["value_hex"] != minimal
    for vec in out:
        assert vec["expected"]["value_bytes"] <= MAX_EVENT_BYTES, vec["name"]
    return out


def end_vectors() -> list[dict[str, Any]]:
    v: list[tuple[str, str, dict[str, Any]]] = [
        ("minimal", "Only the required fields.", base_end()),
        (
            "typical",
            "A request end with workflow, status and the request's attributes.",
            base_end(
                request_id="7f3c2a9e4b1d4e6f8a0b1c2d3e4f5a6b",
                workflow="rag",
                root_span_id="3e5f7a9b1c2d4e6f",
                span_count=7,
                status="OK",
                attributes=[["region", "eu-west-1"]],
            ),
        ),
        ("zero_spans", "A request that emitted no usage event.", base_end(span_count=0)),
        (
            "max_span_count",
            "span_count 1,000,000, the largest accepted.",
            base_end(span_count=1_000_000),
        ),
        ("failed", "The root raised: status ERROR.", base_end(status="ERROR")),
        ("partial", "status PARTIAL.", base_end(status="PARTIAL")),
        (
            "unicode",
            "Non-ASCII request id and workflow.",
            base_end(tenant="globex", request_id="заказ-7", workflow=f"flux {EMOJI}"),
        ),
    ]
    return [
        {"name": n, "description": d, "fields": pack(f), "expected": expected(build_end(f))}
        for n, d, f in v
    ]


# --- invalid records: SDK error and dead-letter reason -------------------------------------


def _sdk_outcome(r: Record) -> dict[str, Any]:
    """What the SDK's emit does with the record (pure path): error class and reason."""
    with tempfile.TemporaryDirectory() as tmp:
        meter = _meter(Path(tmp))
        try:
            meter.emit(r)
        except InvalidUsageError as exc:
            return {"error": type(exc).__name__, "reason": exc.reason}
        finally:
            meter.close(timeout=1)
    return {"accepts": True}


def _wire(r: Record) -> str:
    """The record's bytes written without validation (what a buggy producer sends)."""
    return fastcodec.encode(r).hex()


@dataclass(frozen=True)
class Bad:
    """An invalid record: its fields, and whether a producer could write it in Avro."""

    name: str
    description: str
    fields: dict[str, Any]
    record: str = "usage_event"
    on_wire: bool = True
    note: str = ""


def invalid_vectors() -> list[dict[str, Any]]:
    E = "request_end"
    big = 2**63 - 1
    cases = [
        Bad("missing_tenant", "tenant ''.", base_usage(tenant="")),
        Bad("invalid_tenant_unicode", "A non-ASCII tenant.", base_usage(tenant="açme")),
        Bad(
            "invalid_tenant_newline",
            "'acme\\n': the whole string must match.",
            base_usage(tenant="acme\n"),
        ),
        Bad("invalid_tenant_first_char", "A tenant starting with '-'.", base_usage(tenant="-acme")),
        Bad("tenant_too_long", "A tenant of 129 chars.", base_usage(tenant="T" * 129)),
        Bad("missing_request_id", "request_id ''.", base_usage(request_id="")),
        Bad("missing_node_id", "node_id ''.", base_usage(node_id="")),
        Bad("missing_span_id", "span_id ''.", base_usage(span_id="")),
        Bad("missing_event_id", "event_id ''.", base_usage(event_id="")),
        Bad("node_id_too_long", "257 code points.", base_usage(node_id=EMOJI * (MAX_ID_LEN + 1))),
        Bad("request_id_too_long", "257 chars.", base_usage(request_id="r" * (MAX_ID_LEN + 1))),
        Bad("model_too_long", "257 chars.", base_usage(model="m" * (MAX_ID_LEN + 1))),
        Bad("branch_path_too_long", "257 chars.", base_usage(branch_path="1" * (MAX_ID_LEN + 1))),
        Bad(
            "gpu_type_too_long",
            "257 chars.",
            base_usage(meters={"gpu_type": "g" * (MAX_ID_LEN + 1)}),
        ),
        Bad("negative_quantity", "input_tokens -1.", base_usage(meters={"input_tokens": -1})),
        Bad(
            "negative_custom",
            "A custom meter of -5.",
            base_usage(meters={"custom": [["pages", -5]]}),
        ),
        Bad(
            "absurd_input_tokens",
            "One over the input_tokens limit.",
            base_usage(meters={"input_tokens": LIMITS["input_tokens"] + 1}),
        ),
        Bad(
            "absurd_gpu_ms",
            "One over the gpu_ms limit.",
            base_usage(meters={"gpu_ms": LIMITS["gpu_ms"] + 1, "gpu_source": "MEASURED"}),
        ),
        Bad(
            "absurd_custom",
            "One over the custom limit.",
            base_usage(meters={"custom": [["pages", LIMITS["custom"] + 1]]}),
        ),
        Bad(
            "absurd_long_max",
            "cpu_ms 2^63 - 1 (a string in JSON).",
            base_usage(meters={"cpu_ms": jint(big)}),
        ),
        Bad(
            "absurd_past_long",
            "api_calls 2^64: not an Avro long at all.",
            base_usage(meters={"api_calls": jint(2**64)}),
            on_wire=False,
        ),
        Bad(
            "invalid_custom_name_upper",
            "A custom meter name with a capital.",
            base_usage(meters={"custom": [["Pages", 1]]}),
        ),
        Bad(
            "invalid_custom_name_long",
            "A custom meter name of 65 chars.",
            base_usage(meters={"custom": [["p" * 65, 1]]}),
        ),
        Bad(
            "invalid_custom_name_colon",
            "A custom meter name with ':'.",
            base_usage(meters={"custom": [["a:b", 1]]}),
        ),
        Bad(
            "too_many_custom",
            "33 custom meters.",
            base_usage(meters={"custom": [[f"c{i}", 1] for i in range(MAX_CUSTOM_METERS + 1)]}),
        ),
        Bad(
            "gpu_ms_without_source",
            "gpu_ms > 0 with gpu_source NONE.",
            base_usage(meters={"gpu_ms": 10}),
        ),
        Bad(
            "too_many_attributes",
            "65 attributes.",
            base_usage(attributes=[[f"k{i}", "v"] for i in range(MAX_ATTRIBUTES + 1)]),
        ),
        Bad(
            "attribute_key_too_long",
            "An attribute key of 257 chars.",
            base_usage(attributes=[["k" * (MAX_ID_LEN + 1), "v"]]),
        ),
        Bad(
            "attribute_value_too_long",
            "An attribute value of 2049 chars.",
            base_usage(attributes=[["k", "v" * (MAX_ATTRIBUTE_LEN + 1)]]),
        ),
        Bad("negative_sequence", "sequence -1.", base_usage(sequence=-1)),
        Bad(
            "encoded_too_large",
            "Each field within its limit, but 64 attributes of 2048 chars: 148,000 bytes encoded, over MAX_EVENT_BYTES (65,536).",
            base_usage(
                attributes=[[f"k{i}", "v" * MAX_ATTRIBUTE_LEN] for i in range(MAX_ATTRIBUTES)]
            ),
        ),
        Bad(
            "future_event_time",
            "301 s after the clock (max_future_skew_s 300).",
            base_usage(event_time=ts("2026-12-02T00:05:01.000000Z")),
        ),
        Bad(
            "time_before_2000",
            "1999-12-31T23:59:59.999999Z: out of the stored range (2000 to 2200).",
            base_usage(event_time=ts("1999-12-31T23:59:59.999999Z")),
            note="The Python SDK accepts it today and the worker dead-letters it: producers should refuse it (docs/wire.md, 'Known differences').",
        ),
        Bad(
            "time_2200",
            "2200-01-01T00:00:00Z: the first instant the worker does not store.",
            base_usage(event_time=ts("2200-01-01T00:00:00.000000Z")),
            note="Also a future_event_time for the SDK (its clock is 2026); the worker checks the stored range first.",
        ),
        Bad(
            "sequence_past_uint32",
            "sequence 2^32: beyond the UInt32 column (and the Avro int).",
            base_usage(sequence=2**32),
            note="The Python SDK accepts it today (and writes a long varint for an Avro int); the worker dead-letters it: producers should refuse sequence > 2^31 - 1.",
        ),
        Bad(
            "billable_not_bool",
            "billable 'no' (a string).",
            base_usage(billable={"$type": "string", "$value": "no"}),
            on_wire=False,
        ),
        Bad(
            "quantity_float",
            "input_tokens 1.5.",
            base_usage(meters={"input_tokens": {"$type": "float", "$value": 1.5}}),
            on_wire=False,
        ),
        Bad(
            "quantity_bool",
            "output_tokens true.",
            base_usage(meters={"output_tokens": {"$type": "bool", "$value": True}}),
            on_wire=False,
        ),
        Bad(
            "quantity_string",
            "input_tokens '12' (a string, not an integer).",
            base_usage(meters={"input_tokens": {"$type": "string", "$value": "12"}}),
            on_wire=False,
        ),
        Bad("status_unknown", "status 'DONE'.", base_usage(status="DONE"), on_wire=False),
        Bad(
            "gpu_source_unknown",
            "gpu_source 'GUESSED'.",
            base_usage(meters={"gpu_ms": 1, "gpu_source": "GUESSED"}),
            on_wire=False,
        ),
        Bad(
            "naive_event_time",
            "An event time without a UTC offset.",
            base_usage(
                event_time={"$type": "naive_datetime", "$value": "2026-12-01T12:34:56.789012"}
            ),
            on_wire=False,
        ),
        Bad(
            "sequence_string",
            "sequence '1' (a string).",
            base_usage(sequence={"$type": "string", "$value": "1"}),
            on_wire=False,
        ),
        Bad("end_missing_root_span", "root_span_id ''.", base_end(root_span_id=""), record=E),
        Bad("end_invalid_tenant", "tenant 'a b'.", base_end(tenant="a b"), record=E),
        Bad("end_negative_span_count", "span_count -1.", base_end(span_count=-1), record=E),
        Bad(
            "end_absurd_span_count", "span_count 1,000,001.", base_end(span_count=1000001), record=E
        ),
        Bad(
            "end_span_count_string",
            "span_count '3' (a string).",
            base_end(span_count={"$type": "string", "$value": "3"}),
            record=E,
            on_wire=False,
        ),
        Bad(
            "end_too_many_attributes",
            "65 attributes.",
            base_end(attributes=[[f"k{i}", "v"] for i in range(MAX_ATTRIBUTES + 1)]),
            record=E,
        ),
        Bad(
            "end_status_unknown", "status 'done'.", base_end(status="done"), record=E, on_wire=False
        ),
    ]
    out = []
    not_after = parse_time(NOW) + timedelta(seconds=SKEW_S)
    for case in cases:
        name, rec, doc, fields, on_wire, note = (
            case.name,
            case.record,
            case.description,
            case.fields,
            case.on_wire,
            case.note,
        )
        r = build(rec, fields)
        vec: dict[str, Any] = {"name": name, "record": rec, "description": doc}
        vec["fields"] = pack(fields)
        vec["sdk"] = _sdk_outcome(r)
        if on_wire:
            hexed = _wire(r)
            assert hexed == encode_record(r).hex(), name
            d = classify(
                bytes.fromhex(hexed),
                key=record_key(r),
                source=Source(topic="t", partition=0, offset=0),
                not_after=not_after,
            )
            reason = getattr(d, "reason", None)
            assert reason is not None, f"{name}: the worker accepts it"
            vec["wire"] = {
                "key_hex": record_key(r).hex(),
                **value_repr(bytes.fromhex(hexed)),
                "dead_letter": reason,
            }
        else:
            vec["wire"] = None
        if note:
            vec["note"] = note
        if "accepts" not in vec["sdk"] and vec["wire"] is not None:
            assert vec["sdk"]["reason"] == vec["wire"]["dead_letter"] or name == "time_2200", name
        out.append(vec)
    return out


# --- bytes the worker must refuse (no record behind them) ------------------------------------


def _minimal_body() -> bytes:
    return fastcodec.encode(build_usage(base_usage()))


def _patch(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, old
    return data.replace(old, new)


def bytes_vectors() -> list[dict[str, Any]]:
    good = _minimal_body()
    head = good[:10]
    end_good = fastcodec.encode(build_end(base_end()))
    # status OK (00) billable (01) reason null (00): the bytes before event_time
    status_at = good.index(b"\x00\x01\x00" + _varint(micros(parse_time(T))))
    v1 = encode_payload("usage_event", _v1_payload(), version=1)
    cases: list[tuple[str, str, bytes | None]] = [
        ("empty", "A record with no value (null).", None),
        ("zero_bytes", "A value of 0 bytes.", b""),
        ("short_header", "9 bytes: shorter than magic + fingerprint.", good[:9]),
        ("bad_magic", "First byte not C3.", b"\xc4" + good[1:]),
        ("bad_magic_second", "C3 02.", b"\xc3\x02" + good[2:]),
        (
            "unknown_fingerprint",
            "A fingerprint no schema has.",
            b"\xc3\x01" + b"\x00" * 8 + good[10:],
        ),
        (
            "not_a_usage_record",
            "A valid dead_letter record (another nodemeter schema).",
            _dead_letter(),
        ),
        ("truncated_body", "The minimal event less its last byte.", good[:-1]),
        ("header_only", "Magic and fingerprint, no body.", head),
        ("trailing_bytes", "The minimal event plus one byte.", good + b"\x00"),
        (
            "bad_enum_index",
            "status index -1 (zigzag 01).",
            good[:status_at] + b"\x01" + good[status_at + 1 :],
        ),
        (
            "enum_index_past_end",
            "status index 3 (of 3 symbols).",
            good[:status_at] + b"\x06" + good[status_at + 1 :],
        ),
        (
            "bad_union_index",
            "parent_span_id's union index 2 (of 2).",
            _patch(good, b"\x0cspan-1\x00", b"\x0cspan-1\x04"),
        ),
        (
            "negative_union_index",
            "parent_span_id's union index -1.",
            _patch(good, b"\x0cspan-1\x00", b"\x0cspan-1\x01"),
        ),
        ("bad_length", "tenant length -1.", _patch(good, b"\x08acme", b"\x01acme")),
        (
            "length_past_end",
            "tenant length 100 in a shorter body.",
            _patch(good, b"\x08acme", b"\xc8\x01acme"),
        ),
        (
            "invalid_utf8",
            "tenant bytes FF FF FF FF (not UTF-8).",
            _patch(good, b"\x08acme", b"\x08\xff\xff\xff\xff"),
        ),
        (
            "varint_too_long",
            "sequence as an 11-byte varint.",
            _patch(
                good,
                b"\x0cspan-1\x00\x00\x00\x00\x00\x00",
                b"\x0cspan-1\x00\x00\x00\x00\x00" + b"\x80" * 10 + b"\x00",
            ),
        ),
        (
            "oversize",
            "65,537 bytes (over MAX_EVENT_BYTES), whatever they are.",
            b"\xc3\x01" + b"\x00" * (MAX_EVENT_BYTES - 1),
        ),
        (
            "confluent_framing",
            "00 + schema id 1 + body: Schema Registry framing, and the worker has no registry.",
            b"\x00\x00\x00\x00\x01" + good[10:],
        ),
        ("request_end_truncated", "A request end less its last byte.", end_good[:-1]),
    ]
    not_after = parse_time(NOW) + timedelta(seconds=SKEW_S)
    out = []
    for name, doc, data in cases:
        d = classify(
            data,
            key=b"acme/req-1",
            source=Source(topic="t", partition=0, offset=0),
            not_after=not_after,
        )
        reason = getattr(d, "reason", None)
        assert reason is not None, f"{name}: the worker accepts it"
        vec: dict[str, Any] = {"name": name, "description": doc}
        vec |= {"value_hex": None} if data is None else value_repr(data)
        out.append(vec | {"dead_letter": reason})
    # and one that is accepted: an older schema version
    accepted = [
        (
            "usage_event_v1",
            "The minimal event written with schema v1 (no trace_id, no producer): read as v2 with the defaults.",
            v1,
        ),
    ]
    for name, doc, data in accepted:
        d = classify(
            data,
            key=b"acme/req-1",
            source=Source(topic="t", partition=0, offset=0),
            not_after=not_after,
        )
        rec = getattr(d, "record", None)
        assert rec is not None, name
        out.append(
            {
                "name": name,
                "description": doc,
                "value_hex": data.hex(),
                "dead_letter": None,
                "decoded": canonical(rec),
            }
        )
    return out


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _v1_payload() -> dict[str, Any]:
    d = usage_event_to_avro(build_usage(base_usage()))
    d.pop("trace_id")
    d.pop("producer")
    return d


def _dead_letter() -> bytes:
    return encode_payload(
        "dead_letter",
        {
            "source_topic": "t",
            "source_partition": 0,
            "source_offset": 0,
            "reason": "x",
            "payload": b"",
            "received_at": parse_time(T),
        },
    )


# --- ids and requests ----------------------------------------------------------------------


def _h(parts: list[str], n: int) -> dict[str, Any]:
    raw = "\x1f".join(parts).encode()
    return {
        "hash_input_hex": raw.hex(),
        "sha256_hex": hashlib.sha256(raw).hexdigest(),
        "id": hashlib.sha256(raw).hexdigest()[:n],
    }


def id_vectors() -> dict[str, Any]:
    events = []
    for tenant, req, span, seq in [
        ("acme", "req-1", "span-1", 0),
        ("acme", "req-1", "span-1", 1),
        ("globex", "req-1", "span-1", 0),
        ("tenant_1.eu:prod@x-y", "demande-n°42", "résumé", 12),
        ("acme", "r", "s", 2**31 - 1),
    ]:
        h = _h([tenant, req, span, str(seq)], 32)
        assert h["id"] == event_id_for(tenant, req, span, seq)
        events.append({"tenant": tenant, "request_id": req, "span_id": span, "sequence": seq, **h})
    ends = []
    for tenant, req in [("acme", "req-1"), ("globex", "заказ-7")]:
        h = _h([tenant, req, "__end__", "0"], 32)
        assert h["id"] == request_end_id(tenant, req)
        ends.append({"tenant": tenant, "request_id": req, **h})
    roots = []
    for req in ["req-1", "7f3c2a9e4b1d4e6f8a0b1c2d3e4f5a6b", "demande-n°42"]:
        roots.append({"request_id": req, **_h([req, "__root__"], 16)})
    children = []
    for req, parent, path, node, n in [
        ("req-1", "a1b2c3d4e5f60718", "", "retrieve", 0),
        ("req-1", "a1b2c3d4e5f60718", "", "retrieve", 1),
        ("req-1", "a1b2c3d4e5f60718", "1", "llm.summarize", 0),
        ("req-1", "a1b2c3d4e5f60718", "1.2.en", "résumé.摘要", 0),
    ]:
        children.append(
            {
                "request_id": req,
                "parent_span_id": parent,
                "branch_path": path,
                "node_id": node,
                "occurrence": n,
                **_h([req, parent, path, node, str(n)], 16),
            }
        )
    return {
        "event_id": events,
        "request_end_id": ends,
        "root_span_id": roots,
        "child_span_id": children,
    }


def scenarios() -> list[dict[str, Any]]:
    """Requests run through the SDK's context API; their records as emitted."""
    return [
        {
            "name": "sequential",
            "description": "Nodes one after another under the root, one node twice, a nested node, "
            "records on the root itself, and a node that records nothing (no event, but it "
            "takes an occurrence).",
            "tenant": "acme",
            "request_id": "req-seq",
            "workflow": "rag",
            "root": {
                "node_id": "request",
                "records": 1,
                "children": [
                    {"node": "retrieve", "records": 2},
                    {"node": "retrieve", "records": 1},
                    {"node": "idle", "records": 0},
                    {"node": "idle", "records": 1},
                    {
                        "node": "answer",
                        "records": 1,
                        "children": [{"node": "tool.search", "records": 1}],
                    },
                ],
            },
        },
        {
            "name": "parallel",
            "description": "Two fan-outs under the root (branches 1, 2, then 3, 4: numbering goes "
            "on per parent span), a fan-out inside a branch (1.1, 1.2), the fan-in back on the "
            "root's path, and a named branch.",
            "tenant": "acme",
            "request_id": "req-par",
            "workflow": "map-reduce",
            "root": {
                "node_id": "request",
                "records": 0,
                "children": [
                    {"node": "split", "records": 1},
                    {
                        "parallel": [
                            {
                                "node": "summarize",
                                "records": 1,
                                "children": [
                                    {
                                        "parallel": [
                                            {"node": "chunk", "records": 1},
                                            {"node": "chunk", "records": 1},
                                        ]
                                    }
                                ],
                            },
                            {"node": "summarize", "records": 2},
                        ]
                    },
                    {"node": "merge", "records": 1},
                    {
                        "parallel": [
                            {"node": "review", "records": 1},
                            {"node": "review", "records": 1},
                        ]
                    },
                    {
                        "branch": "en",
                        "children": [
                            {"node": "translate", "records": 1},
                            {"node": "translate", "records": 1},
                        ],
                    },
                ],
            },
        },
        {
            "name": "failure",
            "description": "A node that raises (its usage is sent with status ERROR); the caller "
            "catches it and the request ends OK.",
            "tenant": "globex",
            "request_id": "req-fail",
            "workflow": "",
            "root": {
                "node_id": "request",
                "records": 0,
                "children": [
                    {"node": "llm.call", "records": 1, "raises": True},
                    {"node": "llm.call", "records": 1},
                ],
            },
        },
    ]


class _Collect:
    """A producer that keeps what it is given (the SDK's producer_factory interface)."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None, on_delivery: Any) -> None:
        self.sent.append((key or b"", value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0

    def purge(self, *args: Any, **kwargs: Any) -> None:
        pass

    def list_topics(self, topic: str | None = None, timeout: float = 1.0) -> Any:
        return type("Md", (), {"brokers": {1: "b"}})()


def _meter(spool: Path, *, native: bool = False) -> Meter:
    clock_at = parse_time(NOW)
    made: list[_Collect] = []

    def factory(conf: dict[str, Any]) -> _Collect:
        made.append(_Collect(conf))
        return made[-1]

    cfg = MeterConfig(
        bootstrap_servers="fake:9092",
        topic="t",
        spool_dir=spool,
        producer_name="nodemeter-vectors/1",
    )
    meter = Meter(
        cfg, producer_factory=factory, clock=lambda: clock_at, native=native, background=False
    )  # type: ignore[arg-type]
    meter.sent = made  # type: ignore[attr-defined]
    return meter


class _Boom(Exception):
    pass


async def _run_node(meter: Meter, spec: Mapping[str, Any]) -> None:
    if "parallel" in spec:
        await asyncio.gather(*(_run_node(meter, s) for s in spec["parallel"]))
        return
    if "branch" in spec:
        with branch(spec["branch"]):
            for child in spec.get("children", []):
                await _run_node(meter, child)
        return
    try:
        with meter.node(spec["node"]) as span:
            for i in range(spec.get("records", 0)):
                span.record(api_calls=i + 1)
            for child in spec.get("children", []):
                await _run_node(meter, child)
            if spec.get("raises"):
                raise _Boom
    except _Boom:
        pass


async def _run_request(meter: Meter, sc: Mapping[str, Any]) -> None:
    root = sc["root"]
    with meter.request(
        tenant=sc["tenant"],
        request_id=sc["request_id"],
        workflow=sc["workflow"],
        node_id=root["node_id"],
    ) as span:
        for i in range(root.get("records", 0)):
            span.record(api_calls=i + 1)
        for child in root.get("children", []):
            await _run_node(meter, child)


def run_scenario(sc: Mapping[str, Any], spool: Path, *, native: bool = False) -> list[Record]:
    """The records the SDK emits for a scenario, in emission order."""
    meter = _meter(spool, native=native)
    try:
        asyncio.run(_run_request(meter, sc))
    finally:
        meter.close(timeout=1)
    return [decode_record(v) for p in meter.sent for _, v in p.sent]  # type: ignore[attr-defined]


def request_vectors() -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, sc in enumerate(scenarios()):
            records = run_scenario(sc, Path(tmp) / str(i))
            events, end = records[:-1], records[-1]
            assert isinstance(end, RequestEnd) and all(isinstance(e, UsageEvent) for e in events)
            out.append(
                {
                    **sc,
                    "expected": {
                        "usage_events": [
                            {
                                "node_id": e.node_id,
                                "span_id": e.span_id,
                                "parent_span_id": e.parent_span_id,
                                "branch_path": e.branch_path,
                                "sequence": e.sequence,
                                "status": e.status.value,
                                "event_id": e.event_id,
                            }
                            for e in events
                            if isinstance(e, UsageEvent)
                        ],
                        "request_end": {
                            "root_span_id": end.root_span_id,
                            "span_count": end.span_count,
                            "status": end.status.value,
                            "event_id": end.event_id,
                        },
                    },
                }
            )
    return out


# --- files ---------------------------------------------------------------------------------


def schemas_section() -> dict[str, Any]:
    out = {}
    for name, versions in nodemeter_schemas.available().items():
        if name not in ("usage_event", "request_end"):
            continue
        for version in versions:
            e = schema_entry(name, version)
            out[f"{name}.v{version}"] = {
                "canonical_form": to_parsing_canonical_form(e.parsed),
                "fingerprint_hex": e.fingerprint.hex(),
                "header_hex": (SINGLE_OBJECT_MAGIC + e.fingerprint).hex(),
            }
    return out


def files() -> Iterator[tuple[str, dict[str, Any]]]:
    common = {
        "format": FORMAT,
        "generated_by": "schemas/vectors/generate.py",
        "readme": "schemas/vectors/README.md",
    }
    clock = {"now": ts(NOW), "max_future_skew_s": SKEW_S}
    yield "schemas.json", {**common, "schemas": schemas_section()}
    yield (
        "usage_event.json",
        {**common, "record": "usage_event", "clock": clock, "vectors": usage_vectors()},
    )
    yield (
        "request_end.json",
        {**common, "record": "request_end", "clock": clock, "vectors": end_vectors()},
    )
    yield "invalid_records.json", {**common, "clock": clock, "vectors": invalid_vectors()}
    yield "invalid_bytes.json", {**common, "clock": clock, "vectors": bytes_vectors()}
    yield "ids.json", {**common, **id_vectors()}
    yield (
        "requests.json",
        {**common, "clock": clock, "producer": "nodemeter-vectors/1", "vectors": request_vectors()},
    )


def render(doc: Mapping[str, Any]) -> str:
    """JSON with one member per line, and arrays of scalars (pairs, hex fields) inline."""
    return _render(doc, 0) + "\n"


def _render(v: Any, depth: int) -> str:
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(v, dict) and v and not _flat(v):
        body = ",\n".join(f"{inner}{json.dumps(k)}: {_render(x, depth + 1)}" for k, x in v.items())
        return "{\n" + body + "\n" + pad + "}"
    if isinstance(v, list) and v and not _flat(v):
        return "[\n" + ",\n".join(inner + _render(x, depth + 1) for x in v) + "\n" + pad + "]"
    return json.dumps(v, ensure_ascii=False)


def _flat(v: Any) -> bool:
    """Small enough for one line: scalars, or a pair/{$repeat}/time of scalars."""
    items = list(v.values()) if isinstance(v, dict) else v
    if not all(
        not isinstance(x, dict | list) or (isinstance(x, dict) and "$repeat" in x) for x in items
    ):
        return False
    return len(json.dumps(v, ensure_ascii=False)) <= 200


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = ap.parse_args(argv)
    changed = []
    for name, doc in files():
        path = HERE / name
        text = render(doc)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        changed.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    for name in changed:
        print(("differs: " if args.check else "wrote: ") + name)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
