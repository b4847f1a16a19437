"""A real single-node Apache Kafka broker (KRaft) on loopback, without Docker.

The broker's jars are resolved from Maven Central through the checked-in
``kafka-pom.xml`` into a cache directory; storage is formatted once; the broker
runs as a background ``java kafka.Kafka`` process whose pid, logs and data live
under one directory. Standard library only, so the SDK can use it in tests.

    up()     resolve jars (cached), format storage (once), start, wait until it
             answers the Kafka protocol (ApiVersions), print where the logs are.
             Harmless when already running; a port held by another process is a
             clear error.
    down()   SIGTERM (controlled shutdown), SIGKILL after a grace period.
    status() running or not, pid, bootstrap address, log file.

With ``sasl_ssl_port`` the broker also gets a SASL_SSL listener (TLS with SCRAM-SHA-256,
SCRAM-SHA-512 and PLAIN): :func:`make_tls` makes a CA and a broker certificate for it
with ``openssl`` (once, under ``home/tls``), ``scram_users`` are created when the storage
is formatted (KRaft keeps SCRAM credentials in its metadata log) and ``plain_users`` are
listed in the listener's JAAS config. The PLAINTEXT listener stays (it carries the
inter-broker traffic and the readiness probe). For tests and trying TLS locally only:
the passwords are in the broker's config files and command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nodemeter.errors import NodemeterError
from nodemeter_stream.devenv import process

KAFKA_VERSION = "4.4.0"
_POM = Path(__file__).with_name("kafka-pom.xml")


class KafkaDevError(NodemeterError):
    """The local development broker could not be resolved, started or stopped."""


def _default_home() -> Path:
    return Path(os.environ.get("NODEMETER_HOME", Path.cwd() / ".nodemeter"))


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(base) / "nodemeter" / f"kafka-{KAFKA_VERSION}"


@dataclass(frozen=True, kw_only=True)
class KafkaDevConfig:
    """Where the broker listens and keeps its files. Validated when built."""

    host: str = "127.0.0.1"
    port: int = 19092
    controller_port: int = 19093
    home: Path = field(default_factory=lambda: _default_home() / "kafka")
    cache_dir: Path = field(default_factory=_default_cache)
    heap: str = "768m"
    start_timeout_s: float = 60.0
    # a SASL_SSL listener on this port (None: PLAINTEXT only), its users by mechanism
    sasl_ssl_port: int | None = None
    scram_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    plain_users: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        ports = [("port", self.port), ("controller_port", self.controller_port)]
        if self.sasl_ssl_port is not None:
            ports.append(("sasl_ssl_port", self.sasl_ssl_port))
        for name, value in ports:
            if not 0 < value < 65536:
                raise KafkaDevError(f"{name} must be a TCP port (1-65535), got {value}")
        if len({v for _, v in ports}) != len(ports):
            raise KafkaDevError(f"{', '.join(n for n, _ in ports)} must differ")
        if self.sasl_ssl_port is None and (self.scram_users or self.plain_users):
            raise KafkaDevError("scram_users / plain_users need a sasl_ssl_port")
        for name, password in {**self.scram_users, **self.plain_users}.items():
            for text in (name, password):
                if not text or any(c in text for c in ',=[]"\\ ') or not text.isprintable():
                    raise KafkaDevError(
                        f"dev broker user {name!r}: names and passwords must be printable, "
                        "without spaces, quotes, backslashes or ,=[]"
                    )

    @classmethod
    def from_env(cls) -> KafkaDevConfig:
        """Build from ``NODEMETER_KAFKA_PORT``, ``..._CONTROLLER_PORT``, ``..._DIR``."""
        kwargs: dict[str, object] = {}
        if "NODEMETER_KAFKA_PORT" in os.environ:
            kwargs["port"] = int(os.environ["NODEMETER_KAFKA_PORT"])
        if "NODEMETER_KAFKA_CONTROLLER_PORT" in os.environ:
            kwargs["controller_port"] = int(os.environ["NODEMETER_KAFKA_CONTROLLER_PORT"])
        elif "port" in kwargs:
            kwargs["controller_port"] = int(str(kwargs["port"])) + 1
        if "NODEMETER_KAFKA_DIR" in os.environ:
            kwargs["home"] = Path(os.environ["NODEMETER_KAFKA_DIR"])
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / "libs"

    @property
    def sasl_ssl_bootstrap(self) -> str | None:
        """host:port of the SASL_SSL listener (None without one)."""
        return None if self.sasl_ssl_port is None else f"{self.host}:{self.sasl_ssl_port}"

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def ca_file(self) -> Path:
        """The PEM CA that signed the SASL_SSL listener's certificate (clients trust it)."""
        return self.tls_dir / "ca.pem"


# --- TLS material (openssl) ---------------------------------------------------------


@dataclass(frozen=True)
class DevTls:
    """A CA and a certificate it signed: PEM files, and the PKCS12 keystore the broker
    reads (key + certificate chain, password ``keystore_password``)."""

    ca_file: Path
    ca_key: Path
    cert_file: Path
    key_file: Path
    keystore: Path
    keystore_password: str = field(repr=False)


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise KafkaDevError("openssl is needed to make the dev broker's TLS certificates")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KafkaDevError(f"openssl {args[0]} failed: {proc.stderr[-1500:]}")


def make_ca(directory: Path, *, name: str = "nodemeter dev CA", days: int = 7) -> tuple[Path, Path]:
    """A self-signed CA (EC P-256) in ``directory``: (ca.pem, ca.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key.name, "-out", ca.name, "-days", str(days), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    key.chmod(0o600)
    return ca, key


def make_tls(
    directory: Path,
    *,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = 7,
    ca: tuple[Path, Path] | None = None,
) -> DevTls:
    """A CA (or ``ca``: its pem and key) and a server certificate it signs for ``hosts``
    (DNS names and IP addresses as subjectAltNames), in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, ca_key = ca if ca is not None else make_ca(directory, days=days)
    sans = ",".join(
        f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts
    )
    (directory / "server.ext").write_text(
        f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={hosts[0]}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", str(ca_file), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", "server.pem", "-days", str(days), "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    password = uuid.uuid4().hex
    _openssl(
        "pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key",
        "-certfile", str(ca_file), "-name", "broker", "-out", "server.p12",
        "-passout", f"pass:{password}",
        cwd=directory,
    )  # fmt: skip
    (directory / "server.p12.password").write_text(password)
    for secret in ("server.key", "server.p12", "server.p12.password"):
        (directory / secret).chmod(0o600)
    return DevTls(
        ca_file=ca_file,
        ca_key=ca_key,
        cert_file=directory / "server.pem",
        key_file=directory / "server.key",
        keystore=directory / "server.p12",
        keystore_password=password,
    )


def _broker_tls(cfg: KafkaDevConfig) -> DevTls:
    """The SASL_SSL listener's certificates, made once under ``cfg.tls_dir``."""
    d = cfg.tls_dir
    password_file = d / "server.p12.password"
    if not (password_file.exists() and (d / "server.p12").exists() and cfg.ca_file.exists()):
        hosts = tuple(dict.fromkeys((cfg.host, "localhost", "127.0.0.1")))
        return make_tls(d, hosts=hosts)
    return DevTls(
        ca_file=cfg.ca_file,
        ca_key=d / "ca.key",
        cert_file=d / "server.pem",
        key_file=d / "server.key",
        keystore=d / "server.p12",
        keystore_password=password_file.read_text().strip(),
    )


def _sasl_ssl_lines(cfg: KafkaDevConfig) -> list[str]:
    tls = _broker_tls(cfg)
    plain_users = " ".join(f'user_{n}="{p}"' for n, p in cfg.plain_users.items())
    mechanisms = "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return [
        f"sasl.enabled.mechanisms={mechanisms}",
        f"listener.name.sasl_ssl.sasl.enabled.mechanisms={mechanisms}",
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}",
        f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}",
        "listener.name.sasl_ssl.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        "listener.name.sasl_ssl.ssl.keystore.type=PKCS12",
        f"listener.name.sasl_ssl.ssl.keystore.location={tls.keystore}",
        f"listener.name.sasl_ssl.ssl.keystore.password={tls.keystore_password}",
        f"listener.name.sasl_ssl.ssl.key.password={tls.keystore_password}",
        "listener.name.sasl_ssl.ssl.client.auth=none",
    ]


# --- protocol probe -------------------------------------------------------------


def kafka_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Kafka broker answers an ApiVersions request on host:port."""
    client_id = b"nodemeter-probe"
    # header v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", head)
            payload = _recv_exact(sock, min(size, 4096))
    except OSError:
        return False
    correlation_id, error_code = struct.unpack(">ih", payload[:6])
    return correlation_id == 7 and error_code in (0, 35)  # 35: UNSUPPORTED_VERSION still answers


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


port_in_use = process.port_in_use


# --- lifecycle ------------------------------------------------------------------


def _say(msg: str) -> None:
    print(f"[kafka] {msg}", file=sys.stderr, flush=True)


def resolve_jars(cfg: KafkaDevConfig) -> Path:
    """Resolve the broker's jars from Maven Central into the cache (once)."""
    marker = cfg.cache_dir / ".resolved"
    if marker.exists() and any(cfg.libs_dir.glob("kafka_2.13-*.jar")):
        return cfg.libs_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaDevError(
            "Maven (mvn) is needed to resolve the Kafka jars from Maven Central; "
            "install it (apt-get install maven) or point NODEMETER_KAFKA_BOOTSTRAP "
            "at an existing broker"
        )
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    _say(f"resolving Apache Kafka {KAFKA_VERSION} jars from Maven Central into {cfg.libs_dir}")
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(_POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={cfg.libs_dir}",
        "-DincludeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KafkaDevError(
            f"mvn failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    marker.write_text(KAFKA_VERSION)
    return cfg.libs_dir


def _write_configs(cfg: KafkaDevConfig) -> tuple[Path, Path]:
    conf_dir = cfg.home / "config"
    conf_dir.mkdir(parents=True, exist_ok=True)
    cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
    props = conf_dir / "server.properties"
    listeners = [f"PLAINTEXT://{cfg.host}:{cfg.port}"]
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    secured: list[str] = []
    if cfg.sasl_ssl_port is not None:
        listeners.append(f"SASL_SSL://{cfg.host}:{cfg.sasl_ssl_port}")
        protocols += ",SASL_SSL:SASL_SSL"
        secured = _sasl_ssl_lines(cfg)
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{cfg.host}:{cfg.controller_port}",
                f"listeners={','.join(listeners)},CONTROLLER://{cfg.host}:{cfg.controller_port}",
                f"advertised.listeners={','.join(listeners)}",
                "controller.listener.names=CONTROLLER",
                f"listener.security.protocol.map={protocols}",
                *secured,
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={cfg.data_dir}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "group.initial.rebalance.delay.ms=0",
                # tests kill workers with SIGKILL: allow short session timeouts
                "group.min.session.timeout.ms=1000",
                "auto.create.topics.enable=true",
                "log.retention.hours=168",
                "",
            ]
        )
    )
    log4j = conf_dir / "log4j2.yaml"
    log4j.write_text(
        "Configuration:\n"
        "  Appenders:\n"
        "    RollingFile:\n"
        "      name: FILE\n"
        f"      fileName: {cfg.log_file}\n"
        f"      filePattern: {cfg.log_file}.%i\n"
        "      PatternLayout:\n"
        '        pattern: "[%d] %p %m (%c)%n"\n'
        "      Policies:\n"
        "        SizeBasedTriggeringPolicy:\n"
        "          size: 20MB\n"
        "      DefaultRolloverStrategy:\n"
        "        max: 3\n"
        "  Loggers:\n"
        "    Root:\n"
        "      level: INFO\n"
        "      AppenderRef:\n"
        "        - ref: FILE\n"
        "    Logger:\n"
        "      - name: kafka.server.metadata\n"
        "        level: WARN\n"
    )
    return props, log4j


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaDevError("java (17+) is needed to run the Kafka broker; none found on PATH")
    return java


def _classpath(cfg: KafkaDevConfig) -> str:
    return str(cfg.libs_dir / "*")


def _format_storage(cfg: KafkaDevConfig, props: Path) -> None:
    if (cfg.data_dir / "meta.properties").exists():
        return
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        _java(),
        "-cp",
        _classpath(cfg),
        "kafka.tools.StorageTool",
        "format",
        f"--cluster-id={cluster_id()}",
        "-c",
        str(props),
        "--ignore-formatted",
    ]
    for name, password in cfg.scram_users.items():
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            cmd += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        out = proc.stdout + proc.stderr
        for password in cfg.scram_users.values():
            out = out.replace(password, "***")
        raise KafkaDevError(f"formatting Kafka storage failed:\n{out}")


def cluster_id() -> str:
    """A Kafka cluster id: base64url(16 random bytes) without padding, like StorageTool
    random-uuid, and (like Kafka's Uuid) never starting with '-', which the storage
    tool's argument parser would take for an option."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def read_pid(cfg: KafkaDevConfig) -> int | None:
    return process.read_pid(cfg.pid_file, b"kafka.Kafka")


def up(cfg: KafkaDevConfig | None = None) -> str:
    """Start the broker (idempotent) and return its bootstrap address."""
    cfg = cfg or KafkaDevConfig.from_env()
    pid = read_pid(cfg)
    if pid is not None and kafka_answers(cfg.host, cfg.port):
        _say(f"already running (pid {pid}) at {cfg.bootstrap}; logs: {cfg.log_file}")
        return cfg.bootstrap
    for port in (cfg.port, cfg.controller_port, cfg.sasl_ssl_port):
        if port is not None and pid is None and port_in_use(cfg.host, port):
            raise KafkaDevError(
                f"port {cfg.host}:{port} is in use by another process; choose other ports "
                "with NODEMETER_KAFKA_PORT / NODEMETER_KAFKA_CONTROLLER_PORT"
            )
    resolve_jars(cfg)
    props, log4j = _write_configs(cfg)
    _format_storage(cfg, props)
    started = time.monotonic()
    proc: subprocess.Popen[bytes] | None = None
    if pid is None:
        stdout = open(cfg.home / "logs" / "stdout.log", "ab")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen(
            [
                _java(),
                f"-Xmx{cfg.heap}",
                f"-Xms{cfg.heap}",
                "-XX:+UseG1GC",
                "-XX:TieredStopAtLevel=1",
                "-Xshare:auto",
                f"-Dlog4j2.configurationFile={log4j}",
                f"-Dkafka.logs.dir={cfg.log_file.parent}",
                "-cp",
                _classpath(cfg),
                "kafka.Kafka",
                str(props),
            ],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        stdout.close()
        cfg.pid_file.write_text(str(proc.pid))
        pid = proc.pid
    deadline = started + cfg.start_timeout_s
    while time.monotonic() < deadline:
        if kafka_answers(cfg.host, cfg.port) and (
            cfg.sasl_ssl_port is None or port_in_use(cfg.host, cfg.sasl_ssl_port)
        ):
            secured = f", SASL_SSL at {cfg.sasl_ssl_bootstrap}" if cfg.sasl_ssl_port else ""
            _say(
                f"broker {KAFKA_VERSION} up at {cfg.bootstrap}{secured} (pid {pid}) in "
                f"{time.monotonic() - started:.1f}s; logs: {cfg.log_file}"
            )
            return cfg.bootstrap
        if (proc.poll() is not None) if proc is not None else read_pid(cfg) is None:
            raise KafkaDevError(
                f"broker exited during start; see {cfg.log_file} and {cfg.home}/logs/stdout.log"
            )
        time.sleep(0.2)
    if proc is not None:  # ours and not answering: do not leave it behind
        proc.kill()
        proc.wait(10)
        with contextlib.suppress(FileNotFoundError):
            cfg.pid_file.unlink()
    raise KafkaDevError(f"broker did not answer within {cfg.start_timeout_s}s; see {cfg.log_file}")


def down(cfg: KafkaDevConfig | None = None, *, grace_s: float = 30.0) -> bool:
    """Stop the broker; True if one was running."""
    cfg = cfg or KafkaDevConfig.from_env()
    return process.stop(
        cfg.pid_file, b"kafka.Kafka", grace_s=grace_s, say=_say, what="controlled shutdown"
    )


def status(cfg: KafkaDevConfig | None = None) -> dict[str, object]:
    cfg = cfg or KafkaDevConfig.from_env()
    pid = read_pid(cfg)
    return {
        "running": pid is not None and kafka_answers(cfg.host, cfg.port),
        "pid": pid,
        "bootstrap": cfg.bootstrap,
        "sasl_ssl_bootstrap": cfg.sasl_ssl_bootstrap,
        "log_file": str(cfg.log_file),
        "data_dir": str(cfg.data_dir),
        "kafka_version": KAFKA_VERSION,
    }


def reset(cfg: KafkaDevConfig | None = None) -> None:
    """Stop the broker and delete its data (not the jar cache)."""
    cfg = cfg or KafkaDevConfig.from_env()
    down(cfg)
    shutil.rmtree(cfg.home, ignore_errors=True)
