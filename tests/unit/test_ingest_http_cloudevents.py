"""CloudEvents -> records: the mapping of docs/http.md, and the rules of `nodemeter emit`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from nodemeter.emit_cli import record_from_json
from nodemeter.errors import InvalidUsageError
from nodemeter.events import GpuSource, Meters, RequestEnd, UsageEvent, validate_record
from nodemeter.ingest_http.cloudevents import (
    BATCH,
    PRODUCER,
    REQUEST_END_TYPE,
    STRUCTURED,
    USAGE_TYPE,
    BodyError,
    event_id_of,
    map_events,
    parse_body,
    to_record,
)

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def ce(**over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "//billing.example/svc",
        "type": USAGE_TYPE,
        "time": "2026-12-02T08:59:00.250Z",
        "subject": "acme/req-7",
        "data": {"node_id": "llm.answer", "model": "gpt-4o", "input_tokens": 812,
                 "output_tokens": 96, "cached_input_tokens": 512},
    }  # fmt: skip
    event.update(over)
    return {k: v for k, v in event.items() if v is not None}  # None: leave it out


def test_a_usage_event_maps_field_by_field() -> None:
    record = to_record(ce(traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"), now=lambda: NOW)
    assert record == UsageEvent(
        event_id=event_id_of("//billing.example/svc", "e-1"),
        tenant="acme",
        request_id="req-7",
        node_id="llm.answer",
        span_id="llm.answer",
        model="gpt-4o",
        event_time=datetime(2026, 12, 2, 8, 59, 0, 250000, tzinfo=UTC),
        meters=Meters(input_tokens=812, output_tokens=96, cached_input_tokens=512),
        trace_id="ab" * 16,
        producer=PRODUCER,
    )


def test_the_event_id_is_derived_from_source_and_id_only() -> None:
    a = to_record(ce())
    assert a.event_id == to_record(ce(time="2026-12-02T08:00:00Z")).event_id  # a resend
    assert a.event_id != to_record(ce(source="//other/svc")).event_id  # same id, other source
    assert event_id_of("s", "1") == hashlib.sha256(b"cloudevents\x1fs\x1f1").hexdigest()[:32]


def test_data_reads_like_an_emit_line_so_the_rules_are_one_set() -> None:
    data = {"tenant": "acme", "request_id": "r", "node_id": "ocr", "span_id": "s2",
            "parent_span_id": "root", "branch_path": "1", "workflow": "rag",
            "meters": {"gpu_ms": 840, "gpu_source": "MEASURED", "gpu_type": "L4"},
            "billable": False, "non_billable_reason": "warmup",
            "attributes": {"region": "eu"}}  # fmt: skip
    record = to_record(ce(subject=None, data=data, time="2026-12-02T08:00:00+01:00"))
    line = record_from_json(
        {**data, "event_id": record.event_id, "event_time": "2026-12-02T08:00:00+01:00"}
    )
    assert isinstance(record, UsageEvent) and isinstance(line, UsageEvent)
    assert record == line.__class__(**{**_fields(line), "producer": PRODUCER})
    assert record.meters.gpu_source is GpuSource.MEASURED and record.billable is False


def _fields(record: UsageEvent) -> dict[str, Any]:
    return {name: getattr(record, name) for name in UsageEvent.__slots__}  # type: ignore[attr-defined]


def test_a_request_end_maps_too() -> None:
    record = to_record(
        ce(type=REQUEST_END_TYPE, id="end-1", data={"span_count": 3, "workflow": "rag"})
    )
    assert record == RequestEnd(
        event_id=event_id_of("//billing.example/svc", "end-1"),
        tenant="acme",
        request_id="req-7",
        root_span_id="root",
        span_count=3,
        workflow="rag",
        event_time=datetime(2026, 12, 2, 8, 59, 0, 250000, tzinfo=UTC),
    )
    validate_record(record)


def test_without_time_the_event_is_dated_when_received_and_tenant_is_the_keys() -> None:
    record = to_record(ce(time=None, subject=None, data={"request_id": "r", "node_id": "n",
                                                         "api_calls": 1}),
                       default_tenant="acme", now=lambda: NOW)  # fmt: skip
    assert (record.tenant, record.event_time) == ("acme", NOW)


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"specversion": "0.3"}, "invalid_specversion"),
        ({"id": ""}, "missing_id"),
        ({"source": None}, "missing_source"),
        ({"type": "com.example.other"}, "invalid_type"),
        ({"datacontenttype": "application/xml"}, "invalid_data"),
        ({"data_base64": "e30="}, "invalid_data"),
        ({"data": "812 tokens"}, "invalid_data"),
        ({"data": {"node_id": "n", "event_id": "x"}}, "conflicting_field"),
        ({"data": {"node_id": "n", "tenant": "globex"}}, "conflicting_field"),
        ({"subject": "no-slash"}, "invalid_subject"),
        ({"time": "yesterday"}, "invalid_time"),
        ({"time": "2026-12-02T08:00:00"}, "invalid_time"),  # no zone
        ({"traceparent": "xyz"}, "invalid_traceparent"),
        ({"data": {"node_id": "n", "input_tokens": -1}}, "negative_quantity"),
        ({"data": {"node_id": "n", "input_tokens": 10**9}}, "absurd_quantity"),
        ({"data": {"input_tokens": 1}}, "missing_node_id"),
        ({"data": {"node_id": "n", "billable": "no"}}, "invalid_billable"),
        ({"subject": "acme\n/r"}, "invalid_tenant"),
    ],
)
def test_each_rule_has_its_reason(over: dict[str, Any], reason: str) -> None:
    event = ce(**over)
    with pytest.raises(InvalidUsageError) as info:
        to_record(event)
    assert info.value.reason == reason


def test_a_batch_takes_the_good_events_and_refuses_the_rest_by_index() -> None:
    events = [
        ce(id="a"),
        ce(id="b", data={"node_id": "n", "input_tokens": -5}),
        ce(id="c", subject="globex/r"),  # another tenant than the key's
        ce(id="a"),  # the first event again
        "not an object",
        ce(id="d", subject=None, data={"request_id": "r2", "node_id": "n", "api_calls": 2}),
    ]
    mapped, refused = map_events(events, tenant="acme")
    assert [(m.index, m.ce_id, m.record.tenant) for m in mapped] == [
        (0, "a", "acme"),
        (5, "d", "acme"),
    ]
    assert [(r.index, r.ce_id, r.reason) for r in refused] == [
        (1, "b", "negative_quantity"),
        (2, "c", "tenant_not_allowed"),
        (3, "a", "duplicate_event_id"),
        (4, None, "invalid_event"),
    ]


def test_a_bad_event_first_in_a_batch_refuses_itself_only() -> None:
    events = [ce(data={"node_id": "n", "meters": [1]}), ce(id="z")]
    mapped, refused = map_events(events, tenant="acme")
    assert [m.ce_id for m in mapped] == ["z"]
    assert [(r.index, r.reason) for r in refused] == [(0, "invalid_meters")]


def test_parse_body_by_media_type() -> None:
    one = json.dumps(ce()).encode()
    assert parse_body(one, STRUCTURED + "; charset=utf-8", max_events=10) == [ce()]
    assert parse_body(json.dumps([ce(), ce(id="2")]).encode(), BATCH, max_events=2)[1]["id"] == "2"
    assert parse_body(b"[]", BATCH, max_events=2) == []
    for body, ctype, status, reason in [
        (one, "application/json", 415, "unsupported_media_type"),
        (one, None, 415, "unsupported_media_type"),
        (b"\xff", STRUCTURED, 400, "invalid_utf8"),
        (b"{", STRUCTURED, 400, "invalid_json"),
        (b"[]", STRUCTURED, 400, "invalid_event"),
        (one, BATCH, 400, "invalid_batch"),
        (json.dumps([ce()] * 3).encode(), BATCH, 413, "too_many_events"),
        (b"[" * 100_000, BATCH, 400, "invalid_json"),
    ]:
        with pytest.raises(BodyError) as info:
            parse_body(body, ctype, max_events=2)
        assert (info.value.status, info.value.reason) == (status, reason), body[:40]
