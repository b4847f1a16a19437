"""WorkerConfig, the app factory, the CLI entry and the metrics endpoint."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from nodemeter.cli import build_parser
from nodemeter.errors import ConfigError
from nodemeter_stream.app import AGENT_MODULES, WorkerConfig, faust_app
from nodemeter_stream.metrics import WorkerMetrics
from nodemeter_stream.sink.store import ClickHouseConfig
from nodemeter_stream.worker_cli import agent_modules


def test_from_env_reads_variables_and_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEMETER_KAFKA_BOOTSTRAP", "k1:9092")
    monkeypatch.setenv("NODEMETER_TOPIC_PREFIX", "p.")
    monkeypatch.setenv("NODEMETER_WORKER_BATCH_SIZE", "123")
    monkeypatch.setenv("NODEMETER_WORKER_REQUEST_RETENTION_S", "900")
    monkeypatch.setenv("NODEMETER_WORKER_AGENTS", "ingest")
    cfg = WorkerConfig.from_env(batch_seconds=2.5, request_timeout_s=None)
    assert cfg.bootstrap == "k1:9092" and cfg.topics.usage == "p.nodemeter.usage.v1"
    assert cfg.batch_size == 123 and cfg.batch_seconds == 2.5
    assert cfg.request_retention_s == 900.0 and cfg.request_timeout_s == 300.0
    assert cfg.agent_modules == ("nodemeter_stream.agents.ingest",)
    assert cfg.topics.usage_by_tenant == "p.nodemeter.usage-by-tenant.v1"


def test_data_dir_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a container's checkout is read-only: Faust's directory goes to a writable volume
    monkeypatch.chdir(tmp_path)
    assert WorkerConfig.from_env(bootstrap="k:1").data_dir == ".nodemeter/faust"
    volume = tmp_path / "volume" / "faust"
    monkeypatch.setenv("NODEMETER_WORKER_DATA_DIR", str(volume))
    cfg = WorkerConfig.from_env(bootstrap="k:1", app_id="dd")
    assert cfg.data_dir == str(volume)
    app = faust_app(cfg)
    assert Path(app.conf.datadir) == volume / "dd-data" and volume.is_dir()
    assert not (tmp_path / ".nodemeter").exists()
    monkeypatch.setenv("NODEMETER_WORKER_DATA_DIR", "")
    with pytest.raises(ConfigError, match="data_dir"):
        WorkerConfig.from_env(bootstrap="k:1")


def test_defaults_keep_requests_past_their_timeout_and_every_agent() -> None:
    cfg = WorkerConfig(bootstrap="k:1")
    assert cfg.request_retention_s >= cfg.request_timeout_s
    assert cfg.agent_modules == AGENT_MODULES
    assert AGENT_MODULES[0] == "nodemeter_stream.agents.ingest"


@pytest.mark.parametrize(
    "kw",
    [
        {"bootstrap": ""},
        {"app_id": "has space"},
        {"batch_size": 0},
        {"batch_seconds": 0},
        {"request_timeout_s": 100.0, "request_retention_s": 10.0},
        {"metrics_port": 70000},
        {"heartbeat_interval_s": 5.0, "session_timeout_s": 6.0},
        {"agent_modules": ()},
    ],
)
def test_invalid_config_is_rejected_when_built(kw: dict[str, object]) -> None:
    base: dict[str, object] = {"bootstrap": "k:1"}
    base.update(kw)
    with pytest.raises(ConfigError):
        WorkerConfig(**base)  # type: ignore[arg-type]


def test_bad_env_number_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEMETER_WORKER_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match="NODEMETER_WORKER_BATCH_SIZE"):
        WorkerConfig.from_env(bootstrap="k:1")


def test_for_tests_gives_unique_app_ids_and_short_timeouts() -> None:
    ch = ClickHouseConfig(url="chdb://memory", database="x")
    a = WorkerConfig.for_tests(bootstrap="k:1", clickhouse=ch)
    b = WorkerConfig.for_tests(bootstrap="k:1", clickhouse=ch)
    assert a.app_id != b.app_id and a.session_timeout_s <= 10


def test_nodemeter_worker_is_a_cli_command() -> None:
    args = build_parser().parse_args(["worker", "--batch-size", "10", "--agents", "ingest"])
    assert args._module == "nodemeter_stream.worker_cli"
    assert agent_modules(args.agents) == ("nodemeter_stream.agents.ingest",)
    assert agent_modules(None) is None


def test_metrics_are_served_in_prometheus_text() -> None:
    m = WorkerMetrics()
    m.events_in.inc(3)
    m.dead_letters.labels(reason="truncated").inc()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m.serve(port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "nodemeter_events_in_total 3.0" in body
    assert 'nodemeter_dead_letters_total{reason="truncated"} 1.0' in body
    for name in (
        "nodemeter_batch_size",
        "nodemeter_sink_latency_seconds",
        "nodemeter_consumer_lag",
    ):
        assert name in body


def test_the_drain_says_when_records_were_left_unstored() -> None:
    import logging
    from types import SimpleNamespace

    from nodemeter_stream.worker_cli import drained_message

    assert drained_message({}) == (
        logging.INFO,
        "drained: the last batch is stored and its offsets committed",
    )
    calm = {"ingest": SimpleNamespace(unstored=0), "pricing": SimpleNamespace(unstored=0)}
    assert "the last batch is stored" in drained_message(calm)[1]
    # seen in issue 10: "230 records left unacknowledged", then "the last batch is stored"
    outage = {"ingest": SimpleNamespace(unstored=230), "pricing": SimpleNamespace(unstored=4)}
    level, said = drained_message(outage)
    assert level == logging.WARNING
    assert "the last batch is stored" not in said
    assert "230 ingest, 4 pricing" in said and "next worker applies them" in said
