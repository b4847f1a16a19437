"""``Meter``: validates, encodes and sends usage records; never loses one.

    meter = Meter(MeterConfig(bootstrap_servers="127.0.0.1:19092"))
    with meter.request(tenant="acme", workflow="rag") as req:
        with meter.node("llm.answer", model="gpt-4o") as span:
            span.record(input_tokens=812, output_tokens=96)
    meter.close()

Delivery path: ``emit`` validates at the call site (typed ``InvalidUsageError``),
encodes, and hands the bytes to an idempotent confluent-kafka producer (acks=all,
key = tenant/request_id so a request's records share a partition and keep their
order). A background thread serves delivery reports; by default only failed
deliveries call back into Python (``delivery.report.only.error``; successes cost
no Python code). A record whose delivery failed for good, or that the local
queue could not take, is written to the on-disk spool with its exact bytes and
replayed later (same bytes, same event id) through a second producer that
reports every delivery, so a spool segment is deleted only once each of its
records was acknowledged. A fatal producer error (idempotence state lost)
rebuilds the producers.
Nothing from the background ever raises into the caller's thread; the counters
in ``Meter.stats`` and the ``nodemeter`` logger say what happened.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from nodemeter import __version__, fastcodec
from nodemeter.budget import BudgetCheck, BudgetView
from nodemeter.codec import encode_record, record_key
from nodemeter.context import NodeScope, RequestScope
from nodemeter.errors import (
    ConfigError,
    DeliveryError,
    InvalidUsageError,
    KafkaConnectionError,
    KafkaSecurityError,
    NodemeterError,
    OversizeEventError,
)
from nodemeter.events import MAX_EVENT_BYTES, Record, utcnow, validate_record
from nodemeter.fastcodec import Encoded
from nodemeter.kafka_security import KafkaSecurity, security_settings
from nodemeter.kafkalog import explain, security_of, with_logger
from nodemeter.redact import redact_mapping, redact_url
from nodemeter.spool import FSYNC_POLICIES, FsyncPolicy, Spool, default_spool_dir, read_segment

log = logging.getLogger("nodemeter")

PRODUCER_NAME = f"nodemeter-py/{__version__}"
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
# Settings that make delivery exactly-once per partition; a caller may not turn them off.
_PINNED = {"enable.idempotence": True, "acks": "all"}
# librdkafka setting (served by confluent-kafka's own callback trampoline): call the
# Python delivery callback for failed deliveries only. Owned by report_successes.
_ONLY_ERROR = "delivery.report.only.error"


def _tenants_from_env() -> frozenset[str] | None:
    raw = os.environ.get("NODEMETER_TENANTS", "").strip()
    return frozenset(t.strip() for t in raw.split(",") if t.strip()) if raw else None


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, kw_only=True)
class MeterConfig:
    """Producer and spool settings; validated when built (``ConfigError``)."""

    bootstrap_servers: str = field(
        default_factory=lambda: _env("NODEMETER_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    )
    topic: str = field(
        default_factory=lambda: _env("NODEMETER_TOPIC_PREFIX", "") + "nodemeter.usage.v1"
    )
    # the compacted budget-state topic that check_budget() reads (nodemeter.budget)
    budget_topic: str = field(
        default_factory=lambda: _env("NODEMETER_TOPIC_PREFIX", "") + "nodemeter.budget-state.v1"
    )
    client_id: str = "nodemeter-sdk"
    spool_dir: Path = field(default_factory=default_spool_dir)
    spool_fsync: FsyncPolicy = "batch"
    compression: str = "lz4"
    linger_ms: int = 5
    batch_bytes: int = 1_000_000
    delivery_timeout_ms: int = 30_000
    queue_max_messages: int = 500_000
    replay_interval_s: float = 5.0
    registry_url: str | None = field(
        default_factory=lambda: os.environ.get("NODEMETER_SCHEMA_REGISTRY_URL") or None
    )
    producer_name: str = PRODUCER_NAME
    otel: bool | None = None  # None: use OpenTelemetry when it is importable
    # TLS / SASL (nodemeter.kafka_security): NODEMETER_KAFKA_SECURITY_PROTOCOL and the rest
    # of NODEMETER_KAFKA_* / the NODEMETER_KAFKA_CONFIG file; producer_config wins over it
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity.from_env)
    producer_config: Mapping[str, Any] = field(default_factory=dict)
    # False (default): the main producer calls back into Python for failed deliveries
    # only; stats.delivered is then derived (see MeterStats). True: a callback per
    # record, as before (slower). Replay always reports every delivery.
    report_successes: bool = field(default_factory=lambda: _env_flag("NODEMETER_REPORT_SUCCESSES"))
    # Known tenants: usage for any other tenant is refused at the call site
    # (InvalidUsageError "unknown_tenant"). None: any valid tenant id.
    tenants: frozenset[str] | None = field(default_factory=lambda: _tenants_from_env())
    # usage dated further ahead of this host's clock is refused (future_event_time); the
    # worker applies the same rule against its own clock (worker --max-future-skew);
    # math.inf: no bound
    max_future_skew_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.bootstrap_servers or not isinstance(self.bootstrap_servers, str):
            raise ConfigError("bootstrap_servers is required, e.g. '127.0.0.1:19092'")
        if not self.topic or len(self.topic) > 249:
            raise ConfigError(f"topic must be 1-249 characters, got {self.topic!r}")
        if not self.max_future_skew_s >= 0:
            raise ConfigError(f"max_future_skew_s must be >= 0, got {self.max_future_skew_s!r}")
        if self.spool_fsync not in FSYNC_POLICIES:
            raise ConfigError(f"spool_fsync must be one of {FSYNC_POLICIES}")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"compression must be one of {COMPRESSIONS}")
        for name, lo, hi in (
            ("linger_ms", 0, 60_000),
            ("batch_bytes", 1, 100_000_000),
            ("delivery_timeout_ms", 1_000, 3_600_000),
            ("queue_max_messages", 1, 10_000_000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
        if not 0.05 <= self.replay_interval_s <= 3600:
            raise ConfigError("replay_interval_s must be between 0.05 and 3600 seconds")
        if self.registry_url is not None and not self.registry_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError("registry_url must be an http(s):// URL")
        if not isinstance(self.report_successes, bool):
            raise ConfigError("report_successes must be a bool")
        if not isinstance(self.kafka_security, KafkaSecurity):
            raise ConfigError("kafka_security must be a nodemeter.kafka_security.KafkaSecurity")
        for k in self.producer_config:
            if k == _ONLY_ERROR:
                raise ConfigError(f"{k} is set by report_successes, not producer_config")
            if k in _PINNED and self.producer_config[k] != _PINNED[k]:
                raise ConfigError(f"{k} is pinned to {_PINNED[k]!r}: delivery guarantees need it")

    def producer_conf(self, *, replay: bool = False) -> dict[str, Any]:
        """librdkafka settings; ``replay``: the spool replay's producer, which reports
        every delivery (its segments are deleted on acknowledgement)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "compression.type": self.compression,
            "linger.ms": self.linger_ms,
            "batch.size": self.batch_bytes,
            "delivery.timeout.ms": self.delivery_timeout_ms,
            "queue.buffering.max.messages": self.queue_max_messages,
            **self.kafka_security.librdkafka(),
        }
        conf.update(self.producer_config)
        conf.update(_PINNED)
        conf[_ONLY_ERROR] = not (self.report_successes or replay)
        return conf

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "producer_config":
                value = redact_mapping(value)
            elif f.name == "registry_url" and value is not None:
                value = redact_url(value)
            parts.append(f"{f.name}={value!r}")
        return f"MeterConfig({', '.join(parts)})"


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` the meter uses."""

    def produce(self, topic: str, value: bytes, key: bytes | None, on_delivery: Any) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...
    def purge(self, in_queue: bool = ..., in_flight: bool = ..., blocking: bool = ...) -> None: ...
    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...
    def __len__(self) -> int: ...


ProducerFactory = Callable[[dict[str, Any]], ProducerLike]


def confluent_producer(conf: dict[str, Any]) -> ProducerLike:
    from confluent_kafka import Producer

    return cast(ProducerLike, Producer(with_logger(conf)))


@dataclass
class MeterStats:
    """Counters; ``lost`` must stay 0 (a record neither delivered nor spooled).

    ``delivered``: records the main producer had acknowledged. With success reports
    (``report_successes=True``) each one is counted by its callback. Without them
    (the default) it is derived when read: ``produced - failed - in flight``, in
    flight being what the producer still holds (queued, unacknowledged or with a
    report not yet served: ``len(producer)``). Exact once ``flush()`` returned 0;
    while records are in flight the three numbers are read a moment apart, so it
    can be off by the few that moved in between. Replayed records count in
    ``replayed``, not here.
    """

    produced: int = 0
    acked: int = 0  # delivery reports of successes (report_successes=True only)
    failed: int = 0
    spooled: int = 0
    replayed: int = 0
    rebuilt: int = 0
    lost: int = 0
    # None: successes are reported (use ``acked``); else returns the records in flight.
    in_flight: Callable[[], int] | None = field(default=None, repr=False, compare=False)

    @property
    def delivered(self) -> int:
        if self.in_flight is None:
            return self.acked
        return max(0, self.produced - self.failed - self.in_flight())

    def as_dict(self) -> dict[str, int]:
        out = {"produced": self.produced, "delivered": self.delivered}
        for f in fields(self):
            if f.name not in ("produced", "acked", "in_flight"):
                out[f.name] = getattr(self, f.name)
        return out


class _SegmentReplay:
    """Outstanding replayed records of one spool segment; delete it when all are settled."""

    __slots__ = ("done_reading", "lock", "outstanding", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.outstanding = 0
        self.done_reading = False
        self.lock = threading.Lock()


_LIVE: weakref.WeakSet[Meter] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for meter in list(_LIVE):
        meter.close(timeout=5.0)


def _later(now: datetime, seconds: float) -> datetime | None:
    """``now`` + ``seconds``; None past the calendar (``inf``: no bound at all)."""
    try:
        return now + timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        return None


class Meter:
    """Owns one producer and one spool. Thread-safe; create one per process."""

    def __init__(
        self,
        config: MeterConfig | None = None,
        *,
        producer_factory: ProducerFactory | None = None,
        clock: Callable[[], datetime] = utcnow,
        encoder: Callable[[Record], bytes] | None = None,
        native: bool | None = None,
        background: bool = True,
    ) -> None:
        """``native``: None uses the compiled encoder (``nodemeter_native``) when it is
        installed, False forces the pure-Python path, True requires the compiled one
        (``ConfigError`` without it). A custom ``encoder`` or a registry uses Python."""
        self.config = config if config is not None else MeterConfig()
        self.clock = clock
        self.stats = MeterStats()
        if not self.config.report_successes:
            self.stats.in_flight = self._in_flight
        self._factory = producer_factory or confluent_producer
        self._registry: Any = None  # a RegistryEncoder when registry_url is set
        self._registry_ready = threading.Event()
        self._encode = encoder or self._default_encoder()
        self._validate_encode, self._encode_with_key = self._emit_codecs(encoder, native)
        # True when emit validates and encodes with the compiled extension
        self.native = fastcodec.NATIVE and self._validate_encode is fastcodec.validate_and_encode
        # Per-call constants of the hot path, looked up once.
        self._topic = self.config.topic
        self._tenants = self.config.tenants
        self._deliver = self._on_delivery  # one bound method for every produce()
        self._spool = Spool(self.config.spool_dir, fsync=self.config.spool_fsync)
        # Swapping the producer in a rebuild vs the replay path; emit does without it
        # (see _rebuilt_during_produce).
        self._plock = threading.Lock()
        self._slock = threading.Lock()  # guards stats updated from several threads
        # the producer's TLS / SASL settings (producer_config's included), for messages
        self._security = security_of(self.config.producer_conf())
        self._connection_error: KafkaSecurityError | None = None
        self._last_security_log = 0.0
        self._producer = self._new_producer()
        # The spool replay's own producer (every delivery reported), made on first use.
        self._replayer: ProducerLike | None = None
        self._rebuild = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._last_warn = 0.0
        self._otel = self._otel_enabled()
        if self._registry is not None:
            # emit never calls the registry: schemas are registered here, off the caller
            threading.Thread(
                target=self._register_schemas, name="nodemeter-registry", daemon=True
            ).start()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._service, name="nodemeter-delivery", daemon=True
            )
            self._thread.start()
        self._budget_view: BudgetView | None = None
        # a lower bound of now + max_future_skew_s (check_not_future refreshes it)
        self._not_after = _later(self.clock(), self.config.max_future_skew_s)
        _LIVE.add(self)

    # --- public API -------------------------------------------------------------------

    def emit(self, record: Record) -> None:
        """Validate (raising ``InvalidUsageError`` here), encode and send one record."""
        key, value = self._validate_encode(record)
        not_after = self._not_after  # a cached bound: the exact check only past it
        if not_after is not None and record.event_time > not_after:
            self.check_not_future(record)
        if self._tenants is not None:
            self.check_tenant(record.tenant)
        # _send, inlined: this is the hot path and a call frame costs ~4% of an emit.
        if len(value) > MAX_EVENT_BYTES:
            raise _oversize(value)
        if self._closed:
            self._to_spool(self._topic, key, value, "meter closed")
            return
        producer = self._producer
        try:
            producer.produce(self._topic, value, key, on_delivery=self._deliver)
        except Exception as exc:
            self._not_produced(self._topic, key, value, exc)
            return
        if producer is not self._producer:
            self._rebuilt_during_produce(self._topic, key, value)
        self.stats.produced += 1

    def check_not_future(self, record: Record) -> None:
        """Refuse a record dated more than ``max_future_skew_s`` after this host's clock:
        one such event would move its tenant's pricing watermark and close windows early
        (the worker dead-letters it too, as ``future_event_time``)."""
        # the cached bound is refreshed here, so the hot path compares one datetime
        self._not_after = _later(self.clock(), self.config.max_future_skew_s)
        if self._not_after is not None and record.event_time > self._not_after:
            raise InvalidUsageError(
                f"event_time {record.event_time.isoformat()} is more than "
                f"{self.config.max_future_skew_s:g} s ahead of this host's clock "
                f"({self.clock().isoformat()}); MeterConfig.max_future_skew_s",
                reason="future_event_time",
            )

    def check_tenant(self, tenant: str) -> None:
        """Refuse a tenant outside ``config.tenants`` (when that list is set)."""
        known = self._tenants
        if known is not None and tenant not in known:
            raise InvalidUsageError(
                f"unknown tenant {tenant!r}: not in MeterConfig.tenants / NODEMETER_TENANTS",
                reason="unknown_tenant",
            )

    def emit_validated(self, record: Record) -> None:
        """Send a record the caller already validated (the context API's fast path)."""
        key, value = self._encode_with_key(record)
        if len(value) > MAX_EVENT_BYTES:
            raise _oversize(value)
        self._send(self._topic, key, value)

    def send_bytes(self, key: bytes | None, value: bytes, *, topic: str | None = None) -> None:
        """Send already-encoded bytes; spooled when the producer cannot take them."""
        self._send(topic or self._topic, key, value)

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        if self._closed:
            self._to_spool(topic, key, value, "meter closed")
            return
        producer = self._producer
        try:
            producer.produce(topic, value, key, on_delivery=self._deliver)
        except Exception as exc:
            self._not_produced(topic, key, value, exc)
            return
        if producer is not self._producer:
            self._rebuilt_during_produce(topic, key, value)
        self.stats.produced += 1

    def emit_settled(self, record: Record, on_settled: Callable[[Settlement], None]) -> None:
        """``emit``, and then ``on_settled`` once the record is safe: ``"delivered"`` (the
        broker acknowledged it, acks=all), ``"spooled"`` (appended to the spool and
        fsynced), or ``"lost"`` (neither; ``stats.lost`` counts it). It is called once,
        from the delivery thread or from within this call, and must not block.

        ``InvalidUsageError`` is raised here, before anything is sent, as by ``emit``.
        librdkafka reports successes per producer, not per record, so this needs
        ``report_successes=True``; and ``spool_fsync="never"`` would make "spooled" a
        promise the disk does not keep. Either is a ``ConfigError``."""
        if not self.config.report_successes:
            raise ConfigError("emit_settled needs MeterConfig(report_successes=True)")
        if self.config.spool_fsync == "never":
            raise ConfigError("emit_settled needs a spool that fsyncs (spool_fsync != 'never')")
        key, value = self._validate_encode(record)
        self.check_not_future(record)
        if self._tenants is not None:
            self.check_tenant(record.tenant)
        if len(value) > MAX_EVENT_BYTES:
            raise _oversize(value)
        once = _Once(on_settled)
        topic = self._topic
        if self._closed:
            once(self._spool_settled(topic, key, value, "meter closed"))
            return
        producer = self._producer
        try:
            producer.produce(
                topic, value, key, on_delivery=functools.partial(self._on_settled_delivery, once)
            )
        except Exception as exc:
            if not isinstance(exc, BufferError):
                self._rebuild.set()  # KafkaException (fatal state), or anything unexpected
            once(self._spool_settled(topic, key, value, f"produce failed: {exc}"))
            return
        if producer is not self._producer:  # see _rebuilt_during_produce: spooled as well
            once(self._spool_settled(topic, key, value, "producer rebuilt during produce"))
        self.stats.produced += 1

    def _on_settled_delivery(self, once: _Once, err: Any, msg: Any) -> None:
        # Runs inside poll()/flush(); must never raise.
        try:
            if err is None:
                self.stats.acked += 1
                once("delivered")
                return
            with self._slock:
                self.stats.failed += 1
            if _is_fatal(err):
                self._rebuild.set()
            once(self._spool_settled(msg.topic(), msg.key(), msg.value(), str(err)))
        except Exception:
            log.exception("nodemeter: delivery callback failed")

    def _spool_settled(self, topic: str, key: bytes | None, value: bytes, why: str) -> Settlement:
        """Spool and fsync one record; "spooled" only once it is on disk."""
        try:
            self._spool.append(topic, key, value)
            self._spool.sync()
        except (DeliveryError, OSError) as exc:
            with self._slock:
                self.stats.lost += 1
            log.error("nodemeter: record LOST, neither delivered nor spooled (%s): %s", why, exc)
            return "lost"
        with self._slock:
            self.stats.spooled += 1
        self._warn(f"nodemeter: record spooled to {self._spool.directory} ({why})")
        return "spooled"

    def _rebuilt_during_produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        # No lock on the hot path (it cost ~5% of an emit). A rebuild swapped the producer
        # between our read and this check: the record may have gone into the old one after
        # its purge, so it is spooled too. At worst a duplicate (same bytes, same event id),
        # which the worker's dedupe drops; never a loss. Had the swap come after the check,
        # the old producer's purge would have returned the record through its callback.
        self._to_spool(topic, key, value, "producer rebuilt during produce")

    def _not_produced(self, topic: str, key: bytes | None, value: bytes, exc: Exception) -> None:
        if isinstance(exc, BufferError):
            self._to_spool(topic, key, value, "local producer queue full")
            return
        # KafkaException (fatal state), or anything unexpected
        self._rebuild.set()
        self._to_spool(topic, key, value, f"produce failed: {exc}")

    def request(self, *, enforce_budget: bool = False, **kwargs: Any) -> RequestScope:
        """A request (root span) context manager; see ``nodemeter.context.RequestScope``.

        ``enforce_budget=True``: first :meth:`check_budget` the request's tenant and
        workflow, and raise ``BudgetExceededError`` (before any work starts) when a
        hard limit says no."""
        if enforce_budget:
            tenant = kwargs.get("tenant")
            if isinstance(tenant, str):
                self.check_budget(
                    tenant, workflow=kwargs.get("workflow") or None
                ).raise_if_blocked()
        return RequestScope(self, **kwargs)

    def check_budget(self, tenant: str, workflow: str | None = None) -> BudgetCheck:
        """Allowed, or blocked with the budget and spend, from a local cache of the
        budget-state topic (``nodemeter.budget``: how stale it can be). Never blocks on
        Kafka; the first call starts the cache's background consumer."""
        view = self._budget_view
        if view is None:
            with self._plock:
                view = self._budget_view
                if view is None:
                    view = self._budget_view = BudgetView(
                        self.config.bootstrap_servers,
                        self.config.budget_topic,
                        # the producer's TLS / SASL settings, producer_config's included
                        consumer_config=security_settings(self.config.producer_conf()),
                    )
        return view.check(tenant, workflow=workflow)

    def node(self, node_id: str, **kwargs: Any) -> NodeScope:
        """A node span: context manager (sync/async) and decorator (sync/async)."""
        return NodeScope(node_id, **kwargs)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for outstanding deliveries (replayed ones too); returns how many are still
        in flight."""
        deadline = time.monotonic() + timeout
        remaining = int(self._producer.flush(timeout))
        replayer = self._replayer
        if replayer is not None:
            remaining += int(replayer.flush(max(0.0, deadline - time.monotonic())))
        self._spool.sync()
        if remaining and self._connection_error is not None:
            self._log_security(force=True)
        return remaining

    @property
    def connection_error(self) -> KafkaSecurityError | None:
        """The authentication or TLS failure the producer last reported (a wrong password,
        an untrusted certificate), with a message naming the cause; None if none.
        Records sent meanwhile wait in the producer, then in the spool: none is lost."""
        return self._connection_error

    def check_connection(self, timeout: float = 10.0) -> None:
        """Return once the broker answers; raise ``KafkaSecurityError`` as soon as it
        refuses the credentials or the TLS handshake fails, ``KafkaConnectionError`` when
        no broker answered within ``timeout`` seconds. ``emit`` never needs this (it
        spools while the broker is away); call it to fail fast at start."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            left = deadline - time.monotonic()
            try:
                md = self._producer.list_topics(
                    self.config.topic, timeout=max(0.05, min(0.5, left))
                )
                if getattr(md, "brokers", True):
                    self._connection_error = None
                    return
            except Exception as exc:
                last = exc
            if self._thread is None:  # no background thread serves the error callback
                self._producer.poll(0)
            if self._connection_error is not None:
                raise KafkaSecurityError(str(self._connection_error))
            if time.monotonic() >= deadline:
                raise KafkaConnectionError(
                    f"no Kafka broker answered at {self.config.bootstrap_servers} within "
                    f"{timeout:g} s ({self._security.describe()}): {last}"
                )

    def replay(self, *, check_broker: bool = True) -> int:
        """Send spooled records again (same bytes); returns how many were re-sent.

        Segments are deleted once every record in them was delivered or spooled again.
        """
        if check_broker and not self.broker_reachable():
            return 0
        sent = 0
        claimed = self._spool.claim()
        if claimed and self._replayer is None:
            replayer = self._new_producer(replay=True)
            with self._plock:
                self._replayer = replayer
        for path in claimed:
            seg = _SegmentReplay(path)
            for rec in read_segment(path):
                with seg.lock:
                    seg.outstanding += 1
                cb = functools.partial(self._on_replay_delivery, seg)
                self._produce_blocking(rec.topic, rec.key, rec.value, cb)
                sent += 1
            with seg.lock:
                seg.done_reading = True
                settled = seg.outstanding == 0
            if settled:
                self._spool.release(path)
        return sent

    def spooled_records(self) -> int:
        return self._spool.pending_records()

    def broker_reachable(self, timeout: float = 2.0) -> bool:
        try:
            md = self._producer.list_topics(self.config.topic, timeout=timeout)
        except Exception:
            return False
        return bool(getattr(md, "brokers", True))

    def close(self, timeout: float = 10.0) -> None:
        """Flush; whatever is still undelivered goes to the spool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._budget_view is not None:
            self._budget_view.close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for producer in (self._producer, self._replayer):
            if producer is not None:
                self._close_producer(producer, timeout)
        self._spool.close()
        _LIVE.discard(self)

    def _close_producer(self, producer: ProducerLike, timeout: float) -> None:
        if self._connection_error is not None:
            # the broker refuses us: waiting delivers nothing; the spool keeps the records
            timeout = min(timeout, 2.0)
        try:
            remaining = producer.flush(timeout)
            if remaining:
                # Purged messages come back through the delivery callback with an
                # error and are spooled; in-flight ones may still land too, which
                # the pipeline's event_id dedupe absorbs.
                producer.purge(in_queue=True, in_flight=True, blocking=True)
                producer.flush(1.0)
            # release librdkafka's connections now, not whenever the object is collected
            release = getattr(producer, "close", None)
            if callable(release):
                release()
        except Exception as exc:
            log.error("nodemeter: error while closing the producer: %s", exc)

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def otel_enabled(self) -> bool:
        return self._otel

    # --- internals ----------------------------------------------------------------------

    def _emit_codecs(
        self, encoder: Callable[[Record], bytes] | None, native: bool | None
    ) -> tuple[Callable[[Record], Encoded], Callable[[Record], Encoded]]:
        """(validate + encode + key, encode + key) for emit and emit_validated."""
        if encoder is None and not self.config.registry_url:
            if native is True and not fastcodec.NATIVE:
                raise ConfigError(
                    "native=True but the compiled encoder is not in use "
                    "(pip install ./producers/native; NODEMETER_NATIVE not 0)"
                )
            if native is False:
                return fastcodec.python_validate_and_encode, fastcodec.python_encode_with_key
            return fastcodec.validate_and_encode, fastcodec.encode_with_key
        if native:
            raise ConfigError("native=True does not combine with a custom encoder or a registry")
        encode = self._encode

        def validate_and_encode(record: Record) -> Encoded:
            validate_record(record)
            if self._tenants is not None:
                self.check_tenant(record.tenant)  # before encoding: a registry call may follow
            return record_key(record), encode(record)

        def encode_with_key(record: Record) -> Encoded:
            return record_key(record), encode(record)

        return validate_and_encode, encode_with_key

    def _default_encoder(self) -> Callable[[Record], bytes]:
        if not self.config.registry_url:
            return fastcodec.encode  # byte-identical to codec.encode_record, ~5x faster
        from nodemeter.errors import RegistryError
        from nodemeter.registry import RegistryEncoder

        registry = self._registry = RegistryEncoder(self.config.registry_url)

        def encode(record: Record) -> bytes:
            try:
                return registry.encode(record, block=False)
            except RegistryError as exc:
                # Not registered yet (the registry is slow, down or hangs): the record
                # must neither wait nor be lost. Send it in the default single-object
                # encoding, which decoders tell apart by its magic byte.
                self._warn(f"nodemeter: schema registry unavailable, single-object encoding: {exc}")
                return encode_record(record)

        return encode

    def _register_schemas(self) -> None:
        """Background: register the schemas, retrying with backoff until done or closed."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._registry.prepare()
            except Exception as exc:
                self._warn(f"nodemeter: schema registry not answering, retry in {delay:g} s: {exc}")
            else:
                self._registry_ready.set()
                return
            self._stop.wait(delay)
            delay = min(delay * 2, 30.0)

    def registry_ready(self, timeout: float = 0.0) -> bool:
        """With ``registry_url``: whether the schemas are registered (records then go out
        in the Confluent wire format), waiting up to ``timeout`` seconds. False without one."""
        return self._registry is not None and self._registry_ready.wait(timeout)

    def _otel_enabled(self) -> bool:
        if self.config.otel is False:
            return False
        try:
            import opentelemetry.trace  # noqa: F401
        except ImportError:
            if self.config.otel:
                raise ConfigError(
                    "otel=True but opentelemetry is not installed (pip install opentelemetry-api)"
                ) from None
            return False
        return True

    def _in_flight(self) -> int:
        try:
            return len(self._producer)
        except Exception:  # a closed producer: close() flushed or purged everything
            return 0

    def _new_producer(self, *, replay: bool = False) -> ProducerLike:
        conf = self.config.producer_conf(replay=replay)
        if self._factory is confluent_producer:
            conf["error_cb"] = self._on_error
        try:
            return self._factory(conf)
        except Exception as exc:
            raise ConfigError(f"could not create the Kafka producer: {exc}") from exc

    def _produce_blocking(self, topic: str, key: bytes | None, value: bytes, cb: Any) -> None:
        """Produce from the replay path, waiting for queue space instead of spooling again."""
        while True:
            replayer = self._replayer
            if replayer is None:  # a rebuild dropped it meanwhile: spool the record again
                cb(_LocalError("replay producer rebuilt"), _LocalMessage(topic, key, value))
                return
            try:
                with self._plock:
                    if replayer is not self._replayer:
                        continue
                    replayer.produce(topic, value, key, on_delivery=cb)
                return
            except BufferError:
                replayer.poll(0.1)
            except Exception as exc:
                self._rebuild.set()
                cb(_LocalError(str(exc)), _LocalMessage(topic, key, value))
                return

    def _on_delivery(self, err: Any, msg: Any) -> None:
        # Runs inside poll()/flush(); must never raise.
        try:
            if err is None:  # only with report_successes=True
                self.stats.acked += 1
                return
            with self._slock:
                self.stats.failed += 1
            if _is_fatal(err):
                self._rebuild.set()
            self._to_spool(msg.topic(), msg.key(), msg.value(), str(err))
        except Exception:
            log.exception("nodemeter: delivery callback failed")

    def _on_replay_delivery(self, seg: _SegmentReplay, err: Any, msg: Any) -> None:
        try:
            if err is None:
                with self._slock:
                    self.stats.replayed += 1
            else:
                if _is_fatal(err):
                    self._rebuild.set()
                self._to_spool(msg.topic(), msg.key(), msg.value(), f"replay: {err}")
            with seg.lock:
                seg.outstanding -= 1
                settled = seg.done_reading and seg.outstanding == 0
            if settled:
                self._spool.release(seg.path)
        except Exception:
            log.exception("nodemeter: replay delivery callback failed")

    def _on_error(self, err: Any) -> None:
        try:
            message = explain(self._security, self.config.bootstrap_servers, err)
            if message is not None:  # authentication or TLS: retried, but say why clearly
                self._connection_error = KafkaSecurityError(message)
                self._log_security()
                return
            if _is_fatal(err):
                log.error("nodemeter: fatal producer error, rebuilding the producer: %s", err)
                self._rebuild.set()
            else:
                self._warn(f"nodemeter: producer error (retrying): {err}")
        except Exception:
            log.exception("nodemeter: error callback failed")

    def _to_spool(self, topic: str, key: bytes | None, value: bytes, why: str) -> None:
        try:
            self._spool.append(topic, key, value)
        except DeliveryError as exc:
            with self._slock:
                self.stats.lost += 1
            log.error("nodemeter: record LOST, neither delivered nor spooled (%s): %s", why, exc)
            return
        with self._slock:
            self.stats.spooled += 1
        self._warn(f"nodemeter: record spooled to {self._spool.directory} ({why})")

    def _log_security(self, *, force: bool = False) -> None:
        """One ERROR line per 30 s about the authentication / TLS failure (and at flush)."""
        now = time.monotonic()
        if force or now - self._last_security_log >= 30.0:
            self._last_security_log = now
            log.error(
                "nodemeter: %s. Records wait in the producer, then in the spool %s, "
                "until the broker accepts this client (nothing is lost)",
                self._connection_error,
                self._spool.directory,
            )

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warn >= 5.0:  # one line per 5 s, not one per record
            self._last_warn = now
            log.warning(message)

    def _rebuild_producer(self) -> None:
        self._rebuild.clear()
        new = self._new_producer()
        with self._plock:
            old, self._producer = self._producer, new
            # the replay producer is remade on the next replay (the fatal error may be its own)
            old_replayer, self._replayer = self._replayer, None
        with self._slock:
            self.stats.rebuilt += 1
        for dead in (old, old_replayer):
            if dead is None:
                continue
            try:
                # Unsent records of a dead producer come back through their callbacks and
                # are spooled (replayed ones again, before their segment is deleted).
                dead.purge(in_queue=True, in_flight=True, blocking=True)
                dead.flush(2.0)
            except Exception as exc:
                log.error("nodemeter: could not drain the old producer: %s", exc)

    def _service(self) -> None:
        next_replay = time.monotonic() + 0.5  # pick up what an earlier run left soon after start
        while not self._stop.is_set():
            try:
                self._producer.poll(0.05)
                replayer = self._replayer
                if replayer is not None:
                    replayer.poll(0)
                if self._rebuild.is_set():
                    self._rebuild_producer()
                if time.monotonic() >= next_replay:
                    if self._spool.pending_segments():
                        self.replay()
                    next_replay = time.monotonic() + self.config.replay_interval_s
            except Exception:
                log.exception("nodemeter: background delivery loop error (continuing)")
                time.sleep(0.1)


def _oversize(value: bytes) -> OversizeEventError:
    return OversizeEventError(
        f"encoded record is {len(value)} bytes; the limit is {MAX_EVENT_BYTES}"
    )


def _is_fatal(err: Any) -> bool:
    fatal = getattr(err, "fatal", None)
    try:
        return bool(fatal()) if callable(fatal) else False
    except Exception:
        return False


# What became of a record sent with Meter.emit_settled.
Settlement = Literal["delivered", "spooled", "lost"]


class _Once:
    """Calls ``fn`` with the first settlement only: a record spooled because the producer
    was rebuilt under it may still be acknowledged (or spooled again) later."""

    __slots__ = ("fn", "lock", "settled")

    def __init__(self, fn: Callable[[Settlement], None]) -> None:
        self.fn = fn
        self.lock = threading.Lock()
        self.settled = False

    def __call__(self, outcome: Settlement) -> None:
        with self.lock:
            if self.settled:
                return
            self.settled = True
        try:
            self.fn(outcome)
        except Exception:
            log.exception("nodemeter: on_settled callback failed")


class _LocalError:
    """Stands in for a KafkaError when produce() itself raised."""

    def __init__(self, text: str) -> None:
        self.text = text

    def fatal(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.text


class _LocalMessage:
    def __init__(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._t, self._k, self._v = topic, key, value

    def topic(self) -> str:
        return self._t

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes:
        return self._v


__all__ = ["Meter", "MeterConfig", "MeterStats", "NodemeterError", "ProducerLike", "Settlement"]
