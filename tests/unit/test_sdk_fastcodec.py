"""The hand-written encoder writes exactly the bytes the generic fastavro encoder writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from nodemeter import fastcodec
from nodemeter.codec import decode_record, encode_record
from nodemeter.events import LIMITS, GpuSource, Meters, RequestEnd, Status, UsageEvent

text = st.text(max_size=40)
opt_text = st.none() | text
qty = st.integers(min_value=0, max_value=LIMITS["input_tokens"])
times = st.datetimes(
    min_value=datetime(1950, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds here
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]
    ),
)
meters = st.builds(
    Meters,
    input_tokens=qty,
    output_tokens=qty,
    cached_input_tokens=qty,
    cache_write_tokens=qty,
    gpu_ms=st.integers(min_value=0, max_value=LIMITS["gpu_ms"]),
    gpu_type=text,
    gpu_source=st.sampled_from(list(GpuSource)),
    cpu_ms=st.integers(min_value=0, max_value=LIMITS["cpu_ms"]),
    api_calls=st.integers(min_value=0, max_value=10**7),
    custom=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), st.integers(0, 10**15), max_size=4
    ),
)
usage_events = st.builds(
    UsageEvent,
    event_id=text,
    tenant=text,
    request_id=text,
    node_id=text,
    span_id=text,
    event_time=times,
    parent_span_id=opt_text,
    branch_path=text,
    workflow=text,
    model=opt_text,
    provider=opt_text,
    sequence=st.integers(min_value=0, max_value=2**31 - 1),
    meters=meters,
    status=st.sampled_from(list(Status)),
    billable=st.booleans(),
    non_billable_reason=opt_text,
    attributes=st.dictionaries(text, text, max_size=4),
    trace_id=opt_text,
    producer=text,
)
request_ends = st.builds(
    RequestEnd,
    event_id=text,
    tenant=text,
    request_id=text,
    root_span_id=text,
    span_count=st.integers(min_value=0, max_value=2**31 - 1),
    event_time=times,
    workflow=text,
    status=st.sampled_from(list(Status)),
    attributes=st.dictionaries(text, text, max_size=4),
)


@settings(max_examples=300)
@given(usage_events)
def test_usage_event_bytes_identical(ev: UsageEvent) -> None:
    fast = fastcodec.encode(ev)
    assert fast == encode_record(ev)
    assert decode_record(fast) == ev


@settings(max_examples=200)
@given(request_ends)
def test_request_end_bytes_identical(end: RequestEnd) -> None:
    assert fastcodec.encode(end) == encode_record(end)


def test_supports_the_latest_schemas() -> None:
    # If this fails, a new schema version changed the field list: teach fastcodec
    # the new fields (until then it falls back to the generic encoder).
    assert fastcodec._USAGE_HEAD is not None and fastcodec._END_HEAD is not None
