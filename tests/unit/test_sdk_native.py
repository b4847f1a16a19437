"""The compiled emit path (``nodemeter_native``) against the pure-Python one.

- shared vectors: the compiled encoder takes them itself (no deferral) and writes
  the bytes of the generic fastavro encoder and of ``fastcodec.encode``;
- hypothesis: random valid events give identical bytes and keys; random events
  with invalid values raise the same error class, reason and message;
- the fallback: without the extension (or with ``NODEMETER_NATIVE=0``) the SDK
  uses the Python path and says so (``fastcodec.NATIVE``, ``Meter.native``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sdk_fakes import FakeProducer

from nodemeter import fastcodec
from nodemeter.codec import encode_record, record_key
from nodemeter.errors import ConfigError, InvalidUsageError
from nodemeter.events import (
    LIMITS,
    MAX_ATTRIBUTE_LEN,
    MAX_ATTRIBUTES,
    MAX_CUSTOM_METERS,
    MAX_ID_LEN,
    GpuSource,
    Meters,
    Record,
    RequestEnd,
    Status,
    UsageEvent,
    event_id_for,
)
from nodemeter.meter import Meter, MeterConfig

try:
    import nodemeter_native
except ImportError:  # pragma: no cover - `make setup` builds it wherever cargo exists
    nodemeter_native = None  # type: ignore[assignment]

needs_native = pytest.mark.skipif(
    nodemeter_native is None,
    reason="nodemeter_native is not built (no cargo at setup?): `make setup` builds it",
)

T0 = datetime(2026, 3, 4, 5, 6, 7, 891_011, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))

# --- shared vectors ----------------------------------------------------------------------


def usage(**kw: Any) -> UsageEvent:
    base: dict[str, Any] = dict(
        event_id=event_id_for("acme", "req-1", "span-1", 0),
        tenant="acme",
        request_id="req-1",
        node_id="llm.answer",
        span_id="span-1",
        event_time=T0,
    )
    base.update(kw)
    return UsageEvent(**base)


VECTORS: dict[str, Record] = {
    "minimal": usage(),
    "llm span": usage(
        parent_span_id="root",
        branch_path="1.2",
        workflow="rag",
        model="gpt-4o",
        provider="openai",
        sequence=3,
        meters=Meters(input_tokens=812, output_tokens=96, cached_input_tokens=512, api_calls=1),
        attributes={"region": "eu", "user": "u-17"},
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        producer="nodemeter-py/0.1.0",
    ),
    "gpu + custom, not billable, error": usage(
        meters=Meters(
            gpu_ms=7 * 24 * 3_600_000,
            gpu_type="NVIDIA H100 80GB HBM3",
            gpu_source=GpuSource.ESTIMATED,
            cpu_ms=LIMITS["cpu_ms"],
            custom={"documents": 8, "pages.ocr": 10**15, "z": 0},
        ),
        status=Status.ERROR,
        billable=False,
        non_billable_reason="cold_start" * 100,  # not length-limited
    ),
    "non-ASCII text, empty optionals": usage(
        tenant="tenant_1.eu:prod@x-y",
        node_id="résumé.摘要",
        model="",
        provider="",
        trace_id="",
        attributes={"città": "Zürich 🚀", "": ""},
    ),
    "limits exactly": usage(
        event_id="e" * MAX_ID_LEN,
        tenant="T" * 128,
        sequence=2**62,
        meters=Meters(
            input_tokens=LIMITS["input_tokens"],
            custom={f"c{i}": i for i in range(MAX_CUSTOM_METERS)},
        ),
        attributes={f"k{i}": "v" * MAX_ATTRIBUTE_LEN for i in range(MAX_ATTRIBUTES)},
    ),
    "fixed offset, before 1970": usage(event_time=datetime(1969, 7, 20, 20, 17, tzinfo=IST)),
    "far future, negative offset": usage(
        event_time=datetime(
            9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(-timedelta(hours=11))
        )
    ),
    "request end": RequestEnd(
        event_id="end-1",
        tenant="acme",
        request_id="req-1",
        root_span_id="root",
        span_count=1_000_000,
        event_time=T0,
        workflow="w" * 1000,  # not validated on a RequestEnd
        status=Status.PARTIAL,
        attributes={"a": "b"},
    ),
}


@needs_native
def test_the_sdk_uses_the_compiled_path_when_it_is_built() -> None:
    assert fastcodec.NATIVE
    assert fastcodec.validate_and_encode is nodemeter_native.validate_encode


@needs_native
@pytest.mark.parametrize("name", list(VECTORS))
def test_vectors_compiled_bytes_are_the_python_bytes(name: str) -> None:
    record = VECTORS[name]
    compiled = nodemeter_native.try_encode(record)
    assert compiled is not None, "the compiled path deferred a plain valid record"
    assert compiled == (record_key(record), encode_record(record))
    assert compiled == fastcodec.python_validate_and_encode(record)
    assert fastcodec.validate_and_encode(record) == compiled
    assert fastcodec.encode_with_key(record) == compiled


def test_vector_golden_bytes() -> None:
    # Pins the wire format itself (both paths): single-object header + Avro body.
    record = VECTORS["minimal"]
    key, value = fastcodec.validate_and_encode(record)
    assert key == b"acme/req-1"
    golden = [
        "c301 71cf071f150cfc2f",  # magic + CRC-64-AVRO fingerprint of usage_event v2
        "40" + b"90b99009e22c284b908097c914b954d2".hex(),  # event_id: length 32, text
        "0861636d65 0a7265712d31 146c6c6d2e616e73776572 0c7370616e2d31",  # tenant .. span_id
        "00 00 00 00 00 00",  # parent (null), branch_path, workflow, model, provider, sequence
        "00 00 00 00 00 00 00 00 00 00",  # meters: 4 token counts, gpu ms/type/source, cpu, api, custom
        "00 01 00",  # status OK, billable, non_billable_reason null
        "8699caf1f88aa606",  # event_time: µs since the epoch, zigzag varint
        "00 00 00",  # trace_id null, producer "", attributes {}
    ]
    assert value == bytes.fromhex(" ".join(golden))
    assert value == encode_record(record)


# --- hypothesis: valid events --------------------------------------------------------------

id_text = st.text(min_size=1, max_size=20)
opt_id = st.none() | st.text(max_size=20)
tenants = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,20}", fullmatch=True)
aware_times = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001 - hypothesis wants naive bounds here
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, IST, timezone(-timedelta(hours=7)), timezone(timedelta(0))]),
)


def qty(name: str) -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=LIMITS[name])


@st.composite
def valid_meters(draw: st.DrawFn) -> Meters:
    gpu_ms = draw(qty("gpu_ms") | st.just(0))
    source = draw(st.sampled_from(list(GpuSource)))
    if gpu_ms and source is GpuSource.NONE:
        source = GpuSource.MEASURED
    return Meters(
        input_tokens=draw(qty("input_tokens")),
        output_tokens=draw(qty("output_tokens")),
        cached_input_tokens=draw(qty("cached_input_tokens")),
        cache_write_tokens=draw(qty("cache_write_tokens")),
        gpu_ms=gpu_ms,
        gpu_type=draw(st.text(max_size=20)),
        gpu_source=source,
        cpu_ms=draw(qty("cpu_ms")),
        api_calls=draw(qty("api_calls")),
        custom=draw(
            st.dictionaries(
                st.from_regex(r"[a-z][a-z0-9_.]{0,12}", fullmatch=True),
                st.integers(0, LIMITS["custom"]),
                max_size=5,
            )
        ),
    )


valid_usage = st.builds(
    UsageEvent,
    event_id=id_text,
    tenant=tenants,
    request_id=id_text,
    node_id=id_text,
    span_id=id_text,
    event_time=aware_times,
    parent_span_id=opt_id,
    branch_path=st.text(max_size=20),
    workflow=st.text(max_size=20),
    model=opt_id,
    provider=opt_id,
    sequence=st.integers(min_value=0, max_value=2**63 - 1),
    meters=valid_meters(),
    status=st.sampled_from(list(Status)),
    billable=st.booleans(),
    non_billable_reason=opt_id,
    attributes=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5),
    trace_id=opt_id,
    producer=st.text(max_size=20),
)
valid_end = st.builds(
    RequestEnd,
    event_id=id_text,
    tenant=tenants,
    request_id=id_text,
    root_span_id=id_text,
    span_count=st.integers(0, 1_000_000),
    event_time=aware_times,
    workflow=st.text(max_size=20),
    status=st.sampled_from(list(Status)),
    attributes=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5),
)


def _no_surrogates(record: Record) -> bool:
    try:
        fastcodec.encode(record)
    except UnicodeEncodeError:
        return False
    return True


@needs_native
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(valid_usage | valid_end)
def test_random_valid_records_same_bytes(record: Record) -> None:
    expected = fastcodec.python_validate_and_encode(record)  # raises if not valid after all
    compiled = nodemeter_native.try_encode(record)
    if compiled is None:
        # deferred: only for text that is not valid UTF-8 (lone surrogates)
        assert not _no_surrogates(record)
        return
    assert compiled == expected
    assert compiled[1] == encode_record(record)


# --- hypothesis: invalid (and odd) values -------------------------------------------------

long_id = st.text(min_size=MAX_ID_LEN + 1, max_size=MAX_ID_LEN + 3)
odd_str = st.none() | st.just("") | long_id | st.integers() | st.just("acme\n") | st.just(b"bytes")
odd_int = st.integers(min_value=-(2**70), max_value=2**70) | st.booleans() | st.just(1.0)


@st.composite
def broken_usage(draw: st.DrawFn) -> UsageEvent:
    """A valid event with one to three fields replaced by values the rules may refuse."""
    ev = draw(valid_usage)
    kw: dict[str, Any] = {f: getattr(ev, f) for f in fastcodec.USAGE_FIELDS}
    m: dict[str, Any] = {f: getattr(ev.meters, f) for f in fastcodec.METER_FIELDS}
    choices: dict[str, st.SearchStrategy[Any]] = {
        "tenant": odd_str | st.sampled_from(["-acme", "ac me", "a" * 129, "é", "\n"]),
        "event_id": odd_str,
        "request_id": odd_str,
        "node_id": odd_str,
        "span_id": odd_str,
        "parent_span_id": odd_str,
        "workflow": odd_str,
        "model": odd_str,
        "provider": odd_str,
        "trace_id": odd_str,
        "producer": odd_str,
        "branch_path": long_id,
        "sequence": odd_int,
        "event_time": st.just(datetime(2026, 1, 1)) | st.just("2026-01-01"),  # noqa: DTZ001
        "attributes": st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=65)
        | st.just({"k": 1})
        | st.just({"k": "v" * (MAX_ATTRIBUTE_LEN + 1)})
        | st.just({"k" * (MAX_ID_LEN + 1): "v"}),
        "status": st.just("OK"),
        "billable": st.just(1),
        "meters.input_tokens": odd_int | st.just(LIMITS["input_tokens"] + 1),
        "meters.cpu_ms": odd_int,
        "meters.gpu_ms": st.integers(1, 10),  # with gpu_source NONE below
        "meters.gpu_source": st.just(GpuSource.NONE) | st.just("MEASURED"),
        "meters.gpu_type": long_id,
        "meters.custom": st.just({"Bad": 1})
        | st.just({"ok": -1})
        | st.just({"ok": LIMITS["custom"] + 1})
        | st.just({"ok": True})
        | st.just({f"c{i}": 1 for i in range(MAX_CUSTOM_METERS + 1)}),
    }
    for name in draw(st.lists(st.sampled_from(sorted(choices)), min_size=1, max_size=3)):
        value = draw(choices[name])
        if name.startswith("meters."):
            m[name.removeprefix("meters.")] = value
        else:
            kw[name] = value
    kw["meters"] = Meters(**m)
    return UsageEvent(**kw)


def outcome(fn: Any, record: Record) -> tuple[str, Any]:
    try:
        return "ok", fn(record)
    except InvalidUsageError as exc:
        return type(exc).__name__, (exc.reason, str(exc))
    except Exception as exc:  # the Python path's own TypeError/AttributeError/...
        return type(exc).__name__, str(exc)


@needs_native
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(broken_usage())
def test_random_invalid_records_same_error(record: UsageEvent) -> None:
    python = outcome(fastcodec.python_validate_and_encode, record)
    assert outcome(nodemeter_native.validate_encode, record) == python
    assert outcome(nodemeter_native.encode, record) == outcome(
        fastcodec.python_encode_with_key, record
    )
    if nodemeter_native.try_encode(record) is not None:
        # what the compiled checks accept, the Python validator accepts: same bytes
        assert python == ("ok", nodemeter_native.try_encode(record))


@needs_native
def test_invalid_record_error_is_the_python_error() -> None:
    bad = usage(meters=Meters(input_tokens=-5))
    assert nodemeter_native.try_encode(bad) is None
    with pytest.raises(InvalidUsageError, match="input_tokens must not be negative") as info:
        fastcodec.validate_and_encode(bad)
    assert info.value.reason == "negative_quantity"


@needs_native
def test_subclasses_and_odd_types_are_left_to_python() -> None:
    class MyStr(str):
        pass

    odd = usage(tenant=MyStr("acme"))
    assert nodemeter_native.try_encode(odd) is None
    assert fastcodec.validate_and_encode(odd) == fastcodec.python_validate_and_encode(odd)


@needs_native
def test_configure_refuses_a_schema_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="usage_event fields"):
        nodemeter_native.configure(
            **{
                **fastcodec.native_settings(),
                "usage_fields": (*fastcodec.USAGE_FIELDS, "new_field"),
            }
        )
    # the configuration in use is untouched
    record = VECTORS["llm span"]
    assert nodemeter_native.try_encode(record) == fastcodec.python_validate_and_encode(record)


# --- the Meter on either path --------------------------------------------------------------


def _meter(tmp_path: Path, native: bool | None) -> tuple[Meter, list[FakeProducer]]:
    made: list[FakeProducer] = []

    def factory(conf: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(conf))
        return made[-1]

    cfg = MeterConfig(
        bootstrap_servers="fake:9092",
        topic="t.usage",
        spool_dir=tmp_path / f"spool-{native}",
        # the vectors include event times up to the year 9999 (encoding limits)
        max_future_skew_s=math.inf,
        tenants=frozenset({"acme"}),
    )
    meter = Meter(
        cfg,
        producer_factory=factory,  # type: ignore[arg-type]
        clock=lambda: T0,
        native=native,
        background=False,
    )
    return meter, made


@needs_native
def test_meter_sends_the_same_bytes_on_both_paths(tmp_path: Path) -> None:
    sent = {}
    for native in (True, False):
        meter, made = _meter(tmp_path, native)
        assert meter.native is native
        for record in VECTORS.values():
            if record.tenant == "acme":
                meter.emit(record)
        with meter.request(tenant="acme", request_id="r-9", workflow="w"), meter.node("n") as span:
            span.record(input_tokens=5, custom={"pages": 2})
        meter.flush()
        sent[native] = [(m.key(), m.value()) for m in made[0].delivered]
        with pytest.raises(InvalidUsageError) as info:
            meter.emit(usage(tenant="globex"))
        assert info.value.reason == "unknown_tenant"
        with pytest.raises(InvalidUsageError) as info:
            meter.emit(usage(tenant="globex", meters=Meters(api_calls=-1)))
        assert info.value.reason == "negative_quantity"  # validation first, as before
        meter.close()
    assert sent[True] == sent[False] and len(sent[True]) == 8


def test_meter_native_false_is_the_python_path(tmp_path: Path) -> None:
    meter, _ = _meter(tmp_path, False)
    assert not meter.native
    assert meter._validate_encode is fastcodec.python_validate_and_encode
    meter.close()


def _python(code: str, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


FALLBACK_CHECK = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(message)s")
{prelude}
from nodemeter import fastcodec
from nodemeter.codec import encode_record
from nodemeter.events import Meters, UsageEvent, utcnow
from nodemeter.errors import ConfigError
from nodemeter.meter import Meter, MeterConfig
ev = UsageEvent(event_id="e", tenant="acme", request_id="r", node_id="n", span_id="s",
                event_time=utcnow(), meters=Meters(input_tokens=3))
assert fastcodec.validate_and_encode is fastcodec.python_validate_and_encode
assert fastcodec.validate_and_encode(ev)[1] == encode_record(ev)
try:
    Meter(MeterConfig(bootstrap_servers="127.0.0.1:1"), native=True, background=False)
except ConfigError:
    print("native=True refused")
print("NATIVE", fastcodec.NATIVE)
"""


def test_fallback_when_the_extension_is_not_installed() -> None:
    out = _python(FALLBACK_CHECK.format(prelude="sys.modules['nodemeter_native'] = None"))
    assert "nodemeter_native not installed: pure-Python encoder" in out
    assert "native=True refused" in out and out.endswith("NATIVE False")


def test_fallback_forced_by_the_environment() -> None:
    out = _python(FALLBACK_CHECK.format(prelude=""), NODEMETER_NATIVE="0")
    assert "NODEMETER_NATIVE=0: pure-Python encoder" in out
    assert out.endswith("NATIVE False")


@needs_native
def test_debug_log_says_the_compiled_path_is_in_use() -> None:
    out = _python(
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format='%(message)s')\n"
        "from nodemeter import fastcodec\n"
        "print('NATIVE', fastcodec.NATIVE)"
    )
    assert out.endswith("NATIVE True")
    assert "compiled encoder nodemeter_native in use" in out


def test_config_error_type() -> None:
    # native=True with a custom encoder cannot be honoured
    with pytest.raises(ConfigError, match="custom encoder"):
        Meter(
            MeterConfig(bootstrap_servers="fake:9092", spool_dir=Path("/nonexistent/never")),
            producer_factory=lambda c: FakeProducer(c),  # type: ignore[arg-type,return-value]
            encoder=encode_record,
            native=True,
            background=False,
        )
