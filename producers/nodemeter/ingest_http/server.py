"""The HTTP service: CloudEvents in, records out through ``Meter.emit_settled``.

    POST /v1/events   structured (application/cloudevents+json) or batched
                      (application/cloudevents-batch+json) CloudEvents
    GET  /healthz     200 while the process serves
    GET  /readyz      200 once the producer reached a broker, 503 before and while draining
    GET  /metrics     Prometheus text

A POST is checked in this order; the first failure answers: 401 (no or unknown key),
411 (no Content-Length), 413 (body over ``max_body_bytes``, or more than ``max_events``
events), 415 (not a CloudEvents JSON media type), 400 (not JSON of that shape), 429
(the key's token bucket cannot pay one token per event; ``Retry-After``). Then every
event is mapped and validated on its own (``cloudevents.map_events``); the valid ones
are sent, and the answer waits until each was acknowledged by Kafka (acks=all) or
appended to the spool and fsynced (``Meter.emit_settled``). The status is

    202  every event taken
    400  some event refused (the others were taken: see "accepted")
    403  every event refused because it names a tenant other than the key's
    503  some valid event was neither acknowledged nor spooled within ``ack_timeout_s``
         (``Retry-After: 1``; sending the request again is safe: same ids)

and the body always lists both sides::

    {"accepted": [{"index": 0, "id": "e1", "event_id": "...", "outcome": "delivered"}],
     "errors":   [{"index": 1, "id": "e2", "reason": "negative_quantity", "message": "..."}]}

Shutdown (``IngestService.shutdown``, SIGTERM in the CLI): /readyz turns 503, the
listener stops accepting, requests in flight finish (up to ``drain_timeout_s``), idle
keep-alive connections are closed, then the meter flushes and closes (what it could not
deliver is spooled).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nodemeter.errors import ConfigError, InvalidUsageError
from nodemeter.events import utcnow
from nodemeter.ingest_http import metrics as metrics_mod
from nodemeter.ingest_http.cloudevents import BodyError, Mapped, Refusal, map_events, parse_body
from nodemeter.ingest_http.keys import ApiKey, KeyRing, presented_key
from nodemeter.ingest_http.ratelimit import RateLimiter, retry_after
from nodemeter.meter import Meter, Settlement

log = logging.getLogger("nodemeter.ingest_http")

EVENTS_PATH = "/v1/events"
STORED: tuple[Settlement, ...] = ("delivered", "spooled")
_LINGER_BYTES = 8 * 1024 * 1024  # read away at most this much of a refused body


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """Service settings; validated when built (``ConfigError``)."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (tests)
    max_body_bytes: int = 1024 * 1024
    max_events: int = 1000  # per request
    rate: float = 1000.0  # events per second per key (a key's own "rate" wins)
    burst: int = 2000  # events (a key's own "burst" wins); at least max_events
    # how long a request waits for its records to be acknowledged or spooled; None:
    # the producer's delivery timeout + 5 s (librdkafka reports every record by then)
    ack_timeout_s: float | None = None
    drain_timeout_s: float = 30.0
    idle_timeout_s: float = 30.0  # a connection silent this long is closed
    ready_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, got {self.port}")
        for name in ("max_body_bytes", "max_events", "burst"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.burst < self.max_events:
            raise ConfigError(
                f"burst ({self.burst}) must be at least max_events ({self.max_events}): "
                "a full batch could never be paid for"
            )
        if not self.rate > 0:
            raise ConfigError(f"rate must be positive, got {self.rate!r}")
        for name in ("drain_timeout_s", "idle_timeout_s", "ready_interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if self.ack_timeout_s is not None and not self.ack_timeout_s > 0:
            raise ConfigError("ack_timeout_s must be positive")


@dataclass
class ShutdownReport:
    """What a shutdown left: requests cut at the drain deadline, records the producer
    still held after its flush (spooled by close), and the meter's totals."""

    cut_requests: int
    undelivered: int
    spooled: int
    lost: int


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # close the connection after answering (a body left unread)


class _Pending:
    """The settlements of one request's records; ``wait`` until all came."""

    def __init__(self) -> None:
        self.outcomes: dict[int, Settlement] = {}
        self.expected = 0
        self._cv = threading.Condition()

    def callback(self, index: int) -> Callable[[Settlement], None]:
        self.expected += 1

        def settle(outcome: Settlement) -> None:
            with self._cv:
                self.outcomes[index] = outcome
                if len(self.outcomes) >= self.expected:  # wake the request once, not per record
                    self._cv.notify_all()

        return settle

    def wait(self, timeout: float) -> dict[int, Settlement]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self.outcomes) < self.expected:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            return dict(self.outcomes)


def _error(status: int, reason: str, message: str, **kw: Any) -> Reply:
    return Reply(status, {"error": {"reason": reason, "message": message}}, **kw)


class IngestService:
    """The service around one ``Meter`` (made with ``report_successes=True``)."""

    def __init__(
        self,
        config: IngestConfig,
        keys: KeyRing,
        meter: Meter,
        *,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        if not meter.config.report_successes:
            raise ConfigError("ingest-http needs a Meter with report_successes=True")
        for key in keys.keys:
            if key.burst is not None and key.burst < config.max_events:
                raise ConfigError(
                    f"key {key.name!r}: burst {key.burst} is below max_events {config.max_events}"
                )
        self.config = config
        self.keys = keys
        self.meter = meter
        self.now = now
        self.metrics = metrics_mod.IngestMetrics()
        self.limiter = RateLimiter()
        self.ack_timeout_s = config.ack_timeout_s or meter.config.delivery_timeout_ms / 1000 + 5
        self._draining = threading.Event()
        self._stopped = threading.Event()
        self._broker_ok = False
        self._cv = threading.Condition()
        self._busy = 0
        self._conns: dict[_Handler, bool] = {}  # open connections -> busy
        self.server = _Server((config.host, config.port), _Handler)
        self.server.service = self
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def ready(self) -> bool:
        return self._broker_ok and not self._draining.is_set()

    def start(self) -> IngestService:
        for name, target in (("serve", self.server.serve_forever), ("ready", self._probe)):
            t = threading.Thread(target=target, name=f"nodemeter-ingest-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _probe(self) -> None:
        while not self._stopped.is_set():
            self._broker_ok = self.meter.broker_reachable(timeout=2.0)
            self._stopped.wait(self.config.ready_interval_s)

    def shutdown(self, *, flush_timeout: float = 10.0) -> ShutdownReport:
        """Drain and stop; see the module docstring. Idempotent enough: call once."""
        self._draining.set()
        if self._threads:  # started: serve_forever runs
            self.server.shutdown()  # returns once serve_forever stopped accepting
        deadline = time.monotonic() + self.config.drain_timeout_s
        with self._cv:
            while self._busy and time.monotonic() < deadline:
                self._cv.wait(max(0.0, min(0.2, deadline - time.monotonic())))
            cut = self._busy
            idle = [h for h, busy in self._conns.items() if not busy]
        for handler in idle:  # blocked reading the next request: wake them to close
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
        self._stopped.set()
        undelivered = self.meter.flush(flush_timeout)
        self.meter.close(timeout=flush_timeout)
        self.server.server_close()
        stats = self.meter.stats
        if cut:
            log.warning("ingest-http: %d requests still in flight at the drain deadline", cut)
        return ShutdownReport(cut, undelivered, stats.spooled, stats.lost)

    # --- connection bookkeeping (called by the handler) ------------------------------

    def _opened(self, handler: _Handler) -> None:
        with self._cv:
            self._conns[handler] = False

    def _closed(self, handler: _Handler) -> None:
        with self._cv:
            if self._conns.pop(handler, False):
                self._busy -= 1
                self._cv.notify_all()

    def _set_busy(self, handler: _Handler, busy: bool) -> None:
        with self._cv:
            if handler not in self._conns or self._conns[handler] == busy:
                return
            self._conns[handler] = busy
            self._busy += 1 if busy else -1
            self._cv.notify_all()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    # --- endpoints -----------------------------------------------------------------------

    def metrics_text(self) -> str:
        gauges = {
            "ready": ("1 once the producer reached a broker and not draining", float(self.ready())),
            "spooled_records": (
                "records in the spool waiting for replay",
                float(self.meter.spooled_records()),
            ),
        }
        return self.metrics.render(gauges, self.meter.stats.as_dict)

    def ingest(self, headers: Any, read_body: Callable[[int], bytes]) -> Reply:
        key = self._authenticate(headers)
        if key is None:
            return _error(
                401, "unauthorized", "send an API key: Authorization: Bearer KEY",
                headers={"WWW-Authenticate": 'Bearer realm="nodemeter"'}, close=True,
            )  # fmt: skip
        if headers.get("Transfer-Encoding"):
            return _error(
                411, "length_required", "send Content-Length (no chunked bodies)", close=True
            )
        try:
            length = int(headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            return _error(411, "length_required", "Content-Length is required", close=True)
        limit = self.config.max_body_bytes
        if length > limit:
            return _error(
                413, "body_too_large", f"body is {length} bytes; the limit is {limit}", close=True
            )
        body = read_body(length)
        if len(body) < length:
            return _error(400, "truncated_body", "the body ended before Content-Length", close=True)
        try:
            events = parse_body(
                body, headers.get("Content-Type"), max_events=self.config.max_events
            )
        except BodyError as exc:
            return _error(exc.status, exc.reason, str(exc))
        rate = key.rate or self.config.rate
        burst = key.burst or self.config.burst
        wait = self.limiter.take(key.name, max(1, len(events)), rate=rate, burst=burst)
        if wait > 0:
            self.metrics.count_events("rate_limited", len(events))
            return _error(
                429, "rate_limited",
                f"key {key.name!r} is limited to {rate:g} events/s (burst {burst})",
                headers={"Retry-After": str(retry_after(wait))},
            )  # fmt: skip
        return self._take(events, key)

    def _authenticate(self, headers: Any) -> ApiKey | None:
        presented = presented_key(headers)
        return self.keys.lookup(presented) if presented is not None else None

    def _take(self, events: list[Any], key: ApiKey) -> Reply:
        # validate_record runs once, in emit_settled (compiled when installed)
        mapped, refused = map_events(events, tenant=key.tenant, now=self.now, validate=False)
        pending = _Pending()
        sent: list[Mapped] = []
        for m in mapped:
            try:
                self.meter.emit_settled(m.record, pending.callback(m.index))
            except InvalidUsageError as exc:  # the rules of validate_record, future_event_time,
                pending.expected -= 1  # oversize once encoded, unknown_tenant
                refused.append(Refusal(m.index, m.ce_id, exc.reason, str(exc)))
                continue
            except (TypeError, ValueError) as exc:  # a value no rule foresaw: this event only
                pending.expected -= 1
                why = f"invalid ({type(exc).__name__}): {exc}"[:500]
                refused.append(Refusal(m.index, m.ce_id, "invalid_event", why))
                continue
            sent.append(m)
        outcomes = pending.wait(self.ack_timeout_s) if sent else {}
        accepted: list[dict[str, Any]] = []
        errors = [r.as_json() for r in sorted(refused, key=lambda r: r.index)]
        not_stored = 0
        for m in sent:
            outcome = outcomes.get(m.index)
            if outcome in STORED:
                accepted.append(
                    {"index": m.index, "id": m.ce_id, "event_id": m.record.event_id,
                     "outcome": outcome}
                )  # fmt: skip
                self.metrics.count_events(str(outcome))
                continue
            not_stored += 1
            self.metrics.count_events("not_stored")
            errors.append(
                {"index": m.index, "id": m.ce_id, "reason": "not_stored",
                 "message": "neither acknowledged by Kafka nor spooled "
                 + ("(spool failed)" if outcome == "lost" else f"within {self.ack_timeout_s:g} s")
                 + "; sending it again is safe (same event id)"}
            )  # fmt: skip
        for r in refused:
            self.metrics.count_refused(r.reason)
        errors.sort(key=lambda e: int(e["index"]))
        body = {"accepted": accepted, "errors": errors}
        if not_stored:
            return Reply(503, body, headers={"Retry-After": "1"})
        if refused:
            forbidden = not accepted and all(r.reason == "tenant_not_allowed" for r in refused)
            return Reply(403 if forbidden else 400, body)
        return Reply(202, body)


class _Server(ThreadingHTTPServer):
    service: IngestService
    daemon_threads = True  # the drain waits on requests, not on threads
    allow_reuse_address = True
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # headers and body go out in two writes: with Nagle, the body would wait for the
    # client's delayed ACK of the headers (~40 ms per request)
    disable_nagle_algorithm = True
    server_version = "nodemeter-ingest-http"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.service.config.idle_timeout_s)
        self.server.service._opened(self)

    def finish(self) -> None:
        self.server.service._closed(self)
        with contextlib.suppress(OSError):  # the client is gone: nothing left to flush
            super().finish()

    def parse_request(self) -> bool:
        self.server.service._set_busy(self, True)
        ok = super().parse_request()
        if self.server.service.draining:
            self.close_connection = True
        return ok

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except OSError:  # the client went away, or a read timed out mid-request
            self.close_connection = True
        finally:
            self.server.service._set_busy(self, False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(
        self, status: int, content_type: str, payload: bytes, headers: dict[str, str]
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.server.service.draining:  # this answer is the connection's last
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        self._send(status, "application/json", payload, headers or {})

    def _linger(self) -> None:
        """Answered without reading the body: read it away (bounded) before closing, or
        the kernel resets the connection and the client may never see the answer."""
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            left = _LINGER_BYTES
            while left > 0 and (chunk := self.rfile.read1(min(left, 65536))):
                left -= len(chunk)

    def do_GET(self) -> None:
        service = self.server.service
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._json(200, {"status": "ok"})
        elif path == "/readyz":
            ready = service.ready()
            why = "draining" if service.draining else ("ok" if ready else "no broker yet")
            self._json(200 if ready else 503, {"ready": ready, "status": why})
        elif path == "/metrics":
            text = service.metrics_text().encode()
            self._send(200, metrics_mod.CONTENT_TYPE, text, {})
        else:
            self._json(404, {"error": {"reason": "not_found", "message": f"no {path}"}})

    def do_POST(self) -> None:
        service = self.server.service
        if self.path.split("?", 1)[0] != EVENTS_PATH:
            self.close_connection = True  # its body is left unread
            self._json(404, {"error": {"reason": "not_found", "message": f"POST {EVENTS_PATH}"}})
            return
        t0 = time.perf_counter()
        service.metrics.started()
        status = 500
        try:
            try:
                reply = service.ingest(self.headers, self.rfile.read)
            except OSError:
                raise  # the client went away or stalled: nobody to answer
            except Exception as exc:  # a bug: say so, keep serving
                log.exception("ingest-http: error handling a request")
                reply = _error(500, "internal_error", type(exc).__name__, close=True)
            status = reply.status
            if reply.close:
                self.close_connection = True
            self._json(reply.status, reply.body, reply.headers)
            if reply.close:
                self._linger()
        finally:
            service.metrics.finished(status, time.perf_counter() - t0)
