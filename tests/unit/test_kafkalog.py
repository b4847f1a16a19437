"""librdkafka's own log lines go through Python logging, never raw to stderr (issue 13).

Real librdkafka clients, pointed at a closed port with ``debug`` on so that they log."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from nodemeter.kafkalog import LOGGER_NAME, with_logger

SCRIPT = textwrap.dedent(
    f"""
    import logging, sys
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient
    from nodemeter.kafkalog import with_logger
    from nodemeter.meter import confluent_producer

    got = []
    class Keep(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())
    log = logging.getLogger({LOGGER_NAME!r})
    log.addHandler(Keep())
    log.setLevel(logging.DEBUG)
    log.propagate = False
    conf = {{"bootstrap.servers": "127.0.0.1:1", "debug": "generic"}}
    p = confluent_producer(dict(conf))
    p.produce("t", value=b"x")
    p.poll(0.5)
    p.purge()
    c = Consumer(with_logger({{**conf, "group.id": "g"}}))
    c.poll(0.5)
    c.close()
    a = AdminClient(with_logger(conf))
    a.poll(0.5)
    print(sum("rdkafka#producer" in m for m in got), sum("rdkafka#consumer" in m for m in got))
    """
)


def test_librdkafka_lines_reach_python_logging_not_stderr() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    producer_lines, consumer_lines = map(int, r.stdout.split())
    assert producer_lines > 0 and consumer_lines > 0
    # librdkafka's own stderr format is %LEVEL|TIME|FAC|NAME| ...
    assert "|rdkafka#" not in r.stderr, r.stderr[:2000]


def test_a_logger_given_in_the_config_is_kept() -> None:
    mine = object()
    assert with_logger({"logger": mine})["logger"] is mine
    conf = {"bootstrap.servers": "b"}
    assert with_logger(conf)["logger"].name == LOGGER_NAME
    assert "logger" not in conf  # the caller's mapping is not changed
