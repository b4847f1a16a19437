"""Topic names and creation. Names are versioned; a prefix isolates tests and tenants of a cluster."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from nodemeter.errors import ConfigError, NodemeterError
from nodemeter.kafka_security import KafkaSecurity
from nodemeter.kafkalog import admin_client, cluster_metadata

log = logging.getLogger("nodemeter.topics")

# Production: three brokers, each record on all three, a write acknowledged by two.
PRODUCTION_REPLICATION = 3
PRODUCTION_MIN_INSYNC = 2


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw or raw == "auto":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be an integer or 'auto'") from None


@dataclass(frozen=True, kw_only=True)
class Replication:
    """What the topics are created with: replication factor and min.insync.replicas."""

    factor: int
    min_insync: int


@dataclass(frozen=True, kw_only=True)
class Topics:
    """The pipeline's topic names, partition count and replication.

    ``replication`` / ``min_insync`` None (the default, or ``auto`` in
    ``NODEMETER_TOPIC_REPLICATION`` / ``NODEMETER_TOPIC_MIN_INSYNC_REPLICAS``) take the
    production values where the cluster has the brokers for them: factor
    ``min(3, brokers)``, min.insync.replicas ``factor - 1`` (at least 1). So one dev
    broker gets factor 1 (with a warning), a cluster of three or more gets 3 and 2.
    """

    prefix: str = field(default_factory=lambda: os.environ.get("NODEMETER_TOPIC_PREFIX", ""))
    partitions: int = 4
    replication: int | None = field(default_factory=lambda: _env_int("NODEMETER_TOPIC_REPLICATION"))
    min_insync: int | None = field(
        default_factory=lambda: _env_int("NODEMETER_TOPIC_MIN_INSYNC_REPLICAS")
    )

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError(f"partitions {self.partitions} must be >= 1")
        if self.replication is not None and self.replication < 1:
            raise ConfigError(f"replication factor {self.replication} must be >= 1")
        if self.min_insync is not None and self.min_insync < 1:
            raise ConfigError(f"min.insync.replicas {self.min_insync} must be >= 1")

    def replication_for(self, brokers: int) -> Replication:
        """The replication to create topics with on a cluster of ``brokers`` brokers."""
        factor = self.replication or min(PRODUCTION_REPLICATION, max(1, brokers))
        if factor > brokers:
            raise ConfigError(
                f"replication factor {factor} needs {factor} brokers; the cluster has {brokers}"
                " (set NODEMETER_TOPIC_REPLICATION to at most that)"
            )
        min_insync = self.min_insync or max(1, min(PRODUCTION_MIN_INSYNC, factor - 1))
        if min_insync > factor:
            raise ConfigError(
                f"min.insync.replicas {min_insync} is more than the replication factor {factor}"
                " (NODEMETER_TOPIC_MIN_INSYNC_REPLICAS)"
            )
        return Replication(factor=factor, min_insync=min_insync)

    @property
    def usage(self) -> str:
        return f"{self.prefix}nodemeter.usage.v1"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}nodemeter.dlq.v1"

    @property
    def budget_alerts(self) -> str:
        return f"{self.prefix}nodemeter.budget-alerts.v1"

    @property
    def budget_state(self) -> str:
        return f"{self.prefix}nodemeter.budget-state.v1"

    @property
    def usage_by_tenant(self) -> str:
        """Accepted, first-seen usage events re-keyed by tenant (the pricing agent's input)."""
        return f"{self.prefix}nodemeter.usage-by-tenant.v1"

    def all(self) -> dict[str, dict[str, str]]:
        """Topic name -> topic config."""
        return {
            self.usage: {"retention.ms": str(14 * 24 * 3600 * 1000)},
            self.usage_by_tenant: {"retention.ms": str(14 * 24 * 3600 * 1000)},
            self.dlq: {"retention.ms": str(90 * 24 * 3600 * 1000)},
            self.budget_alerts: {"retention.ms": str(90 * 24 * 3600 * 1000)},
            self.budget_state: {"cleanup.policy": "compact"},
        }


# Topics keyed by tenant or request: a worker must agree with them on the partition
# count, or its per-partition state and progress of record would not match the data.
def keyed(topics: Topics) -> tuple[str, ...]:
    return (topics.usage, topics.usage_by_tenant)


def check_partitions(topics: Topics, found: dict[str, int]) -> None:
    """A ConfigError when a keyed topic exists with another partition count."""
    wrong = {n: found[n] for n in keyed(topics) if n in found and found[n] != topics.partitions}
    if wrong:
        listed = ", ".join(f"{n} has {p}" for n, p in sorted(wrong.items()))
        raise ConfigError(
            f"topic partitions differ from the configuration ({topics.partitions}): {listed}."
            " Start the worker with the topics' count (--partitions, NODEMETER_WORKER_PARTITIONS),"
            " or recreate the topics; a partition count is not changed under running data"
        )


def ensure_topics(
    bootstrap: str,
    topics: Topics,
    *,
    timeout: float = 30.0,
    security: KafkaSecurity | None = None,
) -> Replication:
    """Create the pipeline's topics if missing (idempotent) and check the keyed topics'
    partition counts; returns the replication new topics are created with.

    ``security``: TLS / SASL (default: ``NODEMETER_KAFKA_*``). A broker refusing the
    credentials or the TLS handshake raises ``KafkaSecurityError`` within seconds, one
    that does not answer ``KafkaConnectionError`` after ``timeout``."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    admin, watch = admin_client(bootstrap, security)
    meta = cluster_metadata(admin, watch, timeout=timeout)
    replication = topics.replication_for(len(meta.brokers))
    if replication.factor < PRODUCTION_REPLICATION:
        log.warning(
            "topics: replication factor %d, min.insync.replicas %d (%d broker(s)); "
            "production: %d brokers, factor %d, min.insync.replicas %d",
            replication.factor, replication.min_insync, len(meta.brokers),
            PRODUCTION_REPLICATION, PRODUCTION_REPLICATION, PRODUCTION_MIN_INSYNC,
        )  # fmt: skip
    check_partitions(topics, {n: len(t.partitions) for n, t in meta.topics.items()})
    wanted = [
        NewTopic(
            name,
            num_partitions=topics.partitions,
            replication_factor=replication.factor,
            config={**cfg, "min.insync.replicas": str(replication.min_insync)},
        )
        for name, cfg in topics.all().items()
        if name not in meta.topics
    ]
    if not wanted:
        return replication
    for name, fut in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise NodemeterError(f"could not create topic {name}: {exc}") from exc
    return replication
