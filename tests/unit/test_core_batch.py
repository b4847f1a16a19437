"""Batch planning and insert tokens (pure)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from nodemeter.codec import encode_record
from nodemeter.events import Meters, RequestEnd, UsageEvent, event_id_for, request_end_id
from nodemeter_stream.ingest.decode import Classified, Source, classify
from nodemeter_stream.ingest.dedupe import needs_lookup
from nodemeter_stream.ingest.merge import RequestState
from nodemeter_stream.ingest.plan import (
    BatchPlan,
    BatchPolicy,
    plan_batch,
    plan_sweep,
)
from nodemeter_stream.sink.tokens import content_token, offsets_token

T = datetime(2026, 11, 1, tzinfo=UTC)


def ev(req: str, span: str, tokens: int = 1) -> UsageEvent:
    return UsageEvent(
        event_id=event_id_for("acme", req, span, 0),
        tenant="acme",
        request_id=req,
        node_id="llm",
        span_id=span,
        event_time=T,
        meters=Meters(input_tokens=tokens),
    )


def end(req: str, n: int) -> RequestEnd:
    return RequestEnd(
        event_id=request_end_id("acme", req),
        tenant="acme",
        request_id=req,
        root_span_id="root",
        span_count=n,
        event_time=T,
    )


def items(raws: list[bytes], *, partition: int = 0, start: int = 0) -> list[Classified]:
    return [
        classify(r, key=b"k", source=Source(topic="u", partition=partition, offset=start + i))
        for i, r in enumerate(raws)
    ]


class FakeStore:
    """A fake of the worker's memory and of ClickHouse's event index: states and stored
    positions applied after a 'write' (the batch's effects)."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], tuple[str, int, int]] = {}
        self.states: dict[str, RequestState] = {}

    def commit(self, plan: BatchPlan) -> None:
        for rec, a in plan.usage_to_insert():
            self.stored[(rec.tenant, rec.event_id)] = (
                a.source.topic,
                a.source.partition,
                a.source.offset,
            )
        self.states.update(plan.states)

    def plan(self, batch: list[Classified], now_ms: int = 1000, timeout_s: float = 60, *,
             looked_up: bool = True) -> BatchPlan:  # fmt: skip
        return plan_batch(
            batch,
            get_state=self.states.get,
            stored=self.stored if looked_up else {},
            now_ms=now_ms,
            timeout_s=timeout_s,
        )


def test_plan_splits_dead_letters_fresh_and_duplicates_and_closes_complete_requests() -> None:
    store = FakeStore()
    raws = [
        encode_record(ev("r1", "a")),
        b"junk",
        encode_record(ev("r1", "a")),
        encode_record(end("r1", 1)),
    ]
    plan = store.plan(items(raws))
    assert [d.reason for d in plan.dead_letters] == ["truncated"]
    assert len(plan.fresh) == 2 and len(plan.duplicates) == 1
    (emission,) = plan.emissions
    assert emission.record.complete and emission.record.quantities["input_tokens"] == 1


def test_a_batch_re_applied_after_a_crash_is_fresh_but_not_inserted_again() -> None:
    store = FakeStore()
    batch = items([encode_record(ev("r1", "a")), encode_record(ev("r1", "b"))])
    first = store.plan(batch)
    # crash after the usage rows were stored, before the states were recorded: the
    # lookup finds the rows stored by these very records
    for rec, a in first.usage_to_insert():
        store.stored[(rec.tenant, rec.event_id)] = ("u", 0, a.source.offset)
    again = store.plan(batch)
    assert [a.record.event_id for a in again.fresh] == [a.record.event_id for a in first.fresh]
    assert again.usage_to_insert() == [] and again.states == first.states
    store.commit(again)
    # the same records once the states are recorded: duplicates, nothing to merge
    after = store.plan(batch)
    assert after.fresh == [] and len(after.duplicates) == 2 and after.states == {}


def test_an_event_stored_by_another_record_is_a_duplicate() -> None:
    store = FakeStore()
    a = ev("r1", "a", 3)
    store.commit(store.plan(items([encode_record(a)], start=0)))
    store.states.clear()  # the request left memory (retention); only ClickHouse knows
    plan = store.plan(items([encode_record(a)], start=50))
    assert plan.fresh == [] and len(plan.duplicates) == 1
    # without the lookup the plan would take it for new: the agent looks up old events
    assert len(store.plan(items([encode_record(a)], start=50), looked_up=False).fresh) == 1


def test_dedupe_is_per_tenant() -> None:
    store = FakeStore()
    mine = ev("r1", "a")
    theirs = dataclasses.replace(mine, tenant="globex")  # same event id, another tenant
    store.commit(store.plan(items([encode_record(mine)])))
    plan = store.plan(items([encode_record(theirs)], start=10))
    assert [a.record.tenant for a in plan.fresh] == ["globex"] and plan.duplicates == []


def test_needs_lookup_only_for_events_older_than_memory_holds() -> None:
    now = 10_000_000
    assert not needs_lookup(now - 1_000, now_ms=now, window_s=600, skew_s=300)
    assert needs_lookup(now - 301_000, now_ms=now, window_s=600, skew_s=300)
    assert needs_lookup(now, now_ms=now, window_s=200, skew_s=300)  # window < skew: always


def test_sweep_times_out_open_requests_and_purges_old_closed_ones() -> None:
    store = FakeStore()
    store.commit(store.plan(items([encode_record(ev("r1", "a"))]), now_ms=1000))
    store.commit(
        store.plan(items([encode_record(ev("r2", "a")), encode_record(end("r2", 1))]), now_ms=1000)
    )
    sweep = plan_sweep(store.states.values(), now_ms=62_000, timeout_s=60, retention_s=120)
    assert [e.record.request_id for e in sweep.emissions] == ["r1"]
    assert not sweep.emissions[0].record.complete
    later = plan_sweep(store.states.values(), now_ms=1000 + 121_000, timeout_s=60, retention_s=120)
    assert [s.request_id for s in later.purge] == ["r2"]


def test_offsets_token_names_the_offsets_it_covers() -> None:
    srcs = [Source(topic="u", partition=p, offset=o) for p, o in [(1, 7), (0, 3), (1, 5), (0, 4)]]
    assert offsets_token("usage_events", srcs) == "usage_events:u:0:3-4,u:1:5-7"
    assert offsets_token("usage_events", list(reversed(srcs))) == offsets_token(
        "usage_events", srcs
    )
    assert (
        content_token("t", ["b", "a"])
        == content_token("t", ["a", "b"])
        != content_token("t", ["a"])
    )


def test_batch_policy() -> None:
    p = BatchPolicy(max_size=3, max_wait_s=0.5)
    assert p.should_flush(size=3, age_s=0)
    assert not p.should_flush(size=2, age_s=0.1)
    assert p.should_flush(size=1, age_s=0.5)
    assert not p.should_flush(size=0, age_s=9)
    with pytest.raises(ValueError):
        BatchPolicy(max_size=0)
