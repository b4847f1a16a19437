"""The local Schema Registry's lifecycle without starting Java: config validation, a
port held by another process, the rebuild rule (pure logic and real sockets)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from nodemeter_stream.devenv import schema_registry as sr


def test_config_is_validated_and_names_the_ccompat_url(tmp_path: Path) -> None:
    with pytest.raises(sr.SchemaRegistryDevError, match="TCP port"):
        sr.SchemaRegistryDevConfig(port=0, home=tmp_path)
    cfg = sr.SchemaRegistryDevConfig(port=18555, home=tmp_path)
    assert cfg.url == "http://127.0.0.1:18555/apis/ccompat/v7"


def test_a_port_held_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = sr.SchemaRegistryDevConfig(port=port, home=tmp_path, cache_dir=tmp_path / "c")
        with pytest.raises(sr.SchemaRegistryDevError, match="in use by another process"):
            sr.up(cfg)
    assert not (tmp_path / "c").exists()  # refused before any build


def test_nothing_answering_is_no_registry(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        assert not sr.registry_answers(f"http://127.0.0.1:{port}/apis/ccompat/v7")


def test_a_stale_build_is_rebuilt_and_without_maven_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = sr.SchemaRegistryDevConfig(home=tmp_path, cache_dir=tmp_path / "cache")
    cfg.build_dir.mkdir(parents=True)
    cfg.runner.write_bytes(b"")  # a runner from another pom or Java source
    (cfg.cache_dir / ".built").write_text("0000000000000000")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no mvn
    with pytest.raises(sr.SchemaRegistryDevError, match="Maven"):
        sr.build(cfg)
    (cfg.cache_dir / ".built").write_text(sr._sources_digest())
    assert sr.build(cfg) == cfg.runner  # current: no Maven needed
