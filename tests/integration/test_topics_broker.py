"""Topics on the real broker (issue 13, part 2): created with the resolved replication
and min.insync.replicas, and a worker refuses topics whose partition counts differ."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from nodemeter.errors import ConfigError
from nodemeter_stream.topics import Replication, Topics, ensure_topics

pytestmark = pytest.mark.kafka


def _topic_config(admin: AdminClient, name: str) -> dict[str, str]:
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    (fut,) = admin.describe_configs([res]).values()
    return {k: v.value for k, v in fut.result(30).items()}


def test_topics_get_the_resolved_replication_and_partition_counts_are_checked(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODEMETER_TOPIC_REPLICATION", raising=False)
    monkeypatch.delenv("NODEMETER_TOPIC_MIN_INSYNC_REPLICAS", raising=False)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    t = Topics(prefix=f"r{uuid.uuid4().hex[:8]}.", partitions=3)
    # one dev broker: auto gives factor 1, min.insync.replicas 1
    assert ensure_topics(kafka_bootstrap, t) == Replication(factor=1, min_insync=1)
    meta = admin.list_topics(timeout=30).topics
    for name in t.all():
        assert len(meta[name].partitions) == 3
        assert all(len(p.replicas) == 1 for p in meta[name].partitions.values())
    cfg = _topic_config(admin, t.usage)
    assert cfg["min.insync.replicas"] == "1" and cfg["retention.ms"] == str(14 * 86_400_000)
    # a second start with the same config is a no-op; another partition count is refused
    ensure_topics(kafka_bootstrap, t)
    with pytest.raises(ConfigError, match=rf"{t.usage} has 3"):
        ensure_topics(kafka_bootstrap, Topics(prefix=t.prefix, partitions=4))
    # more replicas than brokers: a clear error before anything is created
    other = Topics(prefix=f"r{uuid.uuid4().hex[:8]}.", replication=3)
    with pytest.raises(ConfigError, match="needs 3 brokers; the cluster has 1"):
        ensure_topics(kafka_bootstrap, other)
    assert other.usage not in admin.list_topics(timeout=30).topics


def test_the_worker_stops_on_topics_with_another_partition_count(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    t = Topics(prefix=f"w{uuid.uuid4().hex[:8]}.")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(t.usage, num_partitions=2, replication_factor=1)])[
        t.usage
    ].result(30)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodemeter.cli",
            "worker",
            "--bootstrap",
            kafka_bootstrap,
            "--topic-prefix",
            t.prefix,
            "--url",
            f"chdb://{tmp_path}/ch",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"{t.usage} has 2" in r.stderr and "--partitions" in r.stderr
