"""Kafka TLS and SASL settings: one configuration for every client nodemeter makes.

The SDK's producer, the budget view, the worker (Faust on aiokafka), topic creation and
every CLI read the same variables, from the environment and, optionally, from a file
named by ``NODEMETER_KAFKA_CONFIG`` holding the same ``KEY=VALUE`` lines (the
environment wins over the file)::

    NODEMETER_KAFKA_SECURITY_PROTOCOL    PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
    NODEMETER_KAFKA_SASL_MECHANISM       PLAIN (default), SCRAM-SHA-256, SCRAM-SHA-512
    NODEMETER_KAFKA_SASL_USERNAME
    NODEMETER_KAFKA_SASL_PASSWORD        or NODEMETER_KAFKA_SASL_PASSWORD_FILE (one of them)
    NODEMETER_KAFKA_SSL_CA_FILE          PEM CA bundle (default: the system's trust store)
    NODEMETER_KAFKA_SSL_CERT_FILE        client certificate (PEM) for mutual TLS
    NODEMETER_KAFKA_SSL_KEY_FILE         its private key (PEM)
    NODEMETER_KAFKA_SSL_KEY_PASSWORD     or ..._SSL_KEY_PASSWORD_FILE, if the key is encrypted
    NODEMETER_KAFKA_SSL_CHECK_HOSTNAME   true (default) / false

:class:`KafkaSecurity` validates them when built (a :class:`~nodemeter.errors.ConfigError`
naming the variable) and renders them for librdkafka (:meth:`KafkaSecurity.librdkafka`)
and for aiokafka (:meth:`KafkaSecurity.aiokafka`, with an :class:`ssl.SSLContext`).
:func:`explain_failure` turns a client's authentication or TLS error into a message that
names the cause and the variables to check.

Pure: the standard library only (no Kafka client is imported). Secrets (the passwords)
never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nodemeter.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
CONFIG_FILE_VAR = "NODEMETER_KAFKA_CONFIG"
MASK = "***"

# variable -> KafkaSecurity field
VARS: dict[str, str] = {
    "NODEMETER_KAFKA_SECURITY_PROTOCOL": "protocol",
    "NODEMETER_KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "NODEMETER_KAFKA_SASL_USERNAME": "sasl_username",
    "NODEMETER_KAFKA_SASL_PASSWORD": "sasl_password",
    "NODEMETER_KAFKA_SSL_CA_FILE": "ssl_ca_file",
    "NODEMETER_KAFKA_SSL_CERT_FILE": "ssl_cert_file",
    "NODEMETER_KAFKA_SSL_KEY_FILE": "ssl_key_file",
    "NODEMETER_KAFKA_SSL_KEY_PASSWORD": "ssl_key_password",
    "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME": "ssl_check_hostname",
}
# secrets read from a file: variable -> the variable it stands for
FILE_VARS = {
    "NODEMETER_KAFKA_SASL_PASSWORD_FILE": "NODEMETER_KAFKA_SASL_PASSWORD",
    "NODEMETER_KAFKA_SSL_KEY_PASSWORD_FILE": "NODEMETER_KAFKA_SSL_KEY_PASSWORD",
}
KEYS = (*VARS, *FILE_VARS)
_VAR_OF = {f: v for v, f in VARS.items()}
_SECRET_FIELDS = frozenset({"sasl_password", "ssl_key_password"})
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

# librdkafka error codes (confluent_kafka.KafkaError), kept here to stay import-free
ERR_AUTHENTICATION = -169  # _AUTHENTICATION
ERR_SSL = -181  # _SSL
ERR_SASL_AUTHENTICATION_FAILED = 58  # broker: SASL_AUTHENTICATION_FAILED


def _var(name: str) -> str:
    """The variable that sets field ``name``."""
    return _VAR_OF.get(name, name)


@dataclass(frozen=True, kw_only=True, repr=False)
class KafkaSecurity:
    """How clients authenticate to Kafka and protect the connection; validated when built.

    ``origin`` says where the values came from (for error messages: "the environment",
    a config file); it takes no part in equality.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None  # None: PLAIN when the protocol uses SASL
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_key_password: str | None = None
    ssl_check_hostname: bool = True
    origin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = f" ({self.origin})" if self.origin else ""
        protocol = str(self.protocol or "PLAINTEXT").strip().upper()
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"NODEMETER_KAFKA_SECURITY_PROTOCOL={self.protocol!r}{where} is not one of "
                f"{', '.join(PROTOCOLS)}"
            )
        object.__setattr__(self, "protocol", protocol)
        mechanism = self.sasl_mechanism
        if mechanism is not None:
            mechanism = str(mechanism).strip().upper().replace("_", "-")
            if mechanism not in MECHANISMS:
                raise ConfigError(
                    f"NODEMETER_KAFKA_SASL_MECHANISM={self.sasl_mechanism!r}{where} is not one "
                    f"of {', '.join(MECHANISMS)}"
                )
        for name in ("sasl_username", "ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        if self.uses_sasl:
            object.__setattr__(self, "sasl_mechanism", mechanism or "PLAIN")
            missing = [
                v
                for v, value in (
                    ("NODEMETER_KAFKA_SASL_USERNAME", self.sasl_username),
                    ("NODEMETER_KAFKA_SASL_PASSWORD (or ..._PASSWORD_FILE)", self.sasl_password),
                )
                if not value
            ]
            if missing:
                raise ConfigError(
                    f"NODEMETER_KAFKA_SECURITY_PROTOCOL={protocol}{where} needs "
                    f"{' and '.join(missing)}"
                )
        else:
            object.__setattr__(self, "sasl_mechanism", mechanism)
            given = [
                _var(n)
                for n in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, n)
            ]
            if given:
                raise ConfigError(
                    f"{', '.join(given)} set{where}, but NODEMETER_KAFKA_SECURITY_PROTOCOL="
                    f"{protocol} uses no SASL (SASL_PLAINTEXT or SASL_SSL do)"
                )
        if not isinstance(self.ssl_check_hostname, bool):
            raise ConfigError("NODEMETER_KAFKA_SSL_CHECK_HOSTNAME must be true or false")
        tls_given = [
            _var(n)
            for n in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_key_password")
            if getattr(self, n)
        ]
        if not self.uses_ssl:
            if tls_given:
                raise ConfigError(
                    f"{', '.join(tls_given)} set{where}, but NODEMETER_KAFKA_SECURITY_PROTOCOL="
                    f"{protocol} uses no TLS (SSL or SASL_SSL do)"
                )
            return
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            raise ConfigError(
                "NODEMETER_KAFKA_SSL_CERT_FILE and NODEMETER_KAFKA_SSL_KEY_FILE go together "
                f"(mutual TLS){where}: one is set without the other"
            )
        if self.ssl_key_password and not self.ssl_key_file:
            raise ConfigError(
                f"NODEMETER_KAFKA_SSL_KEY_PASSWORD set{where} without NODEMETER_KAFKA_SSL_KEY_FILE"
            )
        for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
            path = getattr(self, name)
            if path is None:
                continue
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"{_var(name)}={path}{where}: no such file")
            if not os.access(p, os.R_OK):
                raise ConfigError(f"{_var(name)}={path}{where}: not readable")
        # load them once now: a file that is not PEM fails here, naming its variable
        check = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ssl_ca_file:
            try:
                check.load_verify_locations(cafile=self.ssl_ca_file)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(
                    f"NODEMETER_KAFKA_SSL_CA_FILE={self.ssl_ca_file}{where} holds no PEM "
                    f"certificate ({_ssl_reason(exc)})"
                ) from None
        if self.ssl_cert_file and self.ssl_key_file:
            try:
                check.load_cert_chain(
                    self.ssl_cert_file, self.ssl_key_file, password=self.ssl_key_password or None
                )
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(
                    f"NODEMETER_KAFKA_SSL_CERT_FILE={self.ssl_cert_file} / "
                    f"NODEMETER_KAFKA_SSL_KEY_FILE={self.ssl_key_file}{where}: not a PEM "
                    "certificate and its key, or the key is encrypted and "
                    f"NODEMETER_KAFKA_SSL_KEY_PASSWORD is missing or wrong ({_ssl_reason(exc)})"
                ) from None

    # --- reading -----------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """From ``environ`` (default ``os.environ``), over the file ``NODEMETER_KAFKA_CONFIG``
        names, if any."""
        env = os.environ if environ is None else environ
        values: dict[str, str] = {}
        origin = "the environment"
        path = env.get(CONFIG_FILE_VAR, "").strip()
        if path:
            values.update(read_config_file(path))
            origin = f"{CONFIG_FILE_VAR}={path} and the environment"
        for key in KEYS:
            if key in env:
                values[key] = env[key]
        return cls.from_values(values, origin=origin)

    @classmethod
    def from_values(cls, values: Mapping[str, str], *, origin: str = "") -> KafkaSecurity:
        """From a mapping of the variables (unknown ``NODEMETER_KAFKA_*`` keys are ignored)."""
        where = f" ({origin})" if origin else ""
        raw = {k: v for k, v in values.items() if v is not None}
        kwargs: dict[str, Any] = {}
        for file_var, var in FILE_VARS.items():
            if raw.get(file_var, "").strip():
                if raw.get(var):
                    raise ConfigError(f"set {var} or {file_var}{where}, not both")
                raw[var] = _read_secret_file(file_var, raw[file_var].strip())
        for var, name in VARS.items():
            value = raw.get(var)
            if value is None:
                continue
            if name == "ssl_check_hostname":
                flag = value.strip().lower()
                if flag in _TRUE:
                    kwargs[name] = True
                elif flag in _FALSE or flag == "none":
                    kwargs[name] = False
                elif flag:
                    raise ConfigError(f"{var}={value!r}{where} must be true or false")
            elif name in _SECRET_FIELDS:
                kwargs[name] = value or None
            else:
                kwargs[name] = value.strip() or None
        if "protocol" in kwargs and kwargs["protocol"] is None:
            del kwargs["protocol"]
        return cls(origin=origin, **kwargs)

    # --- what it means -----------------------------------------------------------------

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def is_plaintext(self) -> bool:
        return self.protocol == "PLAINTEXT"

    def describe(self) -> str:
        """A one-line summary, safe to print (no secret)."""
        parts = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username!r}")
        if self.uses_ssl:
            parts.append(f"CA {self.ssl_ca_file}" if self.ssl_ca_file else "system CAs")
            if self.ssl_cert_file:
                parts.append(f"client cert {self.ssl_cert_file}")
            if not self.ssl_check_hostname:
                parts.append("hostname not checked")
        return ", ".join(parts)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "origin" or value is None:
                continue
            shown.append(f"{f.name}={MASK}" if f.name in _SECRET_FIELDS else f"{f.name}={value!r}")
        return f"KafkaSecurity({', '.join(shown)})"

    __str__ = __repr__

    # --- rendering ---------------------------------------------------------------------

    def librdkafka(self) -> dict[str, str]:
        """confluent-kafka / librdkafka settings (``security.protocol`` always set)."""
        conf = {"security.protocol": self.protocol}
        if self.uses_sasl:
            conf["sasl.mechanism"] = str(self.sasl_mechanism)
            conf["sasl.username"] = str(self.sasl_username)
            conf["sasl.password"] = str(self.sasl_password)
        if self.uses_ssl:
            if self.ssl_ca_file:
                conf["ssl.ca.location"] = self.ssl_ca_file
            if self.ssl_cert_file and self.ssl_key_file:
                conf["ssl.certificate.location"] = self.ssl_cert_file
                conf["ssl.key.location"] = self.ssl_key_file
                if self.ssl_key_password:
                    conf["ssl.key.password"] = self.ssl_key_password
            conf["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_check_hostname else "none"
            )
        return conf

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (None without TLS): the CA file or the system's trust
        store, the client certificate if any, the hostname checked unless turned off."""
        if not self.uses_ssl:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ssl_ca_file)
        if self.ssl_cert_file and self.ssl_key_file:
            ctx.load_cert_chain(
                self.ssl_cert_file, self.ssl_key_file, password=self.ssl_key_password or None
            )
        ctx.check_hostname = self.ssl_check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def aiokafka(self) -> dict[str, Any]:
        """aiokafka client keyword arguments (``security_protocol``, ``sasl_*``,
        ``ssl_context``)."""
        kw: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_sasl:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        if self.uses_ssl:
            kw["ssl_context"] = self.ssl_context()
        return kw

    def hints(self, cause: str) -> str:
        """What to check for a failure of kind ``cause`` ("auth" or "tls")."""
        if cause == "auth":
            if not self.uses_sasl:
                return (
                    f"the broker wants SASL, but NODEMETER_KAFKA_SECURITY_PROTOCOL={self.protocol}"
                )
            return (
                f"check NODEMETER_KAFKA_SASL_USERNAME ({self.sasl_username!r}), "
                "NODEMETER_KAFKA_SASL_PASSWORD / ..._PASSWORD_FILE and "
                f"NODEMETER_KAFKA_SASL_MECHANISM ({self.sasl_mechanism})"
            )
        if not self.uses_ssl:
            return f"NODEMETER_KAFKA_SECURITY_PROTOCOL={self.protocol} does not use TLS"
        trust = (
            f"NODEMETER_KAFKA_SSL_CA_FILE={self.ssl_ca_file}"
            if self.ssl_ca_file
            else "the system's trust store (NODEMETER_KAFKA_SSL_CA_FILE not set)"
        )
        return (
            f"the broker's certificate must be signed by a CA in {trust} and name the "
            "host in the bootstrap address (NODEMETER_KAFKA_SSL_CHECK_HOSTNAME="
            f"{'true' if self.ssl_check_hostname else 'false'})"
        )


PLAINTEXT = KafkaSecurity()


def security_settings(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The security part of a librdkafka config (``security.protocol``, ``sasl.*``,
    ``ssl.*``), e.g. to give a consumer the settings of a producer."""
    return {
        k: v
        for k, v in conf.items()
        if k == "security.protocol" or k.startswith(("sasl.", "ssl.", "ssl_"))
    }


# --- failures --------------------------------------------------------------------------

_TLS_HINTS = (
    "certificate verify failed",
    "ssl handshake failed",
    "certificate could not be verified",
    "unable to get local issuer certificate",
    "self-signed certificate",
    "self signed certificate",
    "hostname mismatch",
    "ip address mismatch",
    "wrong version number",
    "sslv3 alert",
    "tlsv1 alert",
    "ssl routines",
)
_AUTH_HINTS = (
    "authentication failed",
    "sasl authentication error",
    "invalid credentials",
    "invalid username or password",
    "sasl handshake",
    "unsupported sasl mechanism",
)


def failure_kind(text: str, code: int | None = None) -> str | None:
    """Kind "auth" (the broker refused the credentials), "tls" (the TLS handshake failed) or
    None (anything else: unreachable, timeouts...), from a client error's code and text."""
    low = text.lower()
    if code in (ERR_AUTHENTICATION, ERR_SASL_AUTHENTICATION_FAILED) or any(
        h in low for h in _AUTH_HINTS
    ):
        # librdkafka reports an SSL failure during SASL as _AUTHENTICATION at times
        if any(h in low for h in ("certificate", "ssl handshake")):
            return "tls"
        return "auth"
    if code == ERR_SSL or any(h in low for h in _TLS_HINTS):
        return "tls"
    return None


def explain_failure(
    security: KafkaSecurity, bootstrap: str, text: str, code: int | None = None
) -> str | None:
    """A message naming the cause of an authentication or TLS failure and what to check;
    None for other errors. ``text`` is the client's own message (it holds no secret:
    clients never echo passwords; any password of ``security`` is masked all the same)."""
    kind = failure_kind(text, code)
    if kind is None:
        return None
    for secret in (security.sasl_password, security.ssl_key_password):
        if secret:
            text = text.replace(secret, MASK)
    what = "Kafka authentication failed" if kind == "auth" else "Kafka TLS handshake failed"
    return f"{what} at {bootstrap} ({security.describe()}): {security.hints(kind)}. [{text}]"


# --- files -----------------------------------------------------------------------------


def read_config_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines, an optional ``export``, quotes
    around a value); only the keys of this module. Errors name the file and line, never a
    value."""
    where = f"{CONFIG_FILE_VAR}={path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{where}: cannot read it ({type(exc).__name__}: {_os_reason(exc)})"
        ) from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{where}: line {n} is not KEY=VALUE")
        if key not in KEYS:
            raise ConfigError(
                f"{where}: line {n}: unknown key {key!r}; the file takes {', '.join(KEYS)}"
                " (NODEMETER_KAFKA_BOOTSTRAP and the rest stay in the environment)"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def _read_secret_file(var: str, path: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{var}={path}: cannot read it ({_os_reason(exc)})") from None
    value = value.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{var}={path}: the file is empty")
    return value


def _os_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _ssl_reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__)
