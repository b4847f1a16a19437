"""OpenTelemetry: GenAI spans become usage events (duck-typed spans, no OTel SDK needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_sdk_fakes import delivered_records, fake_meter

from nodemeter.events import RequestEnd, Status, UsageEvent, event_id_for, utcnow
from nodemeter.otel import UsageSpanProcessor, usage_event_from_span

TRACE, SPAN, PARENT = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 0x00F067AA0BA902B7


def fake_span(attrs: dict[str, Any], status: str = "UNSET") -> Any:
    return SimpleNamespace(
        name="chat gpt-4o",
        attributes=attrs,
        context=SimpleNamespace(trace_id=TRACE, span_id=SPAN),
        parent=SimpleNamespace(span_id=PARENT),
        status=SimpleNamespace(status_code=SimpleNamespace(name=status)),
        end_time=1_767_225_600_000_000_000,
    )


GENAI_READ = "gen_ai.usage.cache_read_input_tokens"
GENAI = {
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 80,
    "gen_ai.usage.cache_read_input_tokens": 1000,
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.system": "openai",
    "nodemeter.tenant": "acme",
}


@pytest.mark.parametrize(
    ("read", "creation"),
    [
        # current GenAI conventions (opentelemetry-semantic-conventions)
        ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens"),
        # older names some instrumentations still write
        ("gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.cache_creation_input_tokens"),
    ],
)
def test_span_to_event_counts_cached_tokens_once(read: str, creation: str) -> None:
    attrs = {**{k: v for k, v in GENAI.items() if k != GENAI_READ}, read: 1000, creation: 40}
    ev = usage_event_from_span(fake_span(attrs), tenant="acme")
    assert ev is not None
    assert ev.request_id == ev.trace_id == f"{TRACE:032x}" and ev.span_id == f"{SPAN:016x}"
    assert ev.parent_span_id == f"{PARENT:016x}"
    assert (ev.meters.input_tokens, ev.meters.cached_input_tokens) == (200, 1000)
    assert ev.meters.cache_write_tokens == 40
    assert ev.model == "gpt-4o" and ev.provider == "openai"
    assert ev.event_id == event_id_for("acme", ev.request_id, ev.span_id, 0)
    assert ev.event_time.year == 2026


def test_processor_emits_only_genai_spans_with_a_tenant(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    proc = UsageSpanProcessor(meter)
    proc.on_end(fake_span(GENAI, status="ERROR"))
    proc.on_end(fake_span({"http.method": "GET"}))  # not GenAI: ignored
    proc.on_end(fake_span({"gen_ai.usage.input_tokens": 5}))  # no tenant: skipped
    proc.on_end(
        fake_span(
            {
                **GENAI,
                "gen_ai.usage.input_tokens": -3,
                "gen_ai.usage.cache_read_input_tokens": 0,
                "gen_ai.usage.output_tokens": 0,
            }
        )
    )
    assert proc.force_flush()
    (ev, end) = delivered_records(producers)  # a span seen only at its end: its own request
    assert ev.status == Status.ERROR and proc.emitted == 1 and proc.skipped == 1
    assert isinstance(end, RequestEnd) and end.request_id == ev.request_id
    assert end.span_count == 1 and end.status == Status.ERROR


def test_real_otel_trace_id_becomes_trace_id_and_usage_lands_on_the_span(
    tmp_path: Path,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    meter, producers = fake_meter(tmp_path)
    assert meter.otel_enabled
    with tracer.start_as_current_span("handle") as outer, meter.request(tenant="acme") as root:
        trace_id = f"{outer.get_span_context().trace_id:032x}"
        with tracer.start_as_current_span("chat"), meter.node("answer", model="gpt-4o") as span:
            span.record(input_tokens=30, cached_input_tokens=70, output_tokens=5)
    meter.flush()
    assert root.request.request_id != trace_id and root.request.trace_id == trace_id
    (ev, end) = delivered_records(producers)
    assert ev.request_id == end.request_id == root.request.request_id
    assert ev.trace_id == trace_id
    chat = next(s for s in exporter.get_finished_spans() if s.name == "chat")
    assert chat.attributes["gen_ai.usage.input_tokens"] == 100  # OTel counts cached inside input
    assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] == 70
    assert chat.attributes["gen_ai.usage.output_tokens"] == 5


def test_real_otel_span_processor(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    meter, producers = fake_meter(tmp_path)
    meter.clock = utcnow  # real spans carry real end times
    provider = TracerProvider()
    provider.add_span_processor(UsageSpanProcessor(meter, default_tenant="acme"))
    tracer = provider.get_tracer("genai")
    with tracer.start_as_current_span("chat claude") as s:
        s.set_attribute("gen_ai.provider.name", "anthropic")
        s.set_attribute("gen_ai.request.model", "claude-sonnet-4-5")
        s.set_attribute("gen_ai.usage.input_tokens", 12)
        s.set_attribute("gen_ai.usage.output_tokens", 3)
        ctx = s.get_span_context()
    provider.force_flush()
    (ev, end) = delivered_records(producers)
    request_id = f"{ctx.trace_id:032x}-{ctx.span_id:016x}"  # trace + local root span
    assert ev.request_id == end.request_id == request_id and ev.span_id == f"{ctx.span_id:016x}"
    assert ev.trace_id == f"{ctx.trace_id:032x}" and end.span_count == 1
    assert (
        ev.provider == "anthropic" and ev.meters.input_tokens == 12 and ev.node_id == "chat claude"
    )


def test_requests_in_one_trace_get_their_own_request_and_event_ids(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    meter, producers = fake_meter(tmp_path)
    with tracer.start_as_current_span("http POST /summarize") as outer:
        trace_id = f"{outer.get_span_context().trace_id:032x}"
        for tokens in (100, 200, 300):
            with (
                meter.request(tenant="acme", workflow="summarize"),
                meter.node("llm", model="gpt-4o") as s,
            ):
                s.record(input_tokens=tokens)
    meter.flush()
    records = delivered_records(producers)
    usage = [r for r in records if isinstance(r, UsageEvent)]
    assert sorted(u.meters.input_tokens for u in usage) == [100, 200, 300]
    assert len({r.event_id for r in records}) == 6  # 3 usage events + 3 request ends
    assert len({u.request_id for u in usage}) == 3
    assert all(u.trace_id == trace_id and u.request_id != trace_id for u in usage)


def test_a_retry_is_the_same_request_id_a_rerun_a_new_one(tmp_path: Path) -> None:
    """Same request_id: same event ids (a resend, deduped). A new request_id (or
    leaving it unset): new ids, so an LLM call that really ran again is billed again."""
    meter, producers = fake_meter(tmp_path)
    for request_id in ("order-7", "order-7", "order-7.attempt-2"):
        with meter.request(tenant="acme", request_id=request_id), meter.node("llm") as s:
            s.record(input_tokens=10)
    meter.flush()
    ids = [r.event_id for r in delivered_records(producers) if isinstance(r, UsageEvent)]
    assert ids[0] == ids[1] != ids[2]


def _otel(tmp_path: Path, **processor: Any) -> tuple[Any, Any, Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    meter, producers = fake_meter(tmp_path)
    meter.clock = utcnow  # real spans carry real end times
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(UsageSpanProcessor(meter, default_tenant="acme", **processor))
    return meter, producers, provider.get_tracer("t"), exporter


def test_a_second_record_adds_on_the_otel_span(tmp_path: Path) -> None:
    meter, _, tracer, exporter = _otel(tmp_path)
    with (
        meter.request(tenant="acme"),
        tracer.start_as_current_span("chat"),
        meter.node("answer") as span,
    ):
        span.record(input_tokens=10, cached_input_tokens=5, output_tokens=1)
        span.record(input_tokens=20, cache_write_tokens=7, output_tokens=2)
    (chat,) = exporter.get_finished_spans()
    assert chat.attributes["gen_ai.usage.input_tokens"] == 35
    assert chat.attributes["gen_ai.usage.output_tokens"] == 3
    assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] == 5
    assert chat.attributes["gen_ai.usage.cache_creation.input_tokens"] == 7


def test_a_span_the_sdk_metered_is_not_metered_again(tmp_path: Path) -> None:
    meter, producers, tracer, _ = _otel(tmp_path)
    # the OTel span around the node gets the SDK's usage (and its mark)
    with (
        tracer.start_as_current_span("handle"),
        meter.request(tenant="acme"),
        tracer.start_as_current_span("chat"),
        meter.node("answer") as span,
    ):
        span.record(input_tokens=30, output_tokens=5)
    # a GenAI instrumentation's own span inside the node that records the same call
    with meter.request(tenant="acme"), meter.node("answer") as span:
        with tracer.start_as_current_span("chat gpt-4o") as s:
            s.set_attribute("gen_ai.usage.input_tokens", 40)
        span.record(input_tokens=40)
    meter.flush()
    usage = [r for r in delivered_records(producers) if isinstance(r, UsageEvent)]
    assert sorted(u.meters.input_tokens for u in usage) == [30, 40]
    assert {u.producer for u in usage} == {meter.config.producer_name}


def test_processor_requests_complete_with_their_span_count(tmp_path: Path) -> None:
    from opentelemetry import trace

    meter, producers, tracer, _ = _otel(tmp_path)
    sampled = trace.TraceFlags(trace.TraceFlags.SAMPLED)
    caller = trace.NonRecordingSpan(trace.SpanContext(TRACE, PARENT, True, sampled))
    for _ in range(2):  # two requests (local roots under a remote parent) in one trace
        with tracer.start_as_current_span("agent run", trace.set_span_in_context(caller)):
            for n in (3, 4):
                with tracer.start_as_current_span("chat") as s:
                    s.set_attribute("gen_ai.usage.input_tokens", n)
            with tracer.start_as_current_span("tool"):
                pass
    meter.flush()
    records = delivered_records(producers)
    ends = [r for r in records if isinstance(r, RequestEnd)]
    usage = [r for r in records if isinstance(r, UsageEvent)]
    assert len(usage) == 4 and len(ends) == 2
    assert [e.span_count for e in ends] == [2, 2]
    assert len({e.request_id for e in ends}) == 2 and len({u.event_id for u in usage}) == 4
    assert {u.trace_id for u in usage} == {f"{TRACE:032x}"}
    for end in ends:
        assert sum(u.request_id == end.request_id for u in usage) == end.span_count
        assert records.index(end) > max(
            records.index(u) for u in usage if u.request_id == end.request_id
        )
