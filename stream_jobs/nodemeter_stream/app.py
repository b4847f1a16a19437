"""The Faust app of the stream worker and its typed configuration.

``build_app(config)`` returns a :class:`Worker` context: the ``faust.App`` (no tables:
the recoverable state and the progress of record live in ClickHouse, see
``sink.progress``), the topics, the ClickHouse sink and the metrics. Agents live in the modules
named by :data:`AGENT_MODULES`; each exposes ``register(worker: Worker) -> None`` and
is imported by ``build_app``. No agent runs with ``concurrency > 1``: Faust could
commit an offset past a message another actor has not finished.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodemeter.errors import ConfigError, KafkaConnectionError, KafkaSecurityError
from nodemeter.kafka_security import KafkaSecurity, explain_failure
from nodemeter_stream.commit_guard import SCHEME, guard_topics, register_transport
from nodemeter_stream.gctune import DEFAULT_THRESHOLD as GC_THRESHOLD
from nodemeter_stream.ingest.plan import (
    DEFAULT_MAX_REQUEST_EVENTS,
    MAX_REQUEST_EVENTS,
    BatchPolicy,
)
from nodemeter_stream.sink.store import ClickHouseConfig
from nodemeter_stream.topics import Topics

# Modules whose ``register(worker)`` adds agents/timers to the app. Pricing appends
# "nodemeter_stream.agents.pricing".
AGENT_MODULES: tuple[str, ...] = (
    "nodemeter_stream.agents.ingest",
    "nodemeter_stream.agents.pricing",
)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"NODEMETER_{name}", default)


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """Everything the worker needs; validated when built, secrets never printed."""

    bootstrap: str
    # TLS / SASL for every Kafka client of the worker (Faust's, topic creation): the
    # NODEMETER_KAFKA_* variables / NODEMETER_KAFKA_CONFIG file; its repr hides secrets
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity.from_env)
    topic_prefix: str = ""
    partitions: int = 4
    # topic replication factor and min.insync.replicas; None: NODEMETER_TOPIC_REPLICATION
    # / NODEMETER_TOPIC_MIN_INSYNC_REPLICAS, else min(3, brokers) and factor - 1 (topics.py)
    replication: int | None = None
    min_insync: int | None = None
    clickhouse: ClickHouseConfig = field(default_factory=ClickHouseConfig)
    app_id: str = "nodemeter-worker"
    batch_size: int = 2000
    batch_seconds: float = 1.0
    request_timeout_s: float = 300.0
    # requests kept in memory after their last record (dedupe of recent events, late
    # spans as corrections); older events are looked up in ClickHouse's event_index
    request_retention_s: float = 600.0
    sweep_interval_s: float = 5.0
    metrics_port: int = 0  # 0 = no HTTP endpoint
    session_timeout_s: float = 30.0
    heartbeat_interval_s: float = 3.0
    commit_interval_s: float = 1.0
    max_event_bytes: int = 64 * 1024
    # usage events merged into one request; later ones are dead-lettered
    # (request_too_large). Bounds a request's state, and keeps every request sum within
    # the UInt64 columns (this x the largest per-event limit < 2^64).
    max_request_events: int = DEFAULT_MAX_REQUEST_EVENTS
    # usage dated more than this ahead of the worker's clock is a dead letter
    # (future_event_time): one event from a broken clock must not close windows early
    max_future_skew_s: float = 300.0
    # Python's collector (gctune.py): start-up objects frozen, this first-generation
    # threshold (CPython's is 700); 0 leaves the collector as CPython sets it
    gc_threshold: int = GC_THRESHOLD
    # Confluent Schema Registry (NODEMETER_SCHEMA_REGISTRY_URL, as for the SDK): records
    # in its framing are decoded with the writer schemas it holds. Not in repr: a URL
    # may carry credentials.
    schema_registry_url: str | None = field(default=None, repr=False)
    sink_retry_max_s: float = 5.0
    agent_modules: tuple[str, ...] = AGENT_MODULES
    # Faust's local data dir (tables are memory://, so it stays nearly empty); kept out
    # of the working directory, under the gitignored .nodemeter/.
    data_dir: str = ".nodemeter/faust"

    def __post_init__(self) -> None:
        if not self.bootstrap:
            raise ConfigError("bootstrap (Kafka bootstrap servers) is required")
        if not self.app_id or any(c.isspace() for c in self.app_id):
            raise ConfigError(f"app_id {self.app_id!r} must be non-empty without spaces")
        if self.partitions < 1:
            raise ConfigError("partitions must be >= 1")
        if self.batch_size < 1 or self.batch_seconds <= 0:
            raise ConfigError("batch_size must be >= 1 and batch_seconds > 0")
        if self.request_timeout_s <= 0 or self.sweep_interval_s <= 0:
            raise ConfigError("request_timeout_s and sweep_interval_s must be > 0")
        if self.request_retention_s < self.request_timeout_s:
            raise ConfigError("request_retention_s must be >= request_timeout_s")
        if not 1 <= self.max_request_events <= MAX_REQUEST_EVENTS:
            raise ConfigError(
                f"max_request_events {self.max_request_events} must be 1..{MAX_REQUEST_EVENTS}"
                " (more could overflow a request's UInt64 sums)"
            )
        if not self.max_future_skew_s >= 0:
            raise ConfigError("max_future_skew_s must be >= 0")
        if self.gc_threshold < 0:
            raise ConfigError(f"gc_threshold {self.gc_threshold} must be >= 0 (0: CPython's)")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port {self.metrics_port} out of range")
        if not self.data_dir:
            raise ConfigError("data_dir (Faust's local directory) must not be empty")
        if not self.agent_modules:
            raise ConfigError("agent_modules must name at least one agent module")
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ConfigError("heartbeat_interval_s must be at most a third of session_timeout_s")

    @property
    def topics(self) -> Topics:
        extra = {
            k: v
            for k, v in (("replication", self.replication), ("min_insync", self.min_insync))
            if v is not None
        }
        return Topics(prefix=self.topic_prefix, partitions=self.partitions, **extra)

    @property
    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(max_size=self.batch_size, max_wait_s=self.batch_seconds)

    @classmethod
    def from_env(cls, **overrides: Any) -> WorkerConfig:
        """Read ``NODEMETER_*`` variables; keyword overrides win (None = not given)."""
        conv: Mapping[str, Callable[[str], Any]] = {
            "partitions": int,
            "batch_size": int,
            "batch_seconds": float,
            "request_timeout_s": float,
            "request_retention_s": float,
            "sweep_interval_s": float,
            "metrics_port": int,
            "session_timeout_s": float,
            "heartbeat_interval_s": float,
            "commit_interval_s": float,
            "max_event_bytes": int,
            "max_request_events": int,
            "max_future_skew_s": float,
            "gc_threshold": int,
            "data_dir": str,  # NODEMETER_WORKER_DATA_DIR: a writable volume in a container
        }
        values: dict[str, Any] = {
            "bootstrap": os.environ.get("NODEMETER_KAFKA_BOOTSTRAP", ""),
            "topic_prefix": _env("TOPIC_PREFIX", ""),
            "app_id": _env("WORKER_APP_ID", "nodemeter-worker"),
            "schema_registry_url": os.environ.get("NODEMETER_SCHEMA_REGISTRY_URL") or None,
        }
        for name, fn in conv.items():
            raw = os.environ.get(f"NODEMETER_WORKER_{name.upper()}")
            if raw is not None:
                try:
                    values[name] = fn(raw)
                except ValueError as exc:
                    raise ConfigError(f"NODEMETER_WORKER_{name.upper()}={raw!r}: {exc}") from exc
        if os.environ.get("NODEMETER_WORKER_DEDUPE_TTL_S") is not None:
            logging.getLogger("nodemeter.worker").warning(
                "NODEMETER_WORKER_DEDUPE_TTL_S is no longer used: recent events are deduped "
                "in memory (NODEMETER_WORKER_REQUEST_RETENTION_S), older ones against "
                "ClickHouse's event_index (as long as usage_events keeps them)"
            )
        agents = os.environ.get("NODEMETER_WORKER_AGENTS")
        if agents:
            values["agent_modules"] = tuple(
                a if "." in a else f"nodemeter_stream.agents.{a}"
                for a in (x.strip() for x in agents.split(","))
                if a
            )
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "clickhouse" not in values:
            values["clickhouse"] = ClickHouseConfig()
        return cls(**values)

    @classmethod
    def for_tests(cls, *, bootstrap: str, clickhouse: ClickHouseConfig, **kw: Any) -> WorkerConfig:
        """Unique app id, short timeouts: a killed worker's partitions come back fast."""
        base: dict[str, Any] = {
            "app_id": f"nodemeter-test-{uuid.uuid4().hex[:10]}",
            "session_timeout_s": 6.0,
            "heartbeat_interval_s": 1.0,
            "batch_seconds": 0.3,
            "sweep_interval_s": 0.5,
        }
        base.update(kw)
        return cls(bootstrap=bootstrap, clickhouse=clickhouse, **base)


@dataclass(kw_only=True)
class Worker:
    """What agents get at registration: the app and the shared services."""

    config: WorkerConfig
    app: Any  # faust.App
    sink: Any  # nodemeter_stream.sink.clickhouse.ClickHouseSink
    metrics: Any  # nodemeter_stream.metrics.WorkerMetrics
    extras: dict[str, Any] = field(default_factory=dict)


def broker_credentials(security: KafkaSecurity) -> Any:
    """Faust's ``broker_credentials`` for ``security`` (None for PLAINTEXT): SASL with an
    ``ssl.SSLContext`` for SASL_SSL, without one for SASL_PLAINTEXT, TLS alone for SSL."""
    import faust

    if security.is_plaintext:
        return None
    context = security.ssl_context()
    if not security.uses_sasl:
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=security.sasl_username,
        password=security.sasl_password,
        ssl_context=context,
        mechanism=security.sasl_mechanism,
    )


def _host_port(address: str) -> tuple[str, int]:
    address = address.strip().removeprefix("kafka://")
    host, _, port = address.rpartition(":")
    if not host:
        return address.strip("[]"), 9092
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(f"bootstrap address {address!r} is not host:port") from None


async def _aiokafka_probe(bootstrap: str, security: KafkaSecurity, timeout: float) -> None:
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError

    last: BaseException | None = None
    for address in (a for a in bootstrap.split(",") if a.strip()):
        host, port = _host_port(address)
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host, port, request_timeout_ms=int(timeout * 1000), **security.aiokafka()
                ),
                timeout,
            )
        except (TimeoutError, OSError, KafkaError) as exc:
            text = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ssl.SSLError):
                text = f"SSL handshake failed: {text}"
            message = explain_failure(security, bootstrap, text)
            if message is not None:
                raise KafkaSecurityError(message) from None
            last = exc
            continue
        conn.close()
        return
    raise KafkaConnectionError(
        f"no Kafka broker answered at {bootstrap} within {timeout:g} s "
        f"({security.describe()}): {last!r}"
    )


def check_broker(config: WorkerConfig, *, timeout: float = 15.0) -> None:
    """Connect once the way Faust will (aiokafka, with the worker's TLS / SASL settings)
    and authenticate: a ``KafkaSecurityError`` naming the cause (wrong password,
    untrusted certificate) right away, rather than a Faust worker retrying forever."""
    asyncio.run(_aiokafka_probe(config.bootstrap, config.kafka_security, timeout))


def faust_app(config: WorkerConfig, *, scheme: str = SCHEME) -> Any:
    """The worker's ``faust.App``; ``scheme="kafka"``: Faust's own aiokafka transport
    instead of the worker's (``bench/faust_ceiling.py`` measures both)."""
    import faust

    Path(config.data_dir).mkdir(parents=True, exist_ok=True)  # Faust creates only the leaf

    register_transport()  # the aiokafka transport with gap-free commits (commit_guard)
    return faust.App(
        config.app_id,
        broker=[f"{scheme}://{b.strip()}" for b in config.bootstrap.split(",")],
        store="memory://",
        broker_credentials=broker_credentials(config.kafka_security),
        datadir=f"{config.data_dir}/{config.app_id}-data",
        topic_partitions=config.partitions,
        # Faust's own internal topics: as the pipeline's (run() resolves the factor)
        topic_replication_factor=config.replication or 1,
        topic_allow_declare=True,  # internal changelog topics; source topics via ensure_topics
        web_enabled=False,
        broker_session_timeout=config.session_timeout_s,
        broker_heartbeat_interval=config.heartbeat_interval_s,
        broker_commit_interval=config.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, config.batch_size * 2),
        # Do not wait for unacknowledged records on shutdown/rebalance: a batch waiting
        # out a ClickHouse outage would never be acked. Nothing depends on it: records
        # not acked are read again and deduplicated (see docs/worker.md).
        stream_wait_empty=False,
        table_cleanup_interval=3600.0,
        producer_acks=-1,
    )


def build_app(config: WorkerConfig, *, sink: Any = None, metrics: Any = None) -> Worker:
    """The faust.App with every module of ``config.agent_modules`` registered."""
    from nodemeter_stream.metrics import WorkerMetrics
    from nodemeter_stream.sink.clickhouse import ClickHouseSink

    worker = Worker(
        config=config,
        app=faust_app(config),
        sink=sink
        if sink is not None
        else ClickHouseSink(config.clickhouse, retry_max_s=config.sink_retry_max_s),
        metrics=metrics if metrics is not None else WorkerMetrics(),
    )
    worker.sink.metrics = worker.metrics

    @worker.app.on_before_shutdown.connect
    async def stop_sink(app: Any, **_: Any) -> None:
        # A write retrying through a ClickHouse outage must not hold up the shutdown;
        # its batch was not acknowledged and is read again by the next worker.
        worker.sink.stop()

    for name in config.agent_modules:
        importlib.import_module(name).register(worker)
    # commits on our source topics never pass an unprocessed record (see commit_guard)
    guard_topics(config.topics.usage, config.topics.usage_by_tenant)
    return worker
