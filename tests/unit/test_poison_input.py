"""Valid input that must not stop the pipeline (issue 12, item 4), at the pure stages:
a runaway request is capped (so its state stays bounded and its UInt64 sums cannot
overflow), and a dead letter of a record near Kafka's message limit still fits one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nodemeter.codec import decode_payload, encode_record
from nodemeter.errors import ConfigError
from nodemeter.events import LIMITS, Meters, UsageEvent, event_id_for
from nodemeter_stream.app import WorkerConfig
from nodemeter_stream.ingest.decode import DeadLetter, Source, classify
from nodemeter_stream.ingest.dlq import MAX_DLQ_PAYLOAD, dlq_record
from nodemeter_stream.ingest.merge import RequestState, build_record
from nodemeter_stream.ingest.plan import (
    MAX_REQUEST_EVENTS,
    TOO_LARGE,
    UINT64_MAX,
    plan_batch,
)

T = datetime(2026, 11, 1, tzinfo=UTC)
KAFKA_MESSAGE_MAX = 1_000_000  # the producer's default max request size


def ev(i: int, *, custom: int = 1, req: str = "big") -> UsageEvent:
    return UsageEvent(
        event_id=event_id_for("acme", req, f"s{i}", 0),
        tenant="acme",
        request_id=req,
        node_id="embed",
        span_id=f"s{i}",
        event_time=T,
        meters=Meters(custom={"vectors": custom}),
    )


def batch(events: list[UsageEvent], start: int = 0) -> list:  # type: ignore[type-arg]
    return [
        classify(
            encode_record(e), key=b"k", source=Source(topic="u", partition=0, offset=start + i)
        )
        for i, e in enumerate(events)
    ]


def test_the_cap_keeps_every_request_sum_inside_uint64() -> None:
    largest = max(LIMITS.values())
    assert MAX_REQUEST_EVENTS * largest <= UINT64_MAX < (MAX_REQUEST_EVENTS + 1) * largest
    assert WorkerConfig(bootstrap="x").max_request_events <= MAX_REQUEST_EVENTS
    with pytest.raises(ConfigError, match="max_request_events"):
        WorkerConfig(bootstrap="x", max_request_events=MAX_REQUEST_EVENTS + 1)
    with pytest.raises(ConfigError, match="max_request_events"):
        WorkerConfig(bootstrap="x", max_request_events=0)


def test_events_past_the_cap_are_dead_letters_and_the_sums_fit() -> None:
    # 18,448 events at the custom limit: the sum would pass 2^64 (seen on chDB as an
    # insert that failed and was retried forever, stopping every tenant)
    n, cap = 18_448, 10_000
    events = [ev(i, custom=LIMITS["custom"]) for i in range(n)]
    assert sum(e.meters.custom["vectors"] for e in events) > UINT64_MAX
    plan = plan_batch(
        batch(events), get_state=lambda k: None, stored={}, now_ms=1, timeout_s=60,
        max_request_events=cap,
    )  # fmt: skip
    assert len(plan.fresh) == cap
    too_large = [d for d in plan.dead_letters if d.reason == TOO_LARGE]
    assert len(too_large) == n - cap
    assert too_large[0].tenant == "acme" and "10000 usage events" in too_large[0].detail
    assert too_large[0].payload == encode_record(events[cap])  # kept for a replay
    (state,) = plan.states.values()
    rec = build_record(state)
    assert rec.quantities["custom:vectors"] == cap * LIMITS["custom"] <= UINT64_MAX
    # a later batch of the same request: still capped, from the stored state
    more = plan_batch(
        batch([ev(n + 1)], start=n), get_state={k: s for k, s in plan.states.items()}.get,
        stored={}, now_ms=2, timeout_s=60, max_request_events=cap,
    )  # fmt: skip
    assert [d.reason for d in more.dead_letters] == [TOO_LARGE] and not more.fresh
    with pytest.raises(ValueError, match="max_request_events"):
        plan_batch([], get_state=lambda k: None, stored={}, now_ms=1, timeout_s=1,
                   max_request_events=MAX_REQUEST_EVENTS + 1)  # fmt: skip


def test_merging_in_place_leaves_the_states_in_memory_unchanged() -> None:
    first = plan_batch(batch([ev(0), ev(1)]), get_state=lambda k: None, stored={},
                       now_ms=1, timeout_s=60)  # fmt: skip
    memory: dict[str, RequestState] = dict(first.states)
    (before,) = memory.values()
    parts_before = dict(before.parts)
    second = plan_batch(batch([ev(2), ev(3), ev(4)], start=2), get_state=memory.get,
                        stored={}, now_ms=2, timeout_s=60)  # fmt: skip
    (after,) = second.states.values()
    assert len(after.parts) == 5
    assert dict(before.parts) == parts_before and len(before.parts) == 2  # not mutated


def test_a_dead_letter_of_a_record_near_the_message_limit_fits_the_dlq() -> None:
    big = bytes(range(256)) * (999_000 // 256)
    d = DeadLetter(reason="oversize", detail="x" * 10_000, source=Source(topic="u", partition=1,
                   offset=7), key=b"k" * 5000, payload=big, tenant="acme")  # fmt: skip
    key, value, headers = dlq_record(d, now_ms=1_700_000_000_000)
    assert len(value) + len(key or b"") < KAFKA_MESSAGE_MAX
    name, out = decode_payload(value)
    assert name == "dead_letter"
    assert out["payload"] == big[:MAX_DLQ_PAYLOAD]
    assert out["attributes"]["payload_truncated"] == "true"
    assert out["attributes"]["payload_bytes"] == str(len(big))
    assert out["attributes"]["key_bytes"] == "5000" and len(out["record_key"]) == 1024
    assert len(out["detail"]) == 2000 and dict(headers)["reason"] == b"oversize"
    # a small one is copied unchanged, with no attributes
    small = DeadLetter(reason="truncated", detail="", source=Source(topic="u", partition=0,
                       offset=1), key=b"k", payload=b"\x00\x01")  # fmt: skip
    _, out = decode_payload(dlq_record(small, now_ms=1)[1])
    assert out["payload"] == b"\x00\x01" and out["attributes"] == {}
