"""What the SDK accepts, the worker accepts: bad input is a typed error at the call site.

The worker validates with ``events.validate_record`` (stream ``ingest/decode.py``); these
tests feed the SDK inputs that used to pass it and be dead-lettered later, or that raised
untyped errors (AttributeError, TypeError, KeyError), or were sent wrong.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from test_sdk_fakes import FakeClock, FakeProducer, delivered_records, fake_meter

from nodemeter.errors import InvalidUsageError, OversizeEventError
from nodemeter.events import (
    MAX_ATTRIBUTES,
    MAX_EVENT_BYTES,
    Meters,
    RequestEnd,
    UsageEvent,
    event_id_for,
    validate_record,
)
from nodemeter.meter import Meter, MeterConfig

T = FakeClock()()
USAGE = UsageEvent(
    event_id=event_id_for("acme", "r", "s", 0), tenant="acme", request_id="r",
    node_id="n", span_id="s", event_time=T, meters=Meters(input_tokens=5),
)  # fmt: skip
END = RequestEnd(
    event_id="e", tenant="acme", request_id="r", root_span_id="s", span_count=1, event_time=T
)

BAD: dict[str, Any] = {
    "meters None": dataclasses.replace(USAGE, meters=None),  # type: ignore[arg-type]
    "meters dict": dataclasses.replace(USAGE, meters={"input_tokens": 5}),  # type: ignore[arg-type]
    "status unknown": dataclasses.replace(USAGE, status="DONE"),  # type: ignore[arg-type]
    "status int": dataclasses.replace(USAGE, status=0),  # type: ignore[arg-type]
    "sequence str": dataclasses.replace(USAGE, sequence="1"),  # type: ignore[arg-type]
    "sequence bool": dataclasses.replace(USAGE, sequence=True),
    "billable no": dataclasses.replace(USAGE, billable="no"),  # type: ignore[arg-type]
    "billable 0": dataclasses.replace(USAGE, billable=0),  # type: ignore[arg-type]
    "attributes None": dataclasses.replace(USAGE, attributes=None),  # type: ignore[arg-type]
    "attributes list": dataclasses.replace(USAGE, attributes=[("a", "b")]),  # type: ignore[arg-type]
    "branch_path None": dataclasses.replace(USAGE, branch_path=None),  # type: ignore[arg-type]
    "event_time str": dataclasses.replace(USAGE, event_time="2026-01-02"),  # type: ignore[arg-type]
    "custom None": dataclasses.replace(USAGE, meters=Meters(custom=None)),  # type: ignore[arg-type]
    "gpu_source str": dataclasses.replace(
        USAGE,
        meters=Meters(gpu_ms=5, gpu_source="GUESSED"),  # type: ignore[arg-type]
    ),
    "gpu_type None": dataclasses.replace(USAGE, meters=Meters(gpu_type=None)),  # type: ignore[arg-type]
    "non_billable_reason int": dataclasses.replace(USAGE, non_billable_reason=3),  # type: ignore[arg-type]
    "producer None": dataclasses.replace(USAGE, producer=None),  # type: ignore[arg-type]
    "end status": dataclasses.replace(END, status="DONE"),  # type: ignore[arg-type]
    "end attributes None": dataclasses.replace(END, attributes=None),  # type: ignore[arg-type]
    "end workflow None": dataclasses.replace(END, workflow=None),  # type: ignore[arg-type]
    "not a record": {"tenant": "acme"},
    "None": None,
}


@pytest.mark.parametrize("native", [False, None])
@pytest.mark.parametrize("name", list(BAD))
def test_emit_raises_the_typed_error_and_sends_nothing(
    tmp_path: Path, name: str, native: bool | None
) -> None:
    producers: list[FakeProducer] = []
    config = MeterConfig(bootstrap_servers="fake:9092", spool_dir=tmp_path / "spool")
    meter = Meter(
        config,
        producer_factory=lambda conf: producers.append(FakeProducer(conf)) or producers[-1],
        native=native,
        background=False,
    )
    try:
        with pytest.raises(InvalidUsageError):
            meter.emit(BAD[name])
        with pytest.raises(InvalidUsageError):
            validate_record(BAD[name])  # the worker's rule, the same verdict
    finally:
        meter.close()
    assert delivered_records(producers) == []


def test_a_billable_flag_is_sent_as_given(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    meter.emit(dataclasses.replace(USAGE, billable=False))
    meter.emit(dataclasses.replace(USAGE, span_id="s2"))
    meter.flush()
    assert [r.billable for r in delivered_records(producers)] == [False, True]  # type: ignore[union-attr]


def test_trace_id_is_checked_when_the_request_opens(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    for bad in ("t" * 257, 12345):
        with pytest.raises(InvalidUsageError):
            meter.request(tenant="acme", trace_id=bad)  # type: ignore[arg-type]
    meter.flush()
    assert delivered_records(producers) == []


def test_request_and_node_attributes_together_stay_within_the_limit(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    req_attrs = {f"r{i}": "v" for i in range(40)}
    with meter.request(tenant="acme", attributes=req_attrs):
        with pytest.raises(OversizeEventError):
            meter.node("n", attributes={f"n{i}": "v" for i in range(30)}).__enter__()
        with meter.node("m", attributes={f"n{i}": "v" for i in range(24)}) as span:
            span.record(api_calls=1)
            with pytest.raises(OversizeEventError):
                span.set_attribute("one.more", "v")
    meter.flush()
    (usage, _end) = delivered_records(producers)
    assert len(usage.attributes) == MAX_ATTRIBUTES
    validate_record(usage)


def test_an_oversize_span_fails_at_the_call_and_keeps_the_callers_error(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    refused_at = None
    # the caller's own error still comes out
    with pytest.raises(ZeroDivisionError), meter.request(tenant="acme"), meter.node("n") as span:
        span.record(input_tokens=1)
        for i in range(MAX_ATTRIBUTES):
            try:
                span.set_attribute(f"k{i}", "x" * 2048)
            except OversizeEventError:
                refused_at = i
                break
        span.record(input_tokens=2)
        1 / 0  # noqa: B018
    assert refused_at is not None and refused_at < MAX_ATTRIBUTES
    meter.flush()
    usage = [r for r in delivered_records(producers) if isinstance(r, UsageEvent)]
    assert [u.meters.input_tokens for u in usage] == [1, 2]  # no record dropped
    assert all(u.status == "ERROR" for u in usage)
    from nodemeter.codec import encode_record

    assert all(len(encode_record(u)) <= MAX_EVENT_BYTES for u in usage)


def test_oversize_request_attributes_fail_when_the_request_opens(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    big = {f"k{i}": "é" * 2048 for i in range(MAX_ATTRIBUTES)}  # 4 KiB each in UTF-8
    with pytest.raises(OversizeEventError), meter.request(tenant="acme", attributes=big):
        pass
    meter.flush()
    assert delivered_records(producers) == []
