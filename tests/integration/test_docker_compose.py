"""docker-compose.yml, the Dockerfile and the monitoring files, checked without a Docker
engine (issue 13, part 5).

- ``tests/composecheck`` (Go, built from the Go module proxy) reads the files with the
  libraries Docker's tools use: compose-go (what ``docker compose config`` runs: the
  compose-spec schema, interpolation, consistency), BuildKit's Dockerfile parser and
  linter, and Prometheus' PromQL parser.
- The Dockerfile's ``python -m pip`` steps run in venvs, stage by stage, from a copy of
  exactly what its COPY lines bring in; the second stage installs offline from the
  first stage's wheels.
- ``migrate`` and the worker then run from that venv with the command and environment the
  compose file and the image give them, the broker and the store swapped for the test's;
  the worker stores events, serves the metrics that the dashboard and the alerts query,
  answers the image's healthcheck, and stops on SIGTERM.

Not covered without an engine: the image build itself (base image, ``useradd``, file
ownership of the volume, the non-root user), container networking and Docker's DNS,
the Kafka, ClickHouse, Prometheus and Grafana images. docs/docker.md says so too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from worker_harness import encoded, end, produce, usage

from nodemeter_stream.gctune import GcTimer
from nodemeter_stream.metrics import WorkerMetrics

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
TOOL = ROOT / "tests" / "composecheck"
# Grafana's variables in the dashboard's queries, as Grafana substitutes them
GRAFANA_VARS = {"$__rate_interval": "1m", "$instance": ".+"}
# labels Prometheus adds to every scraped series
TARGET_LABELS = {"instance", "job"}

Check = Callable[..., Any]


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def _composecheck_binary() -> Path:
    """tests/composecheck, built once per source and Go version and kept in the user's
    cache (a fresh machine's first build, modules included, takes minutes here)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain on PATH: tests/composecheck cannot be built")
    version = _run([go, "version"]).stdout.encode()
    key = hashlib.sha256(version)
    for name in ("main.go", "go.mod", "go.sum"):
        key.update((TOOL / name).read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nodemeter"
    binary = cache / f"composecheck-{key.hexdigest()[:16]}"
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(f".{os.getpid()}.tmp")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    started = time.monotonic()
    r = _run([go, "build", "-o", str(partial), "."], cwd=TOOL, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    partial.replace(binary)
    for old in cache.glob("composecheck-*"):  # builds of earlier sources
        if old != binary:
            old.unlink(missing_ok=True)
    print(f"composecheck built in {time.monotonic() - started:.1f} s: {binary}")
    return binary


@pytest.fixture(scope="module")
def composecheck(tmp_path_factory: pytest.TempPathFactory) -> Check:
    """``check(kind, path)``: the tool's JSON for a compose file, Dockerfile or PromQL list."""
    binary = _composecheck_binary()
    home = tmp_path_factory.mktemp("composecheck")

    def check(kind: str, path: Path, *, ok: bool = True) -> Any:
        # compose-go interpolates from the environment: give it none of ours, as a
        # fresh shell would, so that the file's own defaults apply
        clean = {"PATH": os.environ["PATH"], "HOME": str(home)}
        res = _run([str(binary), kind, str(path)], cwd=path.parent, env=clean)
        if not ok:
            assert res.returncode == 1, res.stdout
            return res.stderr
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    return check


@pytest.fixture(scope="module")
def project(composecheck: Check) -> dict[str, Any]:
    return dict(composecheck("compose", COMPOSE))


@pytest.fixture(scope="module")
def dockerfile(composecheck: Check) -> dict[str, Any]:
    return dict(composecheck("dockerfile", DOCKERFILE))


def _commands(stage: dict[str, Any], name: str) -> list[Any]:
    return [c["value"] for c in stage["commands"] if c["name"] == name]


def image_env(dockerfile: dict[str, Any]) -> dict[str, str]:
    """The runtime stage's ENV, as a container starts with it."""
    env: dict[str, str] = {}
    for cmd in _commands(dockerfile["stages"][-1], "ENV"):
        env.update({kv["Key"]: kv["Value"] for kv in cmd["Env"]})
    return env


def image_volume(dockerfile: dict[str, Any]) -> str:
    (cmd,) = _commands(dockerfile["stages"][-1], "VOLUME")
    (volume,) = cmd["Volumes"]
    return str(volume)


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside a service's container comes from, through its bind mounts."""
    for mount in service.get("volumes", []):
        target = mount["target"].rstrip("/")
        if mount["type"] == "bind" and (
            container_path == target or container_path.startswith(target + "/")
        ):
            return Path(mount["source"]) / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not bind-mounted in {service.get('image')}")


def worker_metrics_port(project: dict[str, Any], dockerfile: dict[str, Any]) -> int:
    env = {**image_env(dockerfile), **project["services"]["worker"]["environment"]}
    return int(env["NODEMETER_WORKER_METRICS_PORT"])


# --- the compose file and the Dockerfile, as Docker's own parsers read them -----------


def test_compose_file_loads_as_docker_compose_config_does(
    project: dict[str, Any], dockerfile: dict[str, Any]
) -> None:
    services = project["services"]
    assert set(services) == {"kafka", "clickhouse", "migrate", "worker", "prometheus", "grafana"}
    # named in the file: the volumes' names do not depend on the checkout's folder
    assert project["volumes"]["worker-data"]["name"] == "nodemeter_worker-data"
    worker, migrate = services["worker"], services["migrate"]
    for svc in (worker, migrate):  # built from the Dockerfile, not a bare python image
        assert Path(svc["build"]["context"]) == ROOT
        assert (ROOT / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert svc["image"] == worker["image"]
    # the checkout is not mounted (the image has the code); the data volume is writable
    assert not [m for m in worker.get("volumes", []) if m["type"] == "bind"]
    (data,) = worker["volumes"]
    assert data["type"] == "volume" and data["source"] in project["volumes"]
    assert data["target"] == image_volume(dockerfile) and not data.get("read_only")
    data_dir = image_env(dockerfile)["NODEMETER_WORKER_DATA_DIR"]
    assert data_dir.startswith(data["target"] + "/")
    # migrate runs once and first; the worker waits for it and a healthy broker
    assert migrate["command"] == ["migrate"] and migrate.get("restart") == "no"
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert migrate["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    # the worker reaches the other services by their compose names
    env = worker["environment"]
    assert env["NODEMETER_KAFKA_BOOTSTRAP"] == "kafka:29092"
    assert (
        "INTERNAL://kafka:29092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert env["NODEMETER_CLICKHOUSE_URL"].startswith("http://default@clickhouse:8123")
    assert (
        env["NODEMETER_CLICKHOUSE_PASSWORD"]
        == services["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"]
    )
    assert migrate["environment"] == env
    # metrics on all interfaces, on the port the image exposes; time to drain on stop
    assert worker["command"][:1] == ["worker"] and "--metrics-host" in worker["command"]
    assert worker["command"][worker["command"].index("--metrics-host") + 1] == "0.0.0.0"
    (exposed,) = _commands(dockerfile["stages"][-1], "EXPOSE")
    port = worker_metrics_port(project, dockerfile)
    assert [str(port)] == exposed["Ports"] == worker["expose"]
    assert worker["stop_grace_period"] == "45s"  # > the 30 s session timeout the drain waits


def test_compose_loader_rejects_a_broken_file(composecheck: Check, tmp_path: Path) -> None:
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["worker"]["depends_on"]["schema-registry"] = {"condition": "x"}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert "depends_on" in composecheck("compose", path, ok=False)


def test_dockerfile_parses_lints_clean_and_runs_as_a_user(dockerfile: dict[str, Any]) -> None:
    assert dockerfile["warnings"] == []
    build, runtime = dockerfile["stages"]
    user = _commands(runtime, "USER")[-1]["User"]
    assert user not in ("", "root", "0")
    (entry,) = _commands(runtime, "ENTRYPOINT")
    assert entry["CmdLine"] == ["nodemeter"] and not entry["PrependShell"]
    (health,) = _commands(runtime, "HEALTHCHECK")
    assert health["Health"]["Test"][0] == "CMD"
    # the runtime installs offline, from the first stage's wheels only
    (install,) = [c for c in runtime["commands"] if "pip install" in c["original"]]
    assert "--no-index" in install["original"]
    assert f"from={build['name']}" in install["original"]
    # every path the wheel is built from is copied in (pyproject's hatch settings)
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = meta["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = ["pyproject.toml", meta["project"]["readme"], *wheel["packages"]]
    needed += list(wheel.get("force-include", {}))
    copied = [src for c in _commands(build, "COPY") for src in c["SourcePaths"]]
    for path in needed:
        assert any(path == src or path.startswith(src + "/") for src in copied), path
    for src in copied:
        assert (ROOT / src).exists(), src


# --- Prometheus and Grafana against the metrics the worker exports ---------------------


def exported_series(text: str) -> dict[str, str]:
    """Series name -> its metric family, from a /metrics page (counters: ``_total``)."""
    out: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.endswith("_created"):  # prometheus_client's creation timestamps
            continue
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "summary": ["_sum", "_count", ""],
        }.get(fam.type, [""])
        out.update({fam.name + s: fam.name for s in suffixes})
    return out


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def dashboard_queries() -> tuple[list[str], list[tuple[str, str]]]:
    """The dashboard's PromQL (Grafana's variables substituted) and its label_values()."""
    board = json.loads((ROOT / "deploy/grafana/dashboards/nodemeter-worker.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    label_values = [
        (m[1], m[2])
        for v in board["templating"]["list"]
        if (m := re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", v["query"]["query"]))
    ]
    assert len(label_values) == len(board["templating"]["list"])
    for var, value in GRAFANA_VARS.items():
        exprs = [e.replace(var, value) for e in exprs]
    assert not [e for e in exprs if "$" in e], "a Grafana variable the test does not know"
    return exprs, label_values


def alert_queries() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_dashboard_and_alerts_query_only_what_the_worker_exports(
    composecheck: Check, tmp_path: Path
) -> None:
    metrics = WorkerMetrics()
    metrics.watch_gc(GcTimer())  # as the worker does at start
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = metrics.serve(port)
    try:
        series = exported_series(scrape(port))
    finally:
        server.shutdown()
        server.server_close()
    # the label names each family declares (labelled families show no sample until used)
    declared = {
        m._name: set(m._labelnames)  # prometheus_client keeps them on the metric
        for m in vars(metrics).values()
        if hasattr(m, "_labelnames")
    }
    declared["nodemeter_gc_seconds"] = {"generation"}  # watch_gc's collector
    assert "nodemeter_dead_letters" in declared and "nodemeter_events_in" in series.values()

    exprs, label_values = dashboard_queries()
    exprs += alert_queries()
    listed = tmp_path / "exprs.json"
    listed.write_text(json.dumps(exprs))
    parsed = composecheck("promql", listed)  # Prometheus' parser: a typo fails here
    assert len(parsed) == len(exprs) > 10
    used = set()
    for sel in parsed:
        for name in sel["metrics"]:
            used.add(name)
            if name == "up":  # Prometheus' own series per target
                assert set(sel["labels"]) <= TARGET_LABELS, sel
                continue
            assert name in series, f"{sel['expr']}: the worker exports no {name}"
            allowed = declared[series[name]] | TARGET_LABELS
            if name.endswith("_bucket"):
                allowed |= {"le"}
            assert set(sel["labels"]) <= allowed, (sel, allowed)
    for name, label in label_values:
        assert name in series and label in TARGET_LABELS | declared[series[name]]
    # every family of the worker is on the dashboard
    assert {series[n] for n in used if n in series} == set(series.values())


def test_prometheus_and_grafana_are_wired_to_the_worker(
    project: dict[str, Any], dockerfile: dict[str, Any]
) -> None:
    services = project["services"]
    prom, grafana = services["prometheus"], services["grafana"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in prom["command"])
    prom_yml = host_path(prom, flags["config.file"])
    assert prom_yml == ROOT / "deploy/prometheus/prometheus.yml"
    cfg = yaml.safe_load(prom_yml.read_text())
    for rules in cfg["rule_files"]:
        assert host_path(prom, rules).is_file(), rules
    (job,) = cfg["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == worker_metrics_port(project, dockerfile)
    assert job["job_name"] == "nodemeter-worker"  # the dashboard's up{job=...}
    assert any('job="nodemeter-worker"' in e for e in dashboard_queries()[0])

    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards/nodemeter.yml").read_text())[
        "providers"
    ]
    boards = list(host_path(grafana, provider["options"]["path"]).glob("*.json"))
    assert [b.name for b in boards] == ["nodemeter-worker.json"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home) == boards[0]
    board = json.loads(boards[0].read_text())
    uids = {p["datasource"]["uid"] for p in board["panels"]}
    uids |= {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
    assert uids == {datasource["uid"]}


# --- the image's install steps, then migrate and the worker as compose runs them -------

CONTAINER_PATH = re.compile(r"(?<![\w/.-])(/[A-Za-z0-9_./-]+)")


def _copy_build_context(stage: dict[str, Any], dest_root: Path) -> Path:
    """What the stage's WORKDIR holds after its COPY lines (.dockerignore applied)."""
    ignore = [
        line.strip().removeprefix("**/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    (workdir,) = _commands(stage, "WORKDIR")
    work = dest_root / workdir["Path"].lstrip("/")
    work.mkdir(parents=True)
    for copy in _commands(stage, "COPY"):
        for src in copy["SourcePaths"]:
            target = work / copy["DestPath"]
            if copy["DestPath"].endswith("/") or len(copy["SourcePaths"]) > 1:
                target = target / Path(src).name
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns(*ignore))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / src, target)
    return work


def _venv(path: Path) -> Path:
    r = _run([sys.executable, "-m", "venv", str(path)])
    assert r.returncode == 0, r.stderr
    return path


def _run_pip_steps(stage: dict[str, Any], bin_dir: Path, paths: dict[str, Path], cwd: Path) -> None:
    """The stage's ``python -m pip`` RUN lines, with ``python`` the venv's and the image's
    paths mapped to the test's. What is installed is the same; how differs: the test
    drops --no-cache-dir (it keeps the image small; pip's cache serves repeated runs) and
    installs with --no-compile (the image's .pyc files take 26 s to write here)."""
    # a Docker build sees none of this machine's pip settings that pick packages
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_NO_INDEX")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    steps = [c for c in _commands(stage, "RUN") if c["CmdLine"][0].startswith("python -m pip ")]
    assert steps, "no pip step in this stage"
    for run in steps:
        (line,) = run["CmdLine"]
        line = line.replace(" --no-cache-dir", "").replace(
            " pip install ", " pip install --no-compile "
        )
        line = CONTAINER_PATH.sub(lambda m: _map_path(m.group(1), paths), line)
        started = time.monotonic()
        r = _run(["sh", "-c", line], cwd=cwd, env=env)
        assert r.returncode == 0, f"{line}\n{r.stderr[-4000:]}"
        print(f"{time.monotonic() - started:5.1f} s  {line}")


def _map_path(path: str, paths: dict[str, Path]) -> str:
    for inside, outside in paths.items():
        if path == inside or path.startswith(inside + "/"):
            return str(outside) + path[len(inside) :]
    raise AssertionError(f"the test has no place for the image path {path}")


@pytest.fixture(scope="module")
def image_venv(dockerfile: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv installed by the Dockerfile's pip steps, as its stages run them."""
    root = tmp_path_factory.mktemp("image")
    build, runtime = dockerfile["stages"]
    work = _copy_build_context(build, root / "build")
    paths = {"/" + str(work.relative_to(root / "build")): work, "/wheels": root / "wheels"}
    started = time.monotonic()
    # `pip wheel` installs nothing into its environment (the build is isolated): this
    # interpreter stands in for the build stage's
    _run_pip_steps(build, Path(sys.executable).parent, paths, work)
    assert list((root / "wheels").glob("nodemeter-*.whl"))
    image = _venv(root / "image-venv")
    # the runtime stage sees the build stage's wheels only (a bind mount of /wheels)
    _run_pip_steps(runtime, image / "bin", {"/wheels": root / "wheels"}, root)
    print(f"the Dockerfile's pip steps took {time.monotonic() - started:.1f} s")
    return image


def test_the_image_install_has_the_worker_and_its_extra(image_venv: Path) -> None:
    py = str(image_venv / "bin" / "python")
    probe = _run([py, "-c", "import faust, aiokafka, clickhouse_connect, chdb, prometheus_client"])
    assert probe.returncode == 0, probe.stderr
    help_ = _run([str(image_venv / "bin" / "nodemeter"), "worker", "--help"])
    assert help_.returncode == 0 and "--metrics-host" in help_.stdout, help_.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def container_env(
    project: dict[str, Any],
    dockerfile: dict[str, Any],
    image_venv: Path,
    kafka_bootstrap: str,
    clickhouse_url: str,
    topic_prefix: str,
    tmp_path: Path,
) -> Iterator[tuple[dict[str, str], Path]]:
    """The worker container's environment (image ENV, then the compose file's), with the
    compose services swapped for the test's broker and store, and the volume a temp dir."""
    volume = tmp_path / "volume"
    volume.mkdir()
    inside = image_volume(dockerfile)
    env = {**image_env(dockerfile), **project["services"]["worker"]["environment"]}
    env = {k: v.replace(inside, str(volume)) for k, v in env.items()}
    env["NODEMETER_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    database = f"compose_{uuid.uuid4().hex[:10]}"
    if clickhouse_url.startswith("http"):  # a server: the tests' own credentials
        env["NODEMETER_CLICKHOUSE_URL"] = clickhouse_url
        env.pop("NODEMETER_CLICKHOUSE_PASSWORD")
    else:  # chDB in the volume, as the image's default
        env["NODEMETER_CLICKHOUSE_URL"] = f"chdb://{volume / 'chdb'}"
        env.pop("NODEMETER_CLICKHOUSE_PASSWORD")
    env["NODEMETER_CLICKHOUSE_DATABASE"] = database
    env["NODEMETER_WORKER_METRICS_PORT"] = str(_free_port())  # 9108 may be taken here
    env["NODEMETER_TOPIC_PREFIX"] = topic_prefix  # this test's topics and group only
    env["NODEMETER_WORKER_APP_ID"] = f"nodemeter-compose-{uuid.uuid4().hex[:8]}"
    # a container has no other variables; HOME is the image user's (the volume)
    env.update(PATH=f"{image_venv / 'bin'}{os.pathsep}/usr/bin:/bin", HOME=str(volume))
    yield env, volume
    if clickhouse_url.startswith("http"):
        _query(image_venv, env, f"DROP DATABASE IF EXISTS {database}")


_QUERY = """
import json, sys
from nodemeter_stream.sink.store import ClickHouseConfig, connect
client = connect(ClickHouseConfig(), create_database=False)
print(json.dumps([list(r) for r in client.query(sys.argv[1]).result_rows], default=str))
"""


def _query(venv: Path, env: dict[str, str], sql: str) -> list[list[Any]]:
    r = _run([str(venv / "bin" / "python"), "-c", _QUERY, sql], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows: list[list[Any]] = json.loads(r.stdout.strip().splitlines()[-1])
    return rows


def _command(service: dict[str, Any], dockerfile: dict[str, Any]) -> list[str]:
    """entrypoint + command, as Docker combines them (compose overrides the image's)."""
    runtime = dockerfile["stages"][-1]
    entry = service.get("entrypoint") or _commands(runtime, "ENTRYPOINT")[-1]["CmdLine"]
    cmd = service.get("command") or _commands(runtime, "CMD")[-1]["CmdLine"]
    return [*entry, *cmd]


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_migrate_and_the_worker_run_as_compose_starts_them(
    project: dict[str, Any],
    dockerfile: dict[str, Any],
    image_venv: Path,
    container_env: tuple[dict[str, str], Path],
    kafka_bootstrap: str,
    topics: Any,
) -> None:
    env, volume = container_env
    services = project["services"]
    migrate = _run(_command(services["migrate"], dockerfile), env=env, cwd=volume)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    assert "migration(s) applied" in migrate.stdout

    cmd = _command(services["worker"], dockerfile)
    assert cmd[:2] == ["nodemeter", "worker"]
    health = _commands(dockerfile["stages"][-1], "HEALTHCHECK")[0]["Health"]["Test"][1:]
    port = int(env["NODEMETER_WORKER_METRICS_PORT"])
    log = (volume / "worker.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=volume, stdout=log, stderr=subprocess.STDOUT)
    try:
        records = [usage("acme", f"r{i}", f"s{j}", input_tokens=10 * i + j)
                   for i in range(3) for j in range(2)]  # fmt: skip
        messages = encoded([*records, *(end("acme", f"r{i}", 2) for i in range(3))])
        produce(kafka_bootstrap, topics.usage, [*messages, (b"acme", b"not an event")])
        text, deadline = "", time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (volume / "worker.log").read_text()[-5000:]
            try:
                text = scrape(port)
            except OSError:
                time.sleep(0.5)
                continue
            values = {
                s.name: s.value
                for fam in text_string_to_metric_families(text)
                for s in fam.samples
                if not s.labels
            }
            dead = sum(
                s.value
                for fam in text_string_to_metric_families(text)
                for s in fam.samples
                if s.name == "nodemeter_dead_letters_total"
            )
            if values.get("nodemeter_events_stored_total", 0) >= len(records) and dead >= 1:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not stored in time:\n{text}\n{_tail(volume)}")
        # the image's healthcheck passes against the running worker
        ok = _run(health, env=env, cwd=volume)
        assert ok.returncode == 0, ok.stderr
        # the live worker exports every series the dashboard and alerts query
        series = exported_series(text)
        assert 'reason="' in text and "nodemeter_consumer_lag{" in text
        exprs, _ = dashboard_queries()
        for name in {n for e in exprs + alert_queries() for n in re.findall(r"nodemeter_\w+", e)}:
            assert name in series, name
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(90)
        log.close()
    assert rc == 0, _tail(volume)
    assert "drained" in (volume / "worker.log").read_text()
    assert (volume / "faust").is_dir()  # Faust's directory in the volume, not the checkout
    assert _run(health, env=env, cwd=volume).returncode != 0  # and unhealthy once stopped
    stored = _query(image_venv, env, "SELECT count() FROM usage_events FINAL")
    assert stored == [[len(records)]]
    dead_rows = _query(image_venv, env, "SELECT count() FROM dead_letters FINAL")
    assert dead_rows == [[1]]


def _tail(volume: Path) -> str:
    return (volume / "worker.log").read_text(errors="replace")[-5000:]
