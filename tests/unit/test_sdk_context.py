"""Context propagation: nested spans, threads, asyncio gather, decorators, ids, errors."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_sdk_fakes import delivered_records, fake_meter

from nodemeter.context import branch, current_span, propagate
from nodemeter.errors import InvalidUsageError, OversizeEventError
from nodemeter.events import RequestEnd, Status, UsageEvent, event_id_for, validate_record


def usage(records: list) -> list[UsageEvent]:
    return [r for r in records if isinstance(r, UsageEvent)]


def ends(records: list) -> list[RequestEnd]:
    return [r for r in records if isinstance(r, RequestEnd)]


def test_nested_spans_parents_and_request_end(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    with meter.request(tenant="acme", request_id="r1", workflow="rag") as root:
        with meter.node("retrieve") as a:
            a.record(api_calls=2, cpu_ms=7)
            with meter.node("rerank", model="bge") as b:
                b.record(gpu_ms=12, gpu_type="L4")
        with meter.node("answer", model="gpt-4o", provider="openai") as c:
            c.record(input_tokens=100, output_tokens=20)
            c.record(input_tokens=5, output_tokens=1)  # a second call in the same node
    meter.flush()
    recs = delivered_records(producers)
    ev = {(e.node_id, e.sequence): e for e in usage(recs)}
    assert set(ev) == {("retrieve", 0), ("rerank", 0), ("answer", 0), ("answer", 1)}
    assert ev[("retrieve", 0)].parent_span_id == root.span_id
    assert ev[("rerank", 0)].parent_span_id == ev[("retrieve", 0)].span_id
    assert ev[("rerank", 0)].meters.gpu_source.value == "MEASURED"
    assert ev[("answer", 1)].span_id == ev[("answer", 0)].span_id
    assert ev[("answer", 0)].model == "gpt-4o" and ev[("answer", 0)].workflow == "rag"
    assert all(e.branch_path == "" for e in ev.values())
    for e in ev.values():
        validate_record(e)
        assert e.event_id == event_id_for("acme", "r1", e.span_id, e.sequence)
    (end,) = ends(recs)
    assert end.span_count == 4 and end.status == Status.OK and end.root_span_id == root.span_id
    assert recs[-1] == end  # the end record is sent after every usage event
    assert current_span() is None


def test_same_request_rerun_gives_same_ids(tmp_path: Path) -> None:
    def run(meter) -> list[str]:
        with meter.request(tenant="acme", request_id="same"):
            for _ in range(2):
                with meter.node("step") as s:
                    s.record(cpu_ms=1)
        meter.flush()
        return sorted(r.event_id for r in delivered_records(producers))

    meter, producers = fake_meter(tmp_path / "a")
    first = run(meter)
    meter, producers = fake_meter(tmp_path / "b")
    second = run(meter)
    assert first == second and len(set(first)) == 3  # two spans + the end record


def test_asyncio_gather_branches_and_fan_in(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)

    @meter.node("llm.summarize", model="m")
    async def summarize(n: int) -> int:
        await asyncio.sleep(0.001 * (3 - n))  # finish in reverse order
        span = current_span()
        assert span is not None
        span.record(input_tokens=n + 1)
        with meter.node("post") as p:  # nested inside the branch: same branch path
            p.record(cpu_ms=1)
        return n

    async def main() -> None:
        async with meter.request(tenant="acme", request_id="r2"):
            with meter.node("plan") as s:
                s.record(cpu_ms=3)
            assert await asyncio.gather(*(summarize(i) for i in range(3))) == [0, 1, 2]
            with meter.node("merge") as s:  # after the fan-in: back on the root path
                s.record(cpu_ms=2)

    asyncio.run(main())
    meter.flush()
    recs = delivered_records(producers)
    ev = usage(recs)
    summ = sorted((e for e in ev if e.node_id == "llm.summarize"), key=lambda e: e.branch_path)
    assert [e.branch_path for e in summ] == ["1", "2", "3"]
    # tasks start in creation order, so branch n holds the n-th call
    assert [e.meters.input_tokens for e in summ] == [1, 2, 3]
    posts = {e.parent_span_id: e.branch_path for e in ev if e.node_id == "post"}
    assert posts == {e.span_id: e.branch_path for e in summ}
    assert {e.branch_path for e in ev if e.node_id in ("plan", "merge")} == {""}
    assert len({e.event_id for e in ev}) == len(ev) == 8
    assert ends(recs)[0].span_count == 8


def test_threads_get_branches_with_propagate(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    barrier = threading.Barrier(4)

    def work(i: int) -> str:
        barrier.wait()  # all four run at once
        with meter.node("tool", attributes={"i": str(i)}) as s:
            s.record(api_calls=1, custom={"pages": i})
            return s.branch_path

    with meter.request(tenant="acme", request_id="r3"), ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(propagate(work), range(4)))
    meter.flush()
    assert sorted(paths) == ["1", "2", "3", "4"]
    ev = usage(delivered_records(producers))
    assert sorted(e.meters.custom["pages"] for e in ev) == [0, 1, 2, 3]
    assert len({e.span_id for e in ev}) == 4
    assert ends(delivered_records(producers))[0].span_count == 4


def test_thread_without_propagate_is_a_clear_error(tmp_path: Path) -> None:
    meter, _ = fake_meter(tmp_path)
    caught: list[BaseException] = []

    def work() -> None:
        try:
            with meter.node("x"):
                pass
        except InvalidUsageError as exc:
            caught.append(exc)

    with meter.request(tenant="acme"):
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert len(caught) == 1 and "propagate" in str(caught[0])


def test_explicit_branch_keys(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    with meter.request(tenant="acme", request_id="r4"):
        for key in ("en", "de"):
            with branch(key), meter.node("translate") as s:
                s.record(output_tokens=3)
    meter.flush()
    ev = usage(delivered_records(producers))
    assert sorted(e.branch_path for e in ev) == ["de", "en"]


def test_sync_decorator_and_exception_emits_partial_usage_with_error(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)

    @meter.node("flaky")
    def flaky() -> None:
        span = current_span()
        assert span is not None
        span.record(input_tokens=40)
        raise RuntimeError("model timed out")

    with pytest.raises(RuntimeError), meter.request(tenant="acme", request_id="r5"):
        flaky()
    meter.flush()
    recs = delivered_records(producers)
    (ev,) = usage(recs)
    assert ev.status == Status.ERROR and ev.meters.input_tokens == 40
    (end,) = ends(recs)
    assert end.status == Status.ERROR and end.span_count == 1


def test_non_billable_warmup(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    with meter.request(tenant="acme"):
        with meter.node("load_model", billable=False, non_billable_reason="cold_start") as s:
            s.record(gpu_ms=900, gpu_source="ESTIMATED")
        with meter.node("warmup") as s:
            s.mark_non_billable("warmup")
            s.record(gpu_ms=50)
    meter.flush()
    ev = {e.node_id: e for e in usage(delivered_records(producers))}
    assert not ev["load_model"].billable and ev["load_model"].non_billable_reason == "cold_start"
    assert ev["load_model"].meters.gpu_source.value == "ESTIMATED"
    assert not ev["warmup"].billable and ev["warmup"].non_billable_reason == "warmup"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"input_tokens": -1}, "negative_quantity"),
        ({"output_tokens": 10**12}, "absurd_quantity"),
        ({"cpu_ms": 1.5}, "invalid_quantity"),
        ({"custom": {"Bad Name": 1}}, "invalid_meter"),
        ({"gpu_ms": 5, "gpu_source": "GUESSED"}, "invalid_gpu_source"),
    ],
)
def test_bad_quantities_raise_at_the_call_site(tmp_path: Path, kwargs: dict, reason: str) -> None:
    meter, producers = fake_meter(tmp_path)
    with meter.request(tenant="acme"), meter.node("n") as s:
        with pytest.raises(InvalidUsageError) as info:
            s.record(**kwargs)
        assert info.value.reason == reason
    meter.flush()
    assert usage(delivered_records(producers)) == []  # nothing half-recorded


def test_missing_tenant_oversize_attributes_and_no_request(tmp_path: Path) -> None:
    meter, _ = fake_meter(tmp_path)
    with pytest.raises(InvalidUsageError) as info:
        meter.request(tenant="")
    assert info.value.reason == "missing_tenant"
    with pytest.raises(OversizeEventError):
        meter.node("n", attributes={"k": "v" * 5000})
    with pytest.raises(InvalidUsageError) as info, meter.node("orphan"):
        pass
    assert info.value.reason == "no_request"
