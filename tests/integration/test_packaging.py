"""Packaging as users install it (issue 13, part 4): the base package alone, in a fresh
venv, runs ``nodemeter emit`` without importing the worker, says which extra a worker
command needs, ships ``py.typed``, and the SDK round-trips through the real broker on
the lowest and on the highest versions of its dependencies that pyproject.toml allows.

Each test builds a venv from PyPI (wheels only), as a user's ``pip install`` would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BASE_DEPS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
RANGE = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)>=(?P<low>[0-9.]+),<(?P<high>[0-9.]+)$")
USAGE_LINE = '{"tenant":"acme","request_id":"r1","node_id":"ocr","meters":{"input_tokens":5}}\n'


def _bounds() -> dict[str, tuple[str, str]]:
    out = {}
    for dep in BASE_DEPS:
        m = RANGE.match(dep.replace(" ", ""))
        assert m, f"base dependency {dep!r} is not a '>=low,<high' range"
        out[m["name"]] = (m["low"], m["high"])
    return out


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def _pip(venv: Path, *args: str) -> None:
    r = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", *args])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]


def _venv(path: Path) -> Path:
    r = _run([sys.executable, "-m", "venv", str(path)])
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)])
    assert r.returncode == 0, r.stderr[-3000:]
    (built,) = out.glob("nodemeter-*.whl")
    return built


def test_the_base_install_alone_emits_and_names_the_missing_extra(
    wheel: Path, tmp_path: Path
) -> None:
    venv = _venv(tmp_path / "base")
    _pip(venv, "--only-binary=:all:", str(wheel))
    py, cli = str(venv / "bin" / "python"), str(venv / "bin" / "nodemeter")

    # no worker dependency came with it
    missing = _run([py, "-c", "import importlib.util as u; print([m for m in "
                    "('faust', 'aiokafka', 'clickhouse_connect', 'chdb', 'yaml') "
                    "if u.find_spec(m)])"])  # fmt: skip
    assert missing.stdout.strip() == "[]", missing.stdout

    dry = _run([cli, "emit", "--dry-run"], input=USAGE_LINE)
    assert dry.returncode == 0, dry.stderr
    assert "1 valid, 0 rejected (dry run)" in dry.stderr

    # `nodemeter emit` imports the SDK and the worker package's command table, no more
    probe = _run([py, "-c", "import sys\nfrom nodemeter.cli import main\nrc = main(['emit', "
                  "'--dry-run'])\nprint(sorted(m for m in sys.modules if m.startswith("
                  "'nodemeter_stream')), rc)"], input=USAGE_LINE)  # fmt: skip
    assert probe.stdout.strip().splitlines()[-1] == (
        "['nodemeter_stream', 'nodemeter_stream.commands'] 0"
    ), probe.stdout + probe.stderr

    # both packages' command tables are found through their entry points
    listed = _run([cli, "--help"])
    assert listed.returncode == 0 and "emit" in listed.stdout and "statement" in listed.stdout

    # `nodemeter ingest-http` serves from the base install (standard library HTTP only)
    env = {**os.environ, "NODEMETER_INGEST_KEYS": "acme=base-install-test-key-0001"}
    svc = subprocess.Popen(
        [cli, "ingest-http", "--port", "0", "--bootstrap", "127.0.0.1:9", "--spool-dir",
         str(tmp_path / "spool"), "--log-level", "CRITICAL"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert svc.stderr is not None
        line = next((ln for ln in svc.stderr if "listening on" in ln), "")
        assert line, "nodemeter ingest-http did not start"
        url = line.split("listening on ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
            assert resp.status == 200
        svc.send_signal(signal.SIGTERM)
        assert svc.wait(timeout=60) == 0
    finally:
        if svc.poll() is None:
            svc.kill()
            svc.wait()

    # a worker command says which extra to install, in one line, without a traceback
    for cmd in (["worker"], ["report", "--tenant", "acme"], ["migrate"]):
        r = _run([cli, *cmd], cwd=tmp_path)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert "install with: pip install 'nodemeter[worker]'" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

    # type checkers see the SDK's annotations
    typed = _run([py, "-c", "import nodemeter, pathlib; "
                  "print((pathlib.Path(nodemeter.__file__).parent / 'py.typed').is_file())"])  # fmt: skip
    assert typed.stdout.strip() == "True"


ROUND_TRIP = """
import json, sys, uuid
from importlib.metadata import version
from confluent_kafka import Consumer
from nodemeter.codec import decode_record
from nodemeter.meter import Meter, MeterConfig

bootstrap, topic, spool = sys.argv[1:4]
meter = Meter(MeterConfig(bootstrap_servers=bootstrap, topic=topic, spool_dir=spool))
for tokens in (100, 200, 300):
    with meter.request(tenant="acme", request_id=f"r{tokens}", workflow="w"):
        with meter.node("llm", model="gpt-4o") as span:
            span.record(input_tokens=tokens)
meter.close()
assert meter.stats.lost == 0 and meter.stats.spooled == 0, meter.stats
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
consumer.subscribe([topic])
got = []
for _ in range(120):
    msg = consumer.poll(0.5)
    if msg is not None and not msg.error():
        got.append(decode_record(msg.value()))
    if len(got) >= 6:
        break
consumer.close()
tokens = sorted(r.meters.input_tokens for r in got if hasattr(r, "meters"))
print(json.dumps({"confluent_kafka": version("confluent-kafka"), "fastavro": version("fastavro"),
                  "records": len(got), "tokens": tokens}))
"""


@pytest.mark.kafka
@pytest.mark.parametrize("bound", ["lowest", "highest"])
def test_the_sdk_round_trips_on_the_lowest_and_highest_allowed_versions(
    bound: str, wheel: Path, kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    bounds = _bounds()
    if bound == "lowest":
        reqs = [f"{name}=={low}" for name, (low, _) in bounds.items()]
    else:
        reqs = [f"{name}>={low},<{high}" for name, (low, high) in bounds.items()]
    venv = _venv(tmp_path / bound)
    _pip(venv, "--only-binary=:all:", *reqs)
    _pip(venv, "--no-deps", str(wheel))
    r = _run([str(venv / "bin" / "python"), "-c", ROUND_TRIP,
              kafka_bootstrap, topics.usage, str(tmp_path / "spool")])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    if bound == "lowest":
        assert got["confluent_kafka"] == bounds["confluent-kafka"][0] + ".0"
        assert got["fastavro"] == bounds["fastavro"][0] + ".0"
    else:  # within the range, and not the lowest (a newer release exists for both)
        for name, key in (("confluent-kafka", "confluent_kafka"), ("fastavro", "fastavro")):
            low, high = bounds[name]
            version = tuple(int(x) for x in got[key].split(".")[:2])
            assert tuple(int(x) for x in low.split(".")) < version < (int(high),), got
    # 3 usage events and 3 request ends, each once, with their exact token counts
    assert got["records"] == 6 and got["tokens"] == [100, 200, 300], got
