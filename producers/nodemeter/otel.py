"""OpenTelemetry integration (optional: ``opentelemetry-api``/``-sdk`` imported lazily).

- A request opened inside a traced operation records the trace id as its
  ``trace_id``, so usage joins traces (its request id stays its own: one trace
  can hold many requests).
- Usage recorded on a node span is also written to the current OTel span as
  ``gen_ai.usage.*`` attributes (GenAI semantic conventions).
- ``UsageSpanProcessor`` goes the other way: added to a ``TracerProvider``, it
  turns each ended span carrying ``gen_ai.usage.*`` attributes (from any GenAI
  instrumentation) into a usage event, with ids derived from the span so a
  re-exported span is the same event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nodemeter.errors import NodemeterError
from nodemeter.events import Meters, Status, UsageEvent, event_id_for, utcnow

if TYPE_CHECKING:
    from nodemeter.meter import Meter

log = logging.getLogger("nodemeter.otel")

# GenAI semantic-convention attribute names.
INPUT = "gen_ai.usage.input_tokens"
OUTPUT = "gen_ai.usage.output_tokens"
CACHE_READ = "gen_ai.usage.cache_read_input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation_input_tokens"
MODEL_ATTRS = ("gen_ai.response.model", "gen_ai.request.model")
PROVIDER_ATTRS = ("gen_ai.provider.name", "gen_ai.system")


def current_trace_id() -> str | None:
    """The active OTel trace id as 32 hex chars, or None (no OTel, no valid span)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}"


def annotate_current_span(meters: Meters, model: str | None, provider: str | None) -> None:
    """Add usage to the current OTel span as ``gen_ai.usage.*`` (no-op without one)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    # GenAI conventions count cached tokens inside input_tokens; nodemeter does not.
    span.set_attribute(INPUT, meters.input_tokens + meters.cached_input_tokens)
    span.set_attribute(OUTPUT, meters.output_tokens)
    if meters.cached_input_tokens:
        span.set_attribute(CACHE_READ, meters.cached_input_tokens)
    if meters.cache_write_tokens:
        span.set_attribute(CACHE_WRITE, meters.cache_write_tokens)
    if model:
        span.set_attribute("gen_ai.response.model", model)
    if provider:
        span.set_attribute("gen_ai.provider.name", provider)


def _int_attr(attrs: Mapping[str, Any], name: str) -> int:
    value = attrs.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_event_from_span(span: Any, *, tenant: str, workflow: str = "") -> UsageEvent | None:
    """A usage event for an ended OTel span with ``gen_ai.usage.*``; None without usage."""
    attrs: Mapping[str, Any] = span.attributes or {}
    total_in = _int_attr(attrs, INPUT)
    cached = min(_int_attr(attrs, CACHE_READ), total_in)
    meters = Meters(
        input_tokens=total_in - cached,
        output_tokens=_int_attr(attrs, OUTPUT),
        cached_input_tokens=cached,
        cache_write_tokens=_int_attr(attrs, CACHE_WRITE),
        api_calls=1,
    )
    if not (total_in or meters.output_tokens or meters.cache_write_tokens):
        return None
    ctx = span.context
    trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    parent = getattr(span, "parent", None)
    model = next((attrs[a] for a in MODEL_ATTRS if isinstance(attrs.get(a), str)), None)
    provider = next((attrs[a] for a in PROVIDER_ATTRS if isinstance(attrs.get(a), str)), None)
    status_code = getattr(getattr(span, "status", None), "status_code", None)
    failed = getattr(status_code, "name", "") == "ERROR"
    end_ns = getattr(span, "end_time", None)
    from datetime import UTC, datetime

    event_time = datetime.fromtimestamp(end_ns / 1e9, UTC) if end_ns else utcnow()
    return UsageEvent(
        event_id=event_id_for(tenant, trace_id, span_id, 0),
        tenant=tenant,
        request_id=trace_id,
        node_id=str(span.name)[:256],
        span_id=span_id,
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        workflow=workflow,
        model=model,
        provider=provider,
        meters=meters,
        status=Status.ERROR if failed else Status.OK,
        event_time=event_time,
        trace_id=trace_id,
        producer="nodemeter-otel",
    )


class UsageSpanProcessor:
    """An OTel ``SpanProcessor`` that emits a usage event for each GenAI span.

    The tenant comes from the span attribute ``tenant_attribute`` (default
    ``nodemeter.tenant``), else ``default_tenant``; spans with neither are skipped
    with a warning. Invalid usage is logged, never raised into the tracer.
    """

    def __init__(
        self,
        meter: Meter,
        *,
        default_tenant: str | None = None,
        tenant_attribute: str = "nodemeter.tenant",
        workflow: str = "",
    ) -> None:
        self.meter = meter
        self.default_tenant = default_tenant
        self.tenant_attribute = tenant_attribute
        self.workflow = workflow
        self.emitted = 0
        self.skipped = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def _on_ending(self, span: Any) -> None:
        # Called by opentelemetry-sdk >= 1.3x before on_end; duck typing keeps the
        # SDK an optional import, so this hook must exist here too.
        return None

    def on_end(self, span: Any) -> None:
        try:
            attrs = span.attributes or {}
            tenant = attrs.get(self.tenant_attribute) or self.default_tenant
            if not tenant:
                if any(k.startswith("gen_ai.usage.") for k in attrs):
                    self.skipped += 1
                    log.warning("nodemeter: GenAI span %r has no tenant; not metered", span.name)
                return
            event = usage_event_from_span(span, tenant=str(tenant), workflow=self.workflow)
            if event is None:
                return
            self.meter.emit(event)
            self.emitted += 1
        except NodemeterError as exc:
            self.skipped += 1
            log.error("nodemeter: span %r not metered: %s", getattr(span, "name", "?"), exc)
        except Exception:
            self.skipped += 1
            log.exception("nodemeter: span processor failed")

    def shutdown(self) -> None:
        self.meter.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.meter.flush(timeout_millis / 1000) == 0
