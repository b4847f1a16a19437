"""Topic replication and partition checks (issue 13, part 2): pure rules, no broker."""

from __future__ import annotations

import argparse

import pytest

from nodemeter.errors import ConfigError
from nodemeter_stream.topics import Replication, Topics, check_partitions
from nodemeter_stream.worker_cli import config_from_args


@pytest.mark.parametrize(
    ("brokers", "expected"),
    [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (6, (3, 2))],
)
def test_auto_replication_takes_the_production_values_the_cluster_can_hold(
    brokers: int, expected: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODEMETER_TOPIC_REPLICATION", raising=False)
    monkeypatch.delenv("NODEMETER_TOPIC_MIN_INSYNC_REPLICAS", raising=False)
    factor, min_insync = expected
    assert Topics().replication_for(brokers) == Replication(factor=factor, min_insync=min_insync)


def test_replication_from_the_environment_and_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEMETER_TOPIC_REPLICATION", "5")
    monkeypatch.setenv("NODEMETER_TOPIC_MIN_INSYNC_REPLICAS", "3")
    assert Topics().replication_for(5) == Replication(factor=5, min_insync=3)
    with pytest.raises(ConfigError, match="needs 5 brokers; the cluster has 3"):
        Topics().replication_for(3)
    monkeypatch.setenv("NODEMETER_TOPIC_MIN_INSYNC_REPLICAS", "6")
    with pytest.raises(ConfigError, match="more than the replication factor 5"):
        Topics().replication_for(5)
    monkeypatch.setenv("NODEMETER_TOPIC_REPLICATION", "three")
    with pytest.raises(ConfigError, match="NODEMETER_TOPIC_REPLICATION='three'"):
        Topics()
    monkeypatch.setenv("NODEMETER_TOPIC_REPLICATION", "auto")
    monkeypatch.delenv("NODEMETER_TOPIC_MIN_INSYNC_REPLICAS")
    assert Topics().replication_for(4) == Replication(factor=3, min_insync=2)
    with pytest.raises(ConfigError, match="must be >= 1"):
        Topics(replication=0)


def test_a_keyed_topic_with_another_partition_count_is_refused() -> None:
    t = Topics(prefix="p.", partitions=4)
    check_partitions(t, {t.usage: 4, t.usage_by_tenant: 4, t.dlq: 1})  # the DLQ is not keyed
    with pytest.raises(ConfigError, match=r"p.nodemeter.usage.v1 has 8") as err:
        check_partitions(t, {t.usage: 8, t.usage_by_tenant: 4})
    assert "--partitions" in str(err.value)


def test_the_worker_without_a_bootstrap_is_an_error_not_a_dev_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NODEMETER_KAFKA_BOOTSTRAP", raising=False)
    from nodemeter.cli import build_parser

    args = build_parser(only="worker").parse_args(["worker"])
    assert isinstance(args, argparse.Namespace) and args.dev_broker is False
    with pytest.raises(ConfigError, match="give --bootstrap or set NODEMETER_KAFKA_BOOTSTRAP"):
        config_from_args(args)
    monkeypatch.setenv("NODEMETER_KAFKA_BOOTSTRAP", "broker:9092")
    assert config_from_args(args).bootstrap == "broker:9092"
