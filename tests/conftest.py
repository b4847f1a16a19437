"""Shared fixtures: real services, picked in this order.

1. Environment variables: ``NODEMETER_KAFKA_BOOTSTRAP``, ``NODEMETER_CLICKHOUSE_URL``.
2. testcontainers, when a Docker engine answers (official Kafka and ClickHouse images).
3. The local Kafka broker (``nodemeter_stream.devenv.kafka``, jars from Maven Central)
   on free loopback ports, started once per session and stopped at its end, plus
   embedded chDB.

A real Schema Registry (``schema_registry_url``): ``NODEMETER_TEST_SCHEMA_REGISTRY_URL``
(a Confluent-compatible API), else Apicurio Registry built from Maven Central
(``nodemeter_stream.devenv.schema_registry``, ``make registry``) on a free loopback port,
once per session.

Each test gets its own topic prefix and its own ClickHouse database.

``make test`` runs the suite on two pytest-xdist workers (``--dist loadgroup``): the
fault tests form one group, so they run one after another on one worker, as
``make torture`` runs them, while the other worker takes the rest file by file (a file's
module fixtures are made once). Each worker has its own session services (broker,
registry, chDB path).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

KAFKA_IMAGE = "apache/kafka:4.4.0"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"


FAULT_GROUP = "fault"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every test in an xdist group: ``fault`` for the fault tests, else its file.
    Only ``--dist loadgroup`` reads the groups; a plain run keeps file order."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        group = FAULT_GROUP if item.get_closest_marker("fault") else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def secured_dev_broker(
    home: Path, *, scram_users: dict[str, str], plain_users: dict[str, str]
) -> Iterator[tuple[str, Path]]:
    """A dev broker of its own with a SASL_SSL listener (SCRAM and PLAIN users, a CA made
    by openssl): yields its SASL_SSL bootstrap and that CA; stopped on exit. Skips the
    test without openssl or java."""
    for tool in ("openssl", "java"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is needed for the secured dev broker")
    from nodemeter_stream.devenv import kafka

    cfg = kafka.KafkaDevConfig(
        port=free_port(),
        controller_port=free_port(),
        sasl_ssl_port=free_port(),
        home=home,
        scram_users=scram_users,
        plain_users=plain_users,
    )
    kafka.up(cfg)
    try:
        assert cfg.sasl_ssl_bootstrap is not None
        yield cfg.sasl_ssl_bootstrap, cfg.ca_file
    finally:
        kafka.down(cfg)


def docker_available() -> bool:
    if os.environ.get("NODEMETER_NO_DOCKER"):
        return False
    if not shutil.which("docker"):
        return False
    try:
        import docker  # testcontainers' dependency

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Apache Kafka broker."""
    env = os.environ.get("NODEMETER_KAFKA_BOOTSTRAP")
    if env:
        yield env
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as kc:
            yield kc.get_bootstrap_server()
        return
    from nodemeter_stream.devenv import kafka

    cfg = local_kafka_config(tmp_path_factory)
    bootstrap = kafka.up(cfg)
    try:
        yield bootstrap
    finally:
        kafka.down(cfg)


_LOCAL_KAFKA: list[Any] = []


def local_kafka_config(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The session's local broker config (free ports, temp data dir), made once."""
    from nodemeter_stream.devenv import kafka

    if not _LOCAL_KAFKA:
        _LOCAL_KAFKA.append(
            kafka.KafkaDevConfig(
                port=free_port(), controller_port=free_port(), home=tmp_path_factory.mktemp("kafka")
            )
        )
    return _LOCAL_KAFKA[0]


@pytest.fixture(scope="session")
def local_kafka(kafka_bootstrap: str) -> Any:
    """The local broker's config, when the session runs one (None otherwise)."""
    return _LOCAL_KAFKA[0] if _LOCAL_KAFKA else None


@pytest.fixture(scope="session")
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Confluent-compatible API of a real Schema Registry (Apicurio, in memory)."""
    env = os.environ.get("NODEMETER_TEST_SCHEMA_REGISTRY_URL")
    if env:
        yield env
        return
    from nodemeter_stream.devenv import schema_registry

    cfg = schema_registry.SchemaRegistryDevConfig(
        port=free_port(), home=tmp_path_factory.mktemp("schema-registry")
    )
    url = schema_registry.up(cfg)  # a clear SchemaRegistryDevError with the log's tail
    try:
        yield url
    finally:
        schema_registry.down(cfg)
        # pytest keeps the last runs' temp dirs: the log stays for a failed run
        print(f"\n[schema-registry] log kept at {cfg.log_file}", file=sys.stderr)


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real ClickHouse engine: a server, or chDB on disk for this session."""
    env = os.environ.get("NODEMETER_CLICKHOUSE_URL")
    if env:
        yield env
        return
    if docker_available():
        from testcontainers.clickhouse import ClickHouseContainer

        with ClickHouseContainer(CLICKHOUSE_IMAGE) as ch:
            host, port = ch.get_container_host_ip(), ch.get_exposed_port(8123)
            yield f"http://{ch.username}:{ch.password}@{host}:{port}"
        return
    yield f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def topics(kafka_bootstrap: str, topic_prefix: str) -> Any:
    """The pipeline's topics under a prefix unique to this test, created on the broker."""
    from nodemeter_stream.topics import Topics, ensure_topics

    t = Topics(prefix=topic_prefix)
    ensure_topics(kafka_bootstrap, t)
    return t


@pytest.fixture
def clickhouse_config(clickhouse_url: str) -> Any:
    from nodemeter_stream.sink.store import ClickHouseConfig

    return ClickHouseConfig(url=clickhouse_url, database=f"test_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def ch(clickhouse_config: Any) -> Iterator[Any]:
    """A clickhouse-connect client on a fresh, migrated database of its own."""
    from nodemeter_stream.sink.migrate import migrate
    from nodemeter_stream.sink.store import connect

    client = connect(clickhouse_config)
    migrate(client, verbose=False)
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS {clickhouse_config.database}")


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
