"""OpenTelemetry integration (optional: ``opentelemetry-api``/``-sdk`` imported lazily).

- A request opened inside a traced operation records the trace id as its
  ``trace_id``, so usage joins traces (its request id stays its own: one trace
  can hold many requests).
- Usage recorded on a node span is also written to the current OTel span as
  ``gen_ai.usage.*`` attributes (GenAI semantic conventions), summed over the
  ``record()`` calls made while it is current, and marked ``nodemeter.metered``.
- ``UsageSpanProcessor`` goes the other way: added to a ``TracerProvider``, it
  turns each ended span carrying ``gen_ai.usage.*`` attributes (from any GenAI
  instrumentation) into a usage event, with ids derived from the span so a
  re-exported span is the same event. Spans the SDK meters (marked, or ended
  inside an open SDK node) are skipped: metered once. Each local root span
  (no parent, or a remote one) is a request: when it ends, a ``RequestEnd``
  counts the usage events of its spans, so the worker's merge completes it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nodemeter.errors import NodemeterError
from nodemeter.events import (
    Meters,
    RequestEnd,
    Status,
    UsageEvent,
    event_id_for,
    request_end_id,
    utcnow,
)

if TYPE_CHECKING:
    from nodemeter.meter import Meter

log = logging.getLogger("nodemeter.otel")

# GenAI semantic-convention attribute names.
INPUT = "gen_ai.usage.input_tokens"
OUTPUT = "gen_ai.usage.output_tokens"
# Current names (opentelemetry-semantic-conventions), then the older ones still emitted
# by some instrumentations. Written: the current ones; read: whichever is present.
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
CACHE_READ_NAMES = (CACHE_READ, "gen_ai.usage.cache_read_input_tokens")
CACHE_WRITE_NAMES = (CACHE_WRITE, "gen_ai.usage.cache_creation_input_tokens")
# Set on OTel spans the SDK wrote usage to: UsageSpanProcessor does not meter them again.
METERED = "nodemeter.metered"
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


# Usage written to each live OTel span so far: a second record() adds to the first.
_annotated: weakref.WeakKeyDictionary[Any, Meters] = weakref.WeakKeyDictionary()
_annotated_lock = threading.Lock()


def annotate_current_span(meters: Meters, model: str | None, provider: str | None) -> None:
    """Add usage to the current OTel span as ``gen_ai.usage.*`` (no-op without one)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    try:
        with _annotated_lock:
            total = _annotated.get(span)
            total = meters if total is None else total + meters
            _annotated[span] = total
    except TypeError:  # a span type that cannot be weakly referenced: this record only
        total = meters
    # GenAI conventions count cached tokens inside input_tokens; nodemeter does not.
    span.set_attribute(INPUT, total.input_tokens + total.cached_input_tokens)
    span.set_attribute(OUTPUT, total.output_tokens)
    if total.cached_input_tokens:
        span.set_attribute(CACHE_READ, total.cached_input_tokens)
    if total.cache_write_tokens:
        span.set_attribute(CACHE_WRITE, total.cache_write_tokens)
    span.set_attribute(METERED, True)
    if model:
        span.set_attribute("gen_ai.response.model", model)
    if provider:
        span.set_attribute("gen_ai.provider.name", provider)


def _int_attr(attrs: Mapping[str, Any], name: str) -> int:
    value = attrs.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _first_int_attr(attrs: Mapping[str, Any], names: tuple[str, ...]) -> int:
    return next((_int_attr(attrs, n) for n in names if n in attrs), 0)


def _end_time(span: Any) -> datetime:
    end_ns = getattr(span, "end_time", None)
    return datetime.fromtimestamp(end_ns / 1e9, UTC) if end_ns else utcnow()


def usage_event_from_span(
    span: Any, *, tenant: str, workflow: str = "", request_id: str | None = None
) -> UsageEvent | None:
    """A usage event for an ended OTel span with ``gen_ai.usage.*``; None without usage.

    ``request_id``: default the trace id (``UsageSpanProcessor`` passes its request's)."""
    attrs: Mapping[str, Any] = span.attributes or {}
    total_in = _int_attr(attrs, INPUT)
    cached = min(_first_int_attr(attrs, CACHE_READ_NAMES), total_in)
    meters = Meters(
        input_tokens=total_in - cached,
        output_tokens=_int_attr(attrs, OUTPUT),
        cached_input_tokens=cached,
        cache_write_tokens=_first_int_attr(attrs, CACHE_WRITE_NAMES),
        api_calls=1,
    )
    if not (total_in or meters.output_tokens or meters.cache_write_tokens):
        return None
    ctx = span.context
    trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    parent = getattr(span, "parent", None)
    model = next((attrs[a] for a in MODEL_ATTRS if isinstance(attrs.get(a), str)), None)
    provider = next((attrs[a] for a in PROVIDER_ATTRS if isinstance(attrs.get(a), str)), None)
    request_id = request_id or trace_id
    return UsageEvent(
        event_id=event_id_for(tenant, request_id, span_id, 0),
        tenant=tenant,
        request_id=request_id,
        node_id=str(span.name)[:256],
        span_id=span_id,
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        workflow=workflow,
        model=model,
        provider=provider,
        meters=meters,
        status=Status.ERROR if _failed(span) else Status.OK,
        event_time=_end_time(span),
        trace_id=trace_id,
        producer="nodemeter-otel",
    )


def _failed(span: Any) -> bool:
    status_code = getattr(getattr(span, "status", None), "status_code", None)
    return getattr(status_code, "name", "") == "ERROR"


class _OpenRequest:
    """A local root span's request: its span ids seen so far, usage events per tenant."""

    __slots__ = ("counts", "members", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.members: set[int] = set()
        self.counts: dict[str, int] = {}


class UsageSpanProcessor:
    """An OTel ``SpanProcessor`` that emits a usage event for each GenAI span.

    The tenant comes from the span attribute ``tenant_attribute`` (default
    ``nodemeter.tenant``), else ``default_tenant``; spans with neither are skipped
    with a warning. Invalid usage is logged, never raised into the tracer.

    Requests: each local root span (no parent, or a remote parent) is one request,
    id ``<trace id>-<root span id>``; when it ends, a ``RequestEnd`` per tenant
    counts the usage events of the spans under it. A span whose start the processor
    did not see (added mid-trace), or that ends after its root, is a request alone.
    Skipped as metered by the SDK: spans marked ``nodemeter.metered`` and spans that
    end while an SDK node is open (the node records that call's usage).
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
        self.already_metered = 0
        self._lock = threading.Lock()
        self._root_of: dict[int, int] = {}  # open span id -> its local root's span id
        self._open: dict[int, _OpenRequest] = {}  # local root span id -> its request

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        try:
            ctx = span.context
            parent = getattr(span, "parent", None)
            with self._lock:
                root = None
                if parent is not None and not getattr(parent, "is_remote", False):
                    root = self._root_of.get(parent.span_id)
                if root is None or root not in self._open:
                    root = ctx.span_id
                    self._open[root] = _OpenRequest(f"{ctx.trace_id:032x}-{root:016x}")
                self._root_of[ctx.span_id] = root
                self._open[root].members.add(ctx.span_id)
        except Exception:
            log.exception("nodemeter: span processor failed on start")

    def _request_of(self, span_id: int) -> tuple[int | None, _OpenRequest | None]:
        with self._lock:
            root = self._root_of.get(span_id)
            return root, (self._open.get(root) if root is not None else None)

    def _on_ending(self, span: Any) -> None:
        # Called by opentelemetry-sdk >= 1.3x before on_end; duck typing keeps the
        # SDK an optional import, so this hook must exist here too.
        return None

    def on_end(self, span: Any) -> None:
        try:
            span_id = span.context.span_id
            root, request = self._request_of(span_id)
            alone = request is None  # start not seen, or its root already ended
            if request is None:
                request = _OpenRequest(f"{span.context.trace_id:032x}-{span_id:016x}")
            try:
                self._meter_span(span, request)
            finally:
                if alone or root == span_id:
                    self._end_request(span, request)
        except Exception:
            self.skipped += 1
            log.exception("nodemeter: span processor failed")

    def _meter_span(self, span: Any, request: _OpenRequest) -> None:
        attrs = span.attributes or {}
        if not any(k.startswith("gen_ai.usage.") for k in attrs):
            return
        if attrs.get(METERED) or _inside_sdk_node():
            self.already_metered += 1
            return
        tenant = attrs.get(self.tenant_attribute) or self.default_tenant
        if not tenant:
            self.skipped += 1
            log.warning("nodemeter: GenAI span %r has no tenant; not metered", span.name)
            return
        try:
            event = usage_event_from_span(
                span, tenant=str(tenant), workflow=self.workflow, request_id=request.request_id
            )
            if event is None:
                return
            self.meter.emit(event)
        except NodemeterError as exc:
            self.skipped += 1
            log.error("nodemeter: span %r not metered: %s", getattr(span, "name", "?"), exc)
            return
        with self._lock:
            request.counts[event.tenant] = request.counts.get(event.tenant, 0) + 1
        self.emitted += 1

    def _end_request(self, root: Any, request: _OpenRequest) -> None:
        with self._lock:
            self._open.pop(root.context.span_id, None)
            for member in request.members:
                self._root_of.pop(member, None)
            counts = dict(request.counts)
        for tenant, count in counts.items():
            end = RequestEnd(
                event_id=request_end_id(tenant, request.request_id),
                tenant=tenant,
                request_id=request.request_id,
                root_span_id=f"{root.context.span_id:016x}",
                span_count=count,
                event_time=_end_time(root),
                workflow=self.workflow,
                status=Status.ERROR if _failed(root) else Status.OK,
            )
            try:
                self.meter.emit(end)
            except NodemeterError as exc:
                log.error("nodemeter: request %s not closed: %s", request.request_id, exc)

    def shutdown(self) -> None:
        self.meter.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.meter.flush(timeout_millis / 1000) == 0


def _inside_sdk_node() -> bool:
    """True while an SDK node (not only a request) is open in this context."""
    from nodemeter.context import current_span  # here: context imports this module

    span = current_span()
    return span is not None and span.parent_span_id is not None
