"""The compiled decode path (``nodemeter_native``) against ``codec.decode_record``.

- shared vectors (``test_sdk_native.VECTORS``), written with usage_event v2 (what the
  SDK writes) and v1 (older producers): the compiled decoder takes them itself and
  gives the records ``codec.decode_record`` gives (==, same types);
- hypothesis: random valid events decode to equal records on both paths and pass the
  compiled validation; random invalid ones and random byte mutations: whatever the
  compiled side returns is what Python returns, whatever it declines gives Python's
  result or error (class, reason, message), and what passes the compiled validation
  passes ``events.validate_record``;
- malformed, truncated, trailing bytes, unknown fingerprint, other record types:
  deferred, the Python error;
- the fallback without the extension or with ``NODEMETER_NATIVE=0``.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import replace
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_sdk_native import T0, VECTORS, _python, broken_usage, usage, valid_end, valid_usage

import nodemeter_schemas
from nodemeter import codec, fastcodec
from nodemeter.codec import encode_payload, encode_record, usage_event_from_avro
from nodemeter.codec import usage_event_to_avro as to_avro
from nodemeter.errors import DecodeError
from nodemeter.events import (
    MAX_ID_LEN,
    GpuSource,
    Meters,
    Record,
    RequestEnd,
    Status,
    UsageEvent,
    validate_record,
)

try:
    import nodemeter_native
except ImportError:  # pragma: no cover - `make setup` builds it wherever cargo exists
    nodemeter_native = None  # type: ignore[assignment]

needs_native = pytest.mark.skipif(
    nodemeter_native is None or not fastcodec.NATIVE_DECODE,
    reason="nodemeter_native is not built (no cargo at setup?) or NODEMETER_NATIVE=0",
)


def v1(event: UsageEvent) -> bytes:
    """The event as an older producer writes it: usage_event v1."""
    d = to_avro(event)
    del d["trace_id"], d["producer"]
    return encode_payload("usage_event", d, version=1)


def outcome(fn: Any, data: Any) -> tuple[str, Any]:
    try:
        value = fn(data)
    except DecodeError as exc:
        return type(exc).__name__, (exc.reason, str(exc))
    except Exception as exc:  # pragma: no cover - codec wraps what fastavro raises
        return type(exc).__name__, str(exc)
    return type(value).__name__, value


def valid(record: Record) -> bool:
    try:
        validate_record(record)
    except ValueError:
        return False
    return True


def check_bytes(data: Any) -> UsageEvent | None:
    """Every compiled function on ``data`` against the Python path; the compiled record."""
    python = outcome(codec.decode_record, data)
    assert outcome(fastcodec.decode_record, data) == python
    compiled = nodemeter_native.decode_usage_event(data)
    checked = nodemeter_native.decode_valid_usage_event(data)
    if compiled is not None:
        assert python == ("UsageEvent", compiled)
    if checked is not None:
        assert checked == compiled  # the validating decoder takes a subset
        assert valid(checked), "the compiled validation passed a record Python refuses"
    return compiled


USAGE_VECTORS = {n: r for n, r in VECTORS.items() if isinstance(r, UsageEvent)}


@needs_native
def test_the_worker_decode_path_is_compiled_when_built() -> None:
    assert fastcodec.NATIVE_DECODE
    assert fastcodec.decode_record is nodemeter_native.decode_record
    assert fastcodec.decode_valid_usage_event is nodemeter_native.decode_valid_usage_event


@needs_native
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", list(USAGE_VECTORS))
def test_vectors_compiled_records_are_the_python_records(name: str, version: int) -> None:
    event = USAGE_VECTORS[name]
    data = encode_record(event) if version == 2 else v1(event)
    python = outcome(codec.decode_record, data)
    compiled = check_bytes(data)
    if python[0] != "UsageEvent":
        # 9999-12-31T23:59:59-11:00 is in year 10000 in UTC: fastavro's OverflowError
        assert name == "far future, negative offset" and python[1][0] == "truncated"
        assert compiled is None
        return
    assert compiled is not None, "the compiled path deferred a plain record"
    assert nodemeter_native.decode_valid_usage_event(data) == compiled, "deferred a valid one"
    expected = event if version == 2 else replace(event, trace_id=None, producer="")
    assert compiled == expected
    # the same types as the Python decoder's, down to the time zone object
    assert type(compiled) is UsageEvent and type(compiled.meters) is Meters
    assert type(compiled.status) is Status and type(compiled.meters.gpu_source) is GpuSource
    assert compiled.event_time.tzinfo is UTC
    assert type(compiled.attributes) is dict and type(compiled.meters.custom) is dict
    assert fastcodec.decode_usage_event(data) == compiled


@needs_native
def test_records_from_the_worker_harness() -> None:
    sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
    from worker_harness import encoded, end
    from worker_harness import usage as harness_usage

    records: list[Record] = [
        harness_usage("acme", "r1", "s1", input_tokens=800, output_tokens=90),
        harness_usage("acme", "r1", "s2", node="ocr", gpu_ms=840, cpu_ms=12, parent="s1"),
        end("acme", "r1", 2),
    ]
    for (_, value), record in zip(encoded(records), records, strict=True):
        assert fastcodec.decode_record(value) == record
        if isinstance(record, UsageEvent):
            assert fastcodec.decode_valid_usage_event(value) == record
        else:
            assert fastcodec.decode_valid_usage_event(value) is None  # request ends: Python


# --- hypothesis --------------------------------------------------------------------------


def _encodable(record: Record) -> bytes:
    try:
        return fastcodec.encode(record)
    except Exception:  # surrogates, values of the wrong type: not bytes the topic carries
        assume(False)
        raise


@needs_native
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(valid_usage, st.booleans())
def test_random_valid_events_decode_to_the_python_records(event: UsageEvent, old: bool) -> None:
    data = v1(event) if old else _encodable(event)
    compiled = check_bytes(data)
    assert compiled is not None
    assert compiled == (replace(event, trace_id=None, producer="") if old else event)
    assert nodemeter_native.decode_valid_usage_event(data) == compiled


@needs_native
@settings(
    max_examples=600, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(broken_usage())
def test_random_invalid_events_same_record_or_error(event: UsageEvent) -> None:
    data = _encodable(event)
    compiled = check_bytes(data)  # == codec.decode_record(data) where not None
    if compiled is not None and valid(compiled):
        # one rule set: the compiled validation declines nothing Python accepts
        assert nodemeter_native.decode_valid_usage_event(data) is not None


@needs_native
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(valid_end)
def test_request_ends_are_left_to_python(end: RequestEnd) -> None:
    data = _encodable(end)
    assert nodemeter_native.decode_usage_event(data) is None
    assert fastcodec.decode_record(data) == codec.decode_record(data) == end


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """Bytes of a valid event with one to four bytes changed, dropped or added."""
    data = bytearray(_encodable(draw(valid_usage)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["set", "drop", "insert"]))
        if how == "set" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif how == "drop" and i < len(data):
            del data[i]
        else:
            data.insert(i, draw(st.integers(0, 255)))
    return bytes(data)


@needs_native
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_bytes_same_record_or_error(data: bytes) -> None:
    check_bytes(data)


# --- malformed input: deferred, Python's error --------------------------------------------

GOOD = encode_record(USAGE_VECTORS["llm span"])


@needs_native
@pytest.mark.parametrize("n", range(len(GOOD)))
def test_truncated(n: int) -> None:
    assert nodemeter_native.decode_usage_event(GOOD[:n]) is None
    with pytest.raises(DecodeError) as info:
        fastcodec.decode_record(GOOD[:n])
    assert info.value.reason == "truncated"
    assert outcome(fastcodec.decode_record, GOOD[:n]) == outcome(codec.decode_record, GOOD[:n])


MALFORMED = {
    "trailing byte": (GOOD + b"\x00", "trailing_bytes"),
    "trailing bytes": (GOOD + b"junk", "trailing_bytes"),
    "bad magic": (b"\xc3\x02" + GOOD[2:], "bad_magic"),
    "unknown fingerprint": (GOOD[:2] + b"\x00" * 8 + GOOD[10:], "unknown_schema"),
    # trace_id null, producer "" read as v1's attributes: two bytes left over
    "v1 fingerprint on a v2 body": (
        v1(usage())[:10] + encode_record(usage())[10:],
        "trailing_bytes",
    ),
    "empty": (b"", "truncated"),
    "header only": (GOOD[:10], "truncated"),
    "window tick": (
        encode_payload("window_tick", {"tenant": "acme", "as_of": T0}),
        "unknown_schema",
    ),
}


@needs_native
@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_is_the_python_error(name: str) -> None:
    data, reason = MALFORMED[name]
    assert nodemeter_native.decode_usage_event(data) is None
    assert nodemeter_native.decode_valid_usage_event(data) is None
    with pytest.raises(DecodeError) as info:
        fastcodec.decode_record(data)
    assert info.value.reason == reason
    assert outcome(fastcodec.decode_record, data) == outcome(codec.decode_record, data)


def _body(**fields: Any) -> bytes:
    """Single-object bytes of ``usage()`` with some body fields as raw Avro."""
    d = to_avro(usage())
    d.update(fields)
    return encode_payload("usage_event", d)


def _patch(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1
    return data.replace(old, new)


# Encodings fastavro reads but the compiled reader leaves to it (or reads the same).
ODD = {
    # event_id's length (32) as an overlong varint: both read it
    "overlong varint": _patch(GOOD, b"\x40" + GOOD[11:43], b"\xc0\x00" + GOOD[11:43]),
    # status 3 (no such symbol) and -1 (Python's list[-1])
    "status 3": _patch(_body(), b"\x00\x01\x00\x86", b"\x06\x01\x00\x86"),
    "status -1": _patch(_body(), b"\x00\x01\x00\x86", b"\x01\x01\x00\x86"),
    "billable 2": _patch(_body(), b"\x00\x01\x00\x86", b"\x00\x02\x00\x86"),
    "union index 2": _patch(_body(), b"\x00\x01\x00\x86", b"\x00\x01\x04\x86"),
    "union index -1": _patch(_body(), b"\x00\x01\x00\x86", b"\x00\x01\x01\x86"),
    # attributes as one block with its byte size (a negative count)
    "map block with size": _patch(
        _body(attributes={"a": "b"}), b"\x02\x02a\x02b\x00", b"\x01\x08\x02a\x02b\x00"
    ),
    "map in two blocks": _patch(
        _body(attributes={"a": "b", "c": "d"}),
        b"\x04\x02a\x02b\x02c\x02d\x00",
        b"\x02\x02a\x02b\x02\x02c\x02d\x00",
    ),
    "duplicate map keys": _patch(
        _body(attributes={"a": "b", "c": "d"}),
        b"\x04\x02a\x02b\x02c\x02d\x00",
        b"\x04\x02a\x02b\x02a\x02d\x00",
    ),
    # the v2 body of GOOD read as v1: trace_id and producer pass for an attribute
    "v1 fingerprint on a v2 body": v1(usage())[:10] + GOOD[10:],
    "invalid UTF-8": _patch(_body(node_id="xyz"), b"\x06xyz", b"\x06x\xffz"),
    "encoded surrogate": _patch(_body(node_id="xyz"), b"\x06xyz", b"\x06\xed\xa0\x80"),
    "11-byte varint": _patch(_body(sequence=37), b"\x4a", b"\xca" + b"\x80" * 9 + b"\x00"),
    "10th varint byte > 1": _patch(_body(sequence=37), b"\x4a", b"\xff" * 9 + b"\x7f"),
    "negative string length": _patch(_body(node_id="xyz"), b"\x06xyz", b"\x05xyz"),
    "time before year 1": _body(event_time=-62_135_596_800_000_001),
}


@needs_native
@pytest.mark.parametrize("name", list(ODD))
def test_odd_encodings_same_as_python(name: str) -> None:
    check_bytes(ODD[name])


@needs_native
def test_odd_but_readable_encodings_compiled() -> None:
    for name in ("overlong varint", "map in two blocks", "duplicate map keys"):
        assert nodemeter_native.decode_usage_event(ODD[name]) is not None, name
    assert fastcodec.decode_record(ODD["duplicate map keys"]).attributes == {"a": "d"}


@needs_native
def test_buffers_other_than_bytes_go_to_python() -> None:
    for data in (bytearray(GOOD), memoryview(GOOD)):
        assert nodemeter_native.decode_usage_event(data) is None
        assert fastcodec.decode_record(data) == codec.decode_record(GOOD)  # type: ignore[arg-type]
    assert outcome(fastcodec.decode_record, "text") == outcome(codec.decode_record, "text")


# --- validation: what the compiled checks decline ------------------------------------------

INVALID = {
    "negative quantity": _body(meters={**to_avro(usage())["meters"], "input_tokens": -1}),
    "absurd quantity": _body(meters={**to_avro(usage())["meters"], "api_calls": 10**7 + 1}),
    "gpu_ms without a source": _body(meters={**to_avro(usage())["meters"], "gpu_ms": 5}),
    "custom name": _body(meters={**to_avro(usage())["meters"], "custom": {"Bad": 1}}),
    "custom value": _body(meters={**to_avro(usage())["meters"], "custom": {"ok": 10**15 + 1}}),
    "custom count": _body(
        meters={**to_avro(usage())["meters"], "custom": {f"c{i}": 1 for i in range(33)}}
    ),
    "gpu_type": _body(meters={**to_avro(usage())["meters"], "gpu_type": "g" * 257}),
    "tenant pattern": _body(tenant="-acme"),
    "tenant missing": _body(tenant=""),
    "tenant too long": _body(tenant="t" * 129),
    "event_id missing": _body(event_id=""),
    "span_id too long": _body(span_id="s" * (MAX_ID_LEN + 1)),
    "non-ASCII id too long": _body(node_id="é" * (MAX_ID_LEN + 1)),
    "model too long": _body(model="m" * (MAX_ID_LEN + 1)),
    "trace_id too long": _body(trace_id="t" * (MAX_ID_LEN + 1)),
    "producer too long": _body(producer="p" * (MAX_ID_LEN + 1)),
    "branch_path too long": _body(branch_path="1" * (MAX_ID_LEN + 1)),
    "negative sequence": _body(sequence=-1),
    "attribute count": _body(attributes={f"k{i}": "v" for i in range(65)}),
    "attribute value": _body(attributes={"k": "v" * 2049}),
    "attribute key": _body(attributes={"k" * (MAX_ID_LEN + 1): "v"}),
}


@needs_native
@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_events_decode_but_do_not_pass(name: str) -> None:
    data = INVALID[name]
    record = nodemeter_native.decode_usage_event(data)
    assert record is not None and record == codec.decode_record(data)
    assert nodemeter_native.decode_valid_usage_event(data) is None
    assert not valid(record), "the case is valid after all: the test is wrong"


@needs_native
def test_limits_exactly_pass() -> None:
    ok = {
        "a": _body(tenant="t" * 128, node_id="é" * MAX_ID_LEN, producer="p" * MAX_ID_LEN),
        "b": _body(meters={**to_avro(usage())["meters"], "gpu_ms": 5, "gpu_source": "MEASURED"}),
        "c": _body(non_billable_reason="x" * 10_000, sequence=2**63 - 1),
    }
    for data in ok.values():
        record = nodemeter_native.decode_valid_usage_event(data)
        assert record is not None and record == codec.decode_record(data) and valid(record)


@needs_native
def test_a_trailing_newline_is_invalid_in_both() -> None:
    data = _body(tenant="acme\n")
    assert not valid(codec.decode_record(data))  # the whole string must match
    assert nodemeter_native.decode_valid_usage_event(data) is None
    assert fastcodec.decode_record(data) == codec.decode_record(data)


# --- memory and configuration -------------------------------------------------------------


@needs_native
def test_no_reference_leaks() -> None:
    data = encode_record(USAGE_VECTORS["llm span"])
    nodemeter_native.decode_usage_event(data)
    gc.collect()
    before = sys.getrefcount(Status.OK), sys.getrefcount(GpuSource.NONE)
    nones = sys.getrefcount(None)
    for _ in range(2000):
        assert nodemeter_native.decode_valid_usage_event(data) is not None
        assert nodemeter_native.decode_usage_event(INVALID["custom count"]) is not None
        assert nodemeter_native.decode_usage_event(data[:-3]) is None  # freed half-built
    gc.collect()
    assert (sys.getrefcount(Status.OK), sys.getrefcount(GpuSource.NONE)) == before
    assert abs(sys.getrefcount(None) - nones) < 100  # a leak: thousands (None is shared)
    record = nodemeter_native.decode_usage_event(data)
    assert record is not None and gc.is_tracked(record) and gc.is_tracked(record.meters)


@needs_native
def test_configure_decoder_refuses_other_schemas() -> None:
    settings = fastcodec.native_decoder_settings()
    with pytest.raises(ValueError, match="fingerprints"):
        nodemeter_native.configure_decoder(**{**settings, "usage_v2_head": b"\xc3\x01" + bytes(8)})
    with pytest.raises(ValueError, match="v3 is the latest"):
        nodemeter_native.configure_decoder(**{**settings, "latest_usage_version": 3})
    assert nodemeter_schemas.latest_version("usage_event") == 2
    # the decoder in use is untouched
    assert fastcodec.decode_record(GOOD) == codec.decode_record(GOOD)


def test_pricing_style_use_gives_the_python_event() -> None:
    # what the pricing agent does today, against the compiled call that replaces it
    name, payload = codec.decode_payload(GOOD)
    assert name == "usage_event"
    fast = fastcodec.decode_usage_event(GOOD)
    assert fast is None or fast == usage_event_from_avro(payload)
    assert fastcodec.decode_usage_event(MALFORMED["window tick"][0]) is None


FALLBACK_CHECK = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(message)s")
{prelude}
from nodemeter import codec, fastcodec
from nodemeter.codec import encode_record
from nodemeter.errors import DecodeError
from nodemeter.events import UsageEvent, utcnow
ev = UsageEvent(event_id="e", tenant="acme", request_id="r", node_id="n", span_id="s",
                event_time=utcnow())
data = encode_record(ev)
assert fastcodec.decode_record is codec.decode_record
assert fastcodec.decode_record(data) == ev
assert fastcodec.decode_usage_event(data) is None
assert fastcodec.decode_valid_usage_event(data) is None
try:
    fastcodec.decode_record(data[:-1])
except DecodeError as exc:
    print("reason", exc.reason)
print("NATIVE_DECODE", fastcodec.NATIVE_DECODE)
"""


def test_fallback_when_the_extension_is_not_installed() -> None:
    out = _python(FALLBACK_CHECK.format(prelude="sys.modules['nodemeter_native'] = None"))
    assert "reason truncated" in out and out.endswith("NATIVE_DECODE False")


def test_fallback_forced_by_the_environment() -> None:
    out = _python(FALLBACK_CHECK.format(prelude=""), NODEMETER_NATIVE="0")
    assert "NODEMETER_NATIVE=0" in out
    assert "reason truncated" in out and out.endswith("NATIVE_DECODE False")


@needs_native
def test_debug_log_says_the_compiled_decoder_is_in_use() -> None:
    out = _python(
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format='%(message)s')\n"
        "from nodemeter import fastcodec\n"
        "print('NATIVE_DECODE', fastcodec.NATIVE_DECODE)"
    )
    assert "compiled decoder nodemeter_native in use" in out
    assert out.endswith("NATIVE_DECODE True")
