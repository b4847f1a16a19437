"""Request and node spans carried in ``contextvars``.

    with meter.request(tenant="acme", workflow="rag"):          # root span
        with meter.node("retrieve") as span:                     # child span
            span.record(api_calls=1, cpu_ms=12)
        await asyncio.gather(summarize(a), summarize(b))          # two branches

    @meter.node("llm.summarize", model="gpt-4o")                 # decorator, sync or async
    async def summarize(doc): ...

Usage recorded in a span is emitted when the span ends, one usage event per
``record()`` call (``sequence`` 0, 1, ...), with status ERROR if the span
raised: partial usage is never dropped. The root emits a ``RequestEnd`` last,
carrying how many usage events the whole request emitted, across all branches.

Branches: an asyncio task or a thread that opens a node under a span opened in
another task/thread gets its own branch path (parent path + ".N"); nodes after
the fan-in continue on the parent's path. Threads do not inherit contextvars:
wrap their target with :func:`propagate`. ``branch(key)`` names a branch
explicitly, which keeps span ids stable across retries even when the scheduler
reorders parallel work.

Ids are deterministic: a span id is a hash of (request, parent span, branch
path, node id, occurrence), and the event id a hash of (tenant, request, span,
sequence), so re-running a request with the same request_id re-emits the same ids
(a resend, deduped). Without a request_id each request gets a fresh one (uuid4),
inside one OpenTelemetry trace too (the trace id goes to ``trace_id``); work that
really ran again (an LLM call retried) is a new request: give it a new request_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token, copy_context
from typing import TYPE_CHECKING, Any, TypeVar

from nodemeter.errors import InvalidUsageError, NodemeterError, OversizeEventError
from nodemeter.events import (
    MAX_EVENT_BYTES,
    GpuSource,
    Meters,
    RequestEnd,
    Status,
    UsageEvent,
    _check_id,
    event_id_for,
    request_end_id,
    validate_attributes,
    validate_meters,
    validate_tenant,
)
from nodemeter.otel import annotate_current_span, current_trace_id

if TYPE_CHECKING:
    from nodemeter.meter import Meter

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("nodemeter")

_span: ContextVar[Span | None] = ContextVar("nodemeter_span", default=None)
# (owner, path) of the branch the current thread/task runs in, set when it forks.
_branch: ContextVar[tuple[int, str] | None] = ContextVar("nodemeter_branch", default=None)


def _owner() -> int:
    """Identity of the running asyncio task, else of the thread."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        task = asyncio.current_task(loop)
        if task is not None:
            return id(task)
    return threading.get_ident()


def _hash16(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


# An upper bound of a usage event's encoded size, kept per span and checked whenever
# usage, attributes or ids are set: an oversize record fails at that call, never when
# its span ends. Avro writes a string as a varint length (<= 10 bytes) + its UTF-8;
# the rest (header, event id, numbers, enums, union and map tags) stays under 256 bytes.
_FIXED_BOUND = 256


def _text_bound(s: str | None) -> int:
    if not s:
        return 10
    return 10 + (len(s) if s.isascii() else len(s.encode()))


def _attrs_bound(attrs: Mapping[str, str]) -> int:
    return 10 + sum(_text_bound(k) + _text_bound(v) for k, v in attrs.items())


def _record_bound(meters: Meters, model: str | None, provider: str | None) -> int:
    """What one record() adds beyond its span: custom meters, gpu_type, model, provider."""
    size = _text_bound(meters.gpu_type) + _text_bound(model) + _text_bound(provider)
    for name in meters.custom:
        size += _text_bound(name) + 10
    return size


def _check_bound(size: int, what: str) -> None:
    if size > MAX_EVENT_BYTES:
        raise OversizeEventError(
            f"{what}: this span's usage events could reach {size} bytes encoded; "
            f"the limit is {MAX_EVENT_BYTES} (fewer or shorter attributes)"
        )


class _RequestState:
    __slots__ = (
        "attributes",
        "emitted",
        "lock",
        "meter",
        "request_id",
        "tenant",
        "trace_id",
        "workflow",
    )

    def __init__(
        self,
        meter: Meter,
        tenant: str,
        request_id: str,
        workflow: str,
        trace_id: str | None,
        attributes: Mapping[str, str],
    ) -> None:
        self.meter = meter
        self.tenant = tenant
        self.request_id = request_id
        self.workflow = workflow
        self.trace_id = trace_id
        self.attributes = attributes
        self.emitted = 0
        self.lock = threading.Lock()


class Span:
    """One node execution. Record usage on it; it is emitted when the span ends."""

    __slots__ = (
        "_attr_bound",
        "_base_bound",
        "_branches",
        "_lock",
        "_occurrences",
        "_record_bound",
        "_records",
        "attributes",
        "billable",
        "branch_path",
        "model",
        "node_id",
        "non_billable_reason",
        "owner",
        "parent_span_id",
        "provider",
        "request",
        "span_id",
        "status",
    )

    def __init__(
        self,
        request: _RequestState,
        node_id: str,
        span_id: str,
        parent_span_id: str | None,
        branch_path: str,
        *,
        model: str | None,
        provider: str | None,
        billable: bool,
        non_billable_reason: str | None,
        attributes: dict[str, str],
    ) -> None:
        self.request = request
        self.node_id = node_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.branch_path = branch_path
        self.model = model
        self.provider = provider
        self.billable = billable
        self.non_billable_reason = non_billable_reason
        self.attributes = attributes
        self.status = Status.OK
        self.owner = _owner()
        self._records: list[tuple[Meters, str | None, str | None]] = []
        self._occurrences: dict[tuple[str, str], int] = {}
        self._branches = 0
        self._lock = threading.Lock()
        # request and node attributes together: what each usage event carries
        merged = {**request.attributes, **attributes} if request.attributes else attributes
        validate_attributes(merged)
        self._attr_bound = _attrs_bound(merged)
        self._record_bound = 0
        self._base_bound = self._span_bound()
        _check_bound(self._base_bound + self._attr_bound, f"node {node_id!r}")

    def _span_bound(self) -> int:
        req = self.request
        return _FIXED_BOUND + sum(
            _text_bound(t)
            for t in (
                req.tenant, req.request_id, req.workflow, req.trace_id,
                req.meter.config.producer_name, self.node_id, self.span_id,
                self.parent_span_id, self.branch_path, self.model, self.provider,
                self.non_billable_reason,
            )
        )  # fmt: skip

    # --- recording ---------------------------------------------------------------------

    def record(
        self,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        gpu_ms: int = 0,
        gpu_type: str = "",
        gpu_source: GpuSource | str | None = None,
        cpu_ms: int = 0,
        api_calls: int = 0,
        custom: Mapping[str, int] | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> Meters:
        """Add one usage record (validated here: ``InvalidUsageError`` on bad input)."""
        if gpu_source is None:
            source = GpuSource.MEASURED if gpu_ms else GpuSource.NONE
        else:
            try:
                source = GpuSource(gpu_source)
            except ValueError:
                raise InvalidUsageError(
                    f"gpu_source must be one of {[s.value for s in GpuSource]}, got {gpu_source!r}",
                    reason="invalid_gpu_source",
                ) from None
        meters = Meters(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
            gpu_ms=gpu_ms,
            gpu_type=gpu_type,
            gpu_source=source,
            cpu_ms=cpu_ms,
            api_calls=api_calls,
            custom=dict(custom) if custom else {},
        )
        self.add(meters, model=model, provider=provider)
        return meters

    def add(self, meters: Meters, *, model: str | None = None, provider: str | None = None) -> None:
        """Add a ready ``Meters`` value as one usage record (validated here)."""
        if not isinstance(meters, Meters):
            raise InvalidUsageError(
                f"expected Meters, got {type(meters).__name__}", reason="invalid_meters"
            )
        validate_meters(meters)
        _check_id("model", model, required=False)
        _check_id("provider", provider, required=False)
        extra = _record_bound(meters, model, provider)
        with self._lock:
            if extra > self._record_bound:
                _check_bound(self._base_bound + self._attr_bound + extra, "record()")
                self._record_bound = extra
            self._records.append((meters, model, provider))
        if self.request.meter.otel_enabled:
            annotate_current_span(meters, model or self.model, provider or self.provider)

    def record_openai(self, response: Any) -> Meters:
        """Record the usage of an OpenAI-style response (object or dict)."""
        from nodemeter.integrations.openai import model_of, usage_from_openai

        meters = usage_from_openai(response)
        self.add(meters, model=model_of(response) or self.model, provider=self.provider or "openai")
        return meters

    def record_anthropic(self, response: Any) -> Meters:
        """Record the usage of an Anthropic-style response (object or dict)."""
        from nodemeter.integrations.anthropic import model_of, usage_from_anthropic

        meters = usage_from_anthropic(response)
        self.add(
            meters, model=model_of(response) or self.model, provider=self.provider or "anthropic"
        )
        return meters

    @contextmanager
    def gpu_timer(self, *, gpu_type: str = "", fallback: str = "none") -> Iterator[Any]:
        """Time GPU work in this block with CUDA events and record it as gpu_ms.

        Without torch/CUDA nothing is recorded unless ``fallback="wall"``, which
        records wall-clock time marked ESTIMATED; the reason is logged once.
        """
        from nodemeter.gpu import GpuTimer

        timer = GpuTimer(fallback=fallback)
        with timer:
            yield timer
        if timer.elapsed_ms:
            self.record(
                gpu_ms=timer.elapsed_ms,
                gpu_type=gpu_type or timer.gpu_type,
                gpu_source=timer.source,
            )

    def set_attribute(self, key: str, value: str) -> None:
        attrs = {**self.attributes, key: value}
        validate_attributes(attrs)
        req_attrs = self.request.attributes
        merged = {**req_attrs, **attrs} if req_attrs else attrs
        validate_attributes(merged)  # together within the limits, as the worker checks
        bound = _attrs_bound(merged)
        with self._lock:
            _check_bound(self._base_bound + self._record_bound + bound, f"attribute {key!r}")
            self._attr_bound = bound
            self.attributes = attrs

    def mark_non_billable(self, reason: str) -> None:
        """Warm-up, cold start and similar work: emitted, but not charged."""
        _check_id("non_billable_reason", reason)
        with self._lock:
            old = self.non_billable_reason
            self.non_billable_reason = reason
            base = self._span_bound()
            if base + self._attr_bound + self._record_bound > MAX_EVENT_BYTES:
                self.non_billable_reason = old
                _check_bound(base + self._attr_bound + self._record_bound, "non_billable_reason")
            self._base_bound = base
            self.billable = False

    def mark_status(self, status: Status | str) -> None:
        self.status = Status(status)

    @property
    def records(self) -> list[Meters]:
        return [m for m, _, _ in self._records]

    # --- structure -----------------------------------------------------------------------

    def _child_span_id(self, node_id: str, branch_path: str) -> str:
        with self._lock:
            n = self._occurrences.get((branch_path, node_id), 0)
            self._occurrences[(branch_path, node_id)] = n + 1
        return _hash16(self.request.request_id, self.span_id, branch_path, node_id, str(n))

    def _next_branch(self) -> int:
        with self._lock:
            self._branches += 1
            return self._branches

    # --- emission --------------------------------------------------------------------------

    def _finish(self, failed: bool) -> None:
        if not self._records:
            return
        req = self.request
        status = Status.ERROR if failed else self.status
        now = req.meter.clock()
        producer = req.meter.config.producer_name
        attrs = {**req.attributes, **self.attributes} if req.attributes else self.attributes
        sent, errors = 0, []
        for seq, (meters, model, provider) in enumerate(self._records):
            event = UsageEvent(
                event_id=event_id_for(req.tenant, req.request_id, self.span_id, seq),
                tenant=req.tenant,
                request_id=req.request_id,
                node_id=self.node_id,
                span_id=self.span_id,
                parent_span_id=self.parent_span_id,
                branch_path=self.branch_path,
                workflow=req.workflow,
                model=model or self.model,
                provider=provider or self.provider,
                sequence=seq,
                meters=meters,
                status=status,
                billable=self.billable,
                non_billable_reason=self.non_billable_reason,
                event_time=now,
                attributes=attrs,
                trace_id=req.trace_id,
                producer=producer,
            )
            # Ids, meters, attributes and the size bound were checked when they were set.
            try:
                req.meter.emit_validated(event)
            except NodemeterError as exc:  # one bad record must not drop the others
                errors.append(exc)
                continue
            sent += 1
        with req.lock:
            req.emitted += sent
        if errors:
            if failed:  # the caller's own exception is on its way out: do not replace it
                log.error("nodemeter: %d usage record(s) of %r not sent: %s", len(errors),
                          self.node_id, errors[0])  # fmt: skip
            else:
                raise errors[0]


def current_span() -> Span | None:
    """The innermost open span in this context, or None outside a request."""
    return _span.get()


def _require_span() -> Span:
    span = _span.get()
    if span is None:
        raise InvalidUsageError(
            "no active request: open one with `with meter.request(tenant=...)` first "
            "(threads: wrap the target with nodemeter.propagate)",
            reason="no_request",
        )
    return span


def _branch_path_for(parent: Span) -> str:
    """The branch path a span opened now under ``parent`` belongs to."""
    owner = _owner()
    current = _branch.get()
    if current is not None and current[0] == owner:
        return current[1]
    if parent.owner == owner:
        return parent.branch_path
    # First span of a new task/thread under a parent opened elsewhere: a new branch.
    n = parent._next_branch()
    path = f"{parent.branch_path}.{n}" if parent.branch_path else str(n)
    _branch.set((owner, path))
    return path


@contextmanager
def branch(key: str | int) -> Iterator[str]:
    """Run the block in an explicitly named branch of the current span."""
    parent = _require_span()
    label = str(key)
    if not label or "." in label or len(label) > 64:
        raise InvalidUsageError(
            "branch key must be 1-64 chars without '.'", reason="invalid_branch"
        )
    path = f"{parent.branch_path}.{label}" if parent.branch_path else label
    token = _branch.set((_owner(), path))
    try:
        yield path
    finally:
        _branch.reset(token)


def propagate(fn: F) -> F:
    """Wrap a thread target so it runs in (a copy of) the caller's context."""
    ctx = copy_context()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        # A Context can be entered by one thread at a time: copy per call.
        return ctx.copy().run(fn, *args, **kwargs)

    return run  # type: ignore[return-value]


def _clean_attrs(attributes: Mapping[str, str] | None) -> dict[str, str]:
    if not attributes:
        return {}
    attrs = dict(attributes)
    validate_attributes(attrs)
    return attrs


class _Scope:
    """Shared enter/exit for node and request scopes (sync and async)."""

    _token: Token[Span | None] | None
    _span_obj: Span | None

    def _open(self) -> Span:  # pragma: no cover - overridden
        raise NotImplementedError

    def _close(self, span: Span, failed: bool) -> None:
        span._finish(failed)

    def __enter__(self) -> Span:
        span = self._open()
        self._span_obj = span
        self._token = _span.set(span)
        return span

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        span, token = self._span_obj, self._token
        self._span_obj = self._token = None
        if token is not None:
            # ValueError: exited in another Context than entered (e.g. a generator that
            # moved between tasks); that Context dies with its task, nothing to restore.
            with contextlib.suppress(ValueError):
                _span.reset(token)
        if span is not None:
            self._close(span, exc_type is not None)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


class NodeScope(_Scope):
    """``meter.node(...)``: a context manager (sync/async) and a decorator (sync/async)."""

    def __init__(
        self,
        node_id: str,
        *,
        model: str | None = None,
        provider: str | None = None,
        billable: bool = True,
        non_billable_reason: str | None = None,
        attributes: Mapping[str, str] | None = None,
        span_id: str | None = None,
    ) -> None:
        _check_id("node_id", node_id)
        _check_id("model", model, required=False)
        _check_id("provider", provider, required=False)
        _check_id("span_id", span_id, required=False)
        if not billable and not non_billable_reason:
            non_billable_reason = "non_billable"
        self.node_id = node_id
        self.model = model
        self.provider = provider
        self.billable = billable
        self.non_billable_reason = non_billable_reason
        self.attributes = _clean_attrs(attributes)
        self.span_id = span_id
        self._token = None
        self._span_obj = None

    def _open(self) -> Span:
        parent = _require_span()
        path = _branch_path_for(parent)
        span_id = self.span_id or parent._child_span_id(self.node_id, path)
        return Span(
            parent.request,
            self.node_id,
            span_id,
            parent.span_id,
            path,
            model=self.model,
            provider=self.provider,
            billable=self.billable,
            non_billable_reason=self.non_billable_reason,
            attributes=dict(self.attributes),
        )

    def _fresh(self) -> NodeScope:
        scope = object.__new__(NodeScope)
        scope.__dict__.update(self.__dict__)
        scope._token = None
        scope._span_obj = None
        return scope

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await fn(*args, **kwargs)

            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class RequestScope(_Scope):
    """``meter.request(...)``: the root span of one request; emits ``RequestEnd`` on exit."""

    def __init__(
        self,
        meter: Meter,
        *,
        tenant: str,
        request_id: str | None = None,
        workflow: str = "",
        node_id: str = "request",
        attributes: Mapping[str, str] | None = None,
        trace_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> None:
        validate_tenant(tenant)
        meter.check_tenant(tenant)
        _check_id("request_id", request_id, required=False)
        _check_id("workflow", workflow, required=False)
        _check_id("node_id", node_id)
        _check_id("trace_id", trace_id, required=False)
        self.meter = meter
        self.tenant = tenant
        self.request_id = request_id
        self.workflow = workflow
        self.node_id = node_id
        self.attributes = _clean_attrs(attributes)
        self.trace_id = trace_id
        self.model = model
        self.provider = provider
        self._token = None
        self._span_obj = None

    def _open(self) -> Span:
        trace_id = self.trace_id
        if trace_id is None and self.meter.otel_enabled:
            trace_id = current_trace_id()
        # Never the trace id: a trace can hold many requests, and ids derive from it.
        request_id = self.request_id or uuid.uuid4().hex
        state = _RequestState(
            self.meter, self.tenant, request_id, self.workflow, trace_id, self.attributes
        )
        return Span(
            state,
            self.node_id,
            _hash16(request_id, "__root__"),
            None,
            "",
            model=self.model,
            provider=self.provider,
            billable=True,
            non_billable_reason=None,
            attributes={},
        )

    def _close(self, span: Span, failed: bool) -> None:
        try:
            span._finish(failed)
        finally:
            req = span.request
            end = RequestEnd(
                event_id=request_end_id(req.tenant, req.request_id),
                tenant=req.tenant,
                request_id=req.request_id,
                root_span_id=span.span_id,
                span_count=req.emitted,
                event_time=req.meter.clock(),
                workflow=req.workflow,
                status=Status.ERROR if failed else span.status,
                attributes=dict(req.attributes),
            )
            req.meter.emit_validated(end)
