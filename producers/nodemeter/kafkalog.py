"""Every confluent-kafka client's config: security settings and librdkafka's logs.

Every Kafka client nodemeter creates passes its config through :func:`client_conf`
(:func:`with_logger` is the same function, the name the call sites have used):

* the TLS/SASL settings of :mod:`nodemeter.kafka_security` (``NODEMETER_KAFKA_*`` in
  the environment or the ``NODEMETER_KAFKA_CONFIG`` file) fill the keys the config does
  not set. A config that names its own ``security.protocol`` has chosen its security
  and gets nothing added; any other setting given in the config wins over its
  counterpart from the environment.
* librdkafka's own log lines, which it would write straight to stderr
  (``%6|1764650000.123|BGQUEUE|rdkafka#producer-1| ...``), become records of the
  ``nodemeter.librdkafka`` logger (syslog levels mapped to Python's), which the
  application filters and formats like any other. A ``logger`` given is kept.

:class:`ErrorWatch` is an ``error_cb`` that notes an authentication or TLS failure, so a
caller waiting on the broker can stop at once with a message naming the cause.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from nodemeter.errors import KafkaSecurityError
from nodemeter.kafka_security import KafkaSecurity, explain_failure

LOGGER_NAME = "nodemeter.librdkafka"


def kafka_logger() -> logging.Logger:
    """The logger librdkafka's lines go to."""
    return logging.getLogger(LOGGER_NAME)


def client_conf(conf: Mapping[str, Any], security: KafkaSecurity | None = None) -> dict[str, Any]:
    """``conf`` with the security settings (``security``, default: read from the
    environment) and ``logger`` added where it does not set them."""
    out = dict(conf)
    out.setdefault("logger", kafka_logger())
    if "security.protocol" not in out:
        sec = security if security is not None else KafkaSecurity.from_env()
        for key, value in sec.librdkafka().items():
            out.setdefault(key, value)
    return out


with_logger = client_conf


def security_of(conf: Mapping[str, Any]) -> KafkaSecurity:
    """A best-effort :class:`KafkaSecurity` describing a librdkafka config (for messages:
    which protocol, mechanism, user and CA an error is about). Never raises."""
    kw: dict[str, Any] = {
        "protocol": str(conf.get("security.protocol", "PLAINTEXT")),
        "sasl_mechanism": conf.get("sasl.mechanism") or conf.get("sasl.mechanisms"),
        "sasl_username": conf.get("sasl.username"),
        "sasl_password": conf.get("sasl.password"),
        "ssl_check_hostname": conf.get("ssl.endpoint.identification.algorithm", "https") != "none",
    }
    for attempt in (
        {**kw, "ssl_ca_file": conf.get("ssl.ca.location")},
        kw,
        {"protocol": kw["protocol"]},
        {},
    ):
        try:
            return KafkaSecurity(**attempt)
        except Exception:
            continue
    return KafkaSecurity()


class ErrorWatch:
    """An ``error_cb`` that keeps the first authentication or TLS failure a client reports
    (as a :class:`KafkaSecurityError` with a clear message), then calls ``then`` if given.

        watch = ErrorWatch(security, bootstrap)
        admin = AdminClient(client_conf({"bootstrap.servers": b, "error_cb": watch}))
        ...
        watch.raise_if_failed()
    """

    def __init__(
        self,
        security: KafkaSecurity,
        bootstrap: str,
        *,
        then: Callable[[Any], None] | None = None,
    ) -> None:
        self.security, self.bootstrap, self.then = security, bootstrap, then
        self.error: KafkaSecurityError | None = None
        self.seen = threading.Event()

    def __call__(self, err: Any) -> None:
        try:
            if self.error is None:
                message = explain(self.security, self.bootstrap, err)
                if message is not None:
                    self.error = KafkaSecurityError(message)
                    self.seen.set()
        finally:
            if self.then is not None:
                self.then(err)

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise KafkaSecurityError(str(self.error))


def explain(security: KafkaSecurity, bootstrap: str, err: Any) -> str | None:
    """:func:`nodemeter.kafka_security.explain_failure` for a ``KafkaError`` (or anything
    with ``code()`` and ``str()``, or a plain exception)."""
    try:
        code = err.code() if callable(getattr(err, "code", None)) else None
        text = err.str() if callable(getattr(err, "str", None)) else str(err)
    except Exception:
        code, text = None, str(err)
    return explain_failure(security, bootstrap, text, code)


def admin_client(
    bootstrap: str, security: KafkaSecurity | None = None, **conf: Any
) -> tuple[Any, ErrorWatch]:
    """A confluent-kafka ``AdminClient`` with :func:`client_conf` applied and an
    :class:`ErrorWatch` as its ``error_cb``; give the watch to :func:`cluster_metadata`."""
    from confluent_kafka.admin import AdminClient

    sec = security if security is not None else KafkaSecurity.from_env()
    watch = ErrorWatch(sec, bootstrap)
    settings = client_conf({"bootstrap.servers": bootstrap, **conf, "error_cb": watch}, sec)
    return AdminClient(settings), watch


def cluster_metadata(
    admin: Any, watch: ErrorWatch, *, timeout: float = 30.0, topic: str | None = None
) -> Any:
    """``admin.list_topics()``, asked in short slices: a ``KafkaSecurityError`` as soon as
    the broker refuses the credentials or TLS fails (not after the whole ``timeout``),
    a ``KafkaConnectionError`` naming the bootstrap when no broker answered in time."""
    from confluent_kafka import KafkaException

    from nodemeter.errors import KafkaConnectionError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        left = deadline - time.monotonic()
        try:
            return admin.list_topics(topic, timeout=max(0.1, min(1.0, left)))
        except KafkaException as exc:
            last = exc
        admin.poll(0)  # serves the error callback
        watch.raise_if_failed()
        if time.monotonic() >= deadline:
            raise KafkaConnectionError(
                f"no Kafka broker answered at {watch.bootstrap} within {timeout:g} s "
                f"({watch.security.describe()}): {last}"
            )
