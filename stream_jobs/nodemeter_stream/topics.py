"""Topic names and creation. Names are versioned; a prefix isolates tests and tenants of a cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from nodemeter.errors import NodemeterError
from nodemeter.kafkalog import with_logger


@dataclass(frozen=True, kw_only=True)
class Topics:
    prefix: str = field(default_factory=lambda: os.environ.get("NODEMETER_TOPIC_PREFIX", ""))
    partitions: int = 4

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


def ensure_topics(bootstrap: str, topics: Topics, *, timeout: float = 30.0) -> None:
    """Create the pipeline's topics if missing (idempotent)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(with_logger({"bootstrap.servers": bootstrap}))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(name, num_partitions=topics.partitions, replication_factor=1, config=cfg)
        for name, cfg in topics.all().items()
        if name not in existing
    ]
    if not wanted:
        return
    for name, fut in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise NodemeterError(f"could not create topic {name}: {exc}") from exc
