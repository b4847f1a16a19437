"""librdkafka's own log lines, routed to Python logging.

Without a ``logger`` in its config, librdkafka writes lines such as
``%6|1764650000.123|BGQUEUE|rdkafka#producer-1| ...`` straight to stderr, past the
application's logging. Every Kafka client nodemeter creates passes its config through
:func:`with_logger`, so those lines become records of the ``nodemeter.librdkafka``
logger (librdkafka's syslog levels mapped to Python's), which the application filters
and formats like any other. A ``logger`` given in the config is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

LOGGER_NAME = "nodemeter.librdkafka"


def kafka_logger() -> logging.Logger:
    """The logger librdkafka's lines go to."""
    return logging.getLogger(LOGGER_NAME)


def with_logger(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``conf`` with ``logger`` set to :func:`kafka_logger` unless it names one."""
    out = dict(conf)
    out.setdefault("logger", kafka_logger())
    return out
