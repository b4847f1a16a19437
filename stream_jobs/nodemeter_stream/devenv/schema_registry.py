"""A real Schema Registry (Apicurio Registry, in-memory) on loopback, without Docker.

Apicurio is a Quarkus app; Maven Central serves its modules but no runnable build, so
the checked-in ``apicurio-app/pom.xml`` builds one (``mvn package``: resolve, then
Quarkus augmentation) into a cache directory, once. The registry then runs as a
background ``java -jar`` process whose pid and log live under one directory. It speaks
the Confluent Schema Registry API under ``/apis/ccompat/v7``: that URL is what the SDK's
``registry_url`` and the worker's ``NODEMETER_SCHEMA_REGISTRY_URL`` take. Standard
library only, like :mod:`nodemeter_stream.devenv.kafka`.

    build()  build the app (cached; prints progress and how long it took).
    up()     build if needed, start, wait until the ccompat API answers.
             Harmless when already running; a port held by another process is a
             clear error. Storage is in memory: a restart starts empty.
    down()   SIGTERM, SIGKILL after a grace period.
    status() running or not, pid, URL, log file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from nodemeter.errors import NodemeterError
from nodemeter_stream.devenv import process

APICURIO_VERSION = "2.4.2.Final"
_APP_DIR = Path(__file__).with_name("apicurio-app")
_RUNNER = "nodemeter-dev-apicurio-1-runner.jar"
CCOMPAT_PATH = "/apis/ccompat/v7"


class SchemaRegistryDevError(NodemeterError):
    """The local Schema Registry could not be built, started or stopped."""


def _default_home() -> Path:
    return Path(os.environ.get("NODEMETER_HOME", Path.cwd() / ".nodemeter"))


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(base) / "nodemeter" / f"apicurio-{APICURIO_VERSION}"


@dataclass(frozen=True, kw_only=True)
class SchemaRegistryDevConfig:
    """Where the registry listens and keeps its files. Validated when built."""

    host: str = "127.0.0.1"
    port: int = 18081
    home: Path = field(default_factory=lambda: _default_home() / "schema-registry")
    cache_dir: Path = field(default_factory=_default_cache)
    heap: str = "384m"
    start_timeout_s: float = 90.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SchemaRegistryDevError(f"port must be a TCP port (1-65535), got {self.port}")

    @classmethod
    def from_env(cls) -> SchemaRegistryDevConfig:
        """Build from ``NODEMETER_SCHEMA_REGISTRY_PORT`` and ``..._DIR``."""
        kwargs: dict[str, object] = {}
        if "NODEMETER_SCHEMA_REGISTRY_PORT" in os.environ:
            kwargs["port"] = int(os.environ["NODEMETER_SCHEMA_REGISTRY_PORT"])
        if "NODEMETER_SCHEMA_REGISTRY_DIR" in os.environ:
            kwargs["home"] = Path(os.environ["NODEMETER_SCHEMA_REGISTRY_DIR"])
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        """The Confluent-compatible API: the SDK's and the worker's registry URL."""
        return f"http://{self.host}:{self.port}{CCOMPAT_PATH}"

    @property
    def log_file(self) -> Path:
        return self.home / "registry.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "registry.pid"

    @property
    def build_dir(self) -> Path:
        return self.cache_dir / "build"

    @property
    def runner(self) -> Path:
        return self.build_dir / _RUNNER


def _say(msg: str) -> None:
    print(f"[schema-registry] {msg}", file=sys.stderr, flush=True)


def _sources_digest() -> str:
    """The build's inputs: a change to the pom or the Java source rebuilds the app."""
    h = hashlib.sha256()
    for path in sorted(p for p in _APP_DIR.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(_APP_DIR)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise SchemaRegistryDevError("java (17+) is needed to run Apicurio Registry; none on PATH")
    return java


def build(cfg: SchemaRegistryDevConfig | None = None) -> Path:
    """Build the runnable registry into the cache (once) and return the runner jar."""
    cfg = cfg or SchemaRegistryDevConfig.from_env()
    marker = cfg.cache_dir / ".built"
    digest = _sources_digest()
    if cfg.runner.exists() and marker.exists() and marker.read_text().strip() == digest:
        return cfg.runner
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SchemaRegistryDevError(
            "Maven (mvn) is needed to build Apicurio Registry from Maven Central; "
            "install it (apt-get install maven)"
        )
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    log = cfg.cache_dir / "build.log"
    _say(
        f"building Apicurio Registry {APICURIO_VERSION} from Maven Central into {cfg.build_dir} "
        f"(first time: about 2 minutes and 230 MB from Maven Central); log: {log}"
    )
    started = time.monotonic()
    shutil.rmtree(cfg.build_dir, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        "-ntp",
        "-f",
        str(_APP_DIR / "pom.xml"),
        "package",
        "-DskipTests",
        f"-Dnodemeter.build.dir={cfg.build_dir}",
    ]
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0 or not cfg.runner.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise SchemaRegistryDevError(
            f"building Apicurio Registry failed (mvn exit {proc.returncode}); "
            f"full log: {log}\n{tail}"
        )
    marker.write_text(digest)
    _say(f"built in {time.monotonic() - started:.0f}s: {cfg.runner}")
    return cfg.runner


def registry_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Confluent-compatible registry at ``url`` lists its subjects."""
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=timeout) as resp:
            return resp.status == 200 and isinstance(json.loads(resp.read()), list)
    except (OSError, ValueError):
        return False


port_in_use = process.port_in_use


def read_pid(cfg: SchemaRegistryDevConfig) -> int | None:
    return process.read_pid(cfg.pid_file, _RUNNER.encode())


def up(cfg: SchemaRegistryDevConfig | None = None) -> str:
    """Start the registry (idempotent) and return its Confluent-compatible API URL."""
    cfg = cfg or SchemaRegistryDevConfig.from_env()
    pid = read_pid(cfg)
    if pid is not None and registry_answers(cfg.url):
        _say(f"already running (pid {pid}) at {cfg.url}; log: {cfg.log_file}")
        return cfg.url
    if pid is None and port_in_use(cfg.host, cfg.port):
        raise SchemaRegistryDevError(
            f"port {cfg.host}:{cfg.port} is in use by another process; choose another "
            "with NODEMETER_SCHEMA_REGISTRY_PORT"
        )
    runner = build(cfg)
    cfg.home.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc: subprocess.Popen[bytes] | None = None
    if pid is None:
        out = open(cfg.log_file, "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [
                _java(),
                f"-Xmx{cfg.heap}",
                "-XX:TieredStopAtLevel=1",
                f"-Dquarkus.http.host={cfg.host}",
                f"-Dquarkus.http.port={cfg.port}",
                "-jar",
                str(runner),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cfg.home,
            start_new_session=True,
        )
        out.close()
        cfg.pid_file.write_text(str(proc.pid))
        pid = proc.pid
    deadline = started + cfg.start_timeout_s
    while time.monotonic() < deadline:
        if registry_answers(cfg.url):
            _say(
                f"Apicurio Registry {APICURIO_VERSION} up at {cfg.url} (pid {pid}) in "
                f"{time.monotonic() - started:.1f}s; log: {cfg.log_file}"
            )
            return cfg.url
        if (proc.poll() is not None) if proc is not None else read_pid(cfg) is None:
            raise SchemaRegistryDevError(
                f"the registry exited during start; log: {cfg.log_file}\n{_tail(cfg)}"
            )
        time.sleep(0.25)
    if proc is not None:  # ours and not answering: do not leave it behind
        proc.kill()
        proc.wait(10)
        with contextlib.suppress(FileNotFoundError):
            cfg.pid_file.unlink()
    raise SchemaRegistryDevError(
        f"the registry did not answer {cfg.url} within {cfg.start_timeout_s:.0f}s; "
        f"log: {cfg.log_file}\n{_tail(cfg)}"
    )


def _tail(cfg: SchemaRegistryDevConfig, n: int = 3000) -> str:
    try:
        return cfg.log_file.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def down(cfg: SchemaRegistryDevConfig | None = None, *, grace_s: float = 20.0) -> bool:
    """Stop the registry; True if one was running."""
    cfg = cfg or SchemaRegistryDevConfig.from_env()
    return process.stop(cfg.pid_file, _RUNNER.encode(), grace_s=grace_s, say=_say, what="shutdown")


def status(cfg: SchemaRegistryDevConfig | None = None) -> dict[str, object]:
    cfg = cfg or SchemaRegistryDevConfig.from_env()
    pid = read_pid(cfg)
    return {
        "running": pid is not None and registry_answers(cfg.url),
        "pid": pid,
        "url": cfg.url,
        "log_file": str(cfg.log_file),
        "built": cfg.runner.exists(),
        "apicurio_version": APICURIO_VERSION,
    }
