"""``nodemeter alerts tail``: an example consumer of the budget-alert topic
(``nodemeter alerts webhook URL`` delivers them over HTTP: ``alerts_webhook``).

Reads ``nodemeter.budget-alerts.v1`` (Avro ``budget_alert``), drops repeats of an
``alert_id`` it has already shown (delivery is at-least-once: a worker crash between
sending an alert and recording it as sent re-sends the same id), and prints one line
per alert, or the record as JSON with ``--json``. Money is printed exactly as stored;
``--rounded`` shows it in the currency's minor unit instead.

    nodemeter alerts tail --from-beginning --tenant acme
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from nodemeter.codec import decode_payload
from nodemeter.errors import DecodeError
from nodemeter.kafka_security import KafkaSecurity
from nodemeter.kafkalog import ErrorWatch, with_logger
from nodemeter_stream.pricing.money import present, to_str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    tail = sub.add_parser("tail", help="print budget alerts as they arrive")
    tail.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default NODEMETER_KAFKA_BOOTSTRAP)"
    )
    tail.add_argument("--topic-prefix", help="topic name prefix (default NODEMETER_TOPIC_PREFIX)")
    tail.add_argument("--tenant", help="only this tenant's alerts")
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest alert kept"
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--rounded", action="store_true", help="money in the currency's minor unit")
    tail.add_argument("--max", type=int, default=0, help="stop after this many alerts (0: never)")
    tail.add_argument("--idle-timeout", type=float, default=0.0, help="stop after this many idle seconds (0: never)")  # fmt: skip
    hook = sub.add_parser(
        "webhook",
        help="POST each alert, signed, to an HTTP endpoint; commit after a 2xx",
        description="Deliver budget alerts to URL (see nodemeter_stream.alerts_webhook). "
        "The HMAC secret comes from NODEMETER_WEBHOOK_SECRET or --secret-file.",
    )
    hook.add_argument("url", help="http(s) endpoint that receives one POST per alert")
    hook.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default NODEMETER_KAFKA_BOOTSTRAP)"
    )
    hook.add_argument("--topic-prefix", help="topic name prefix (default NODEMETER_TOPIC_PREFIX)")
    hook.add_argument("--group", default="nodemeter-alerts-webhook",
                      help="consumer group: where delivery resumes (default %(default)s)")  # fmt: skip
    hook.add_argument("--tenant", help="only this tenant's alerts (others are skipped)")
    hook.add_argument("--from-beginning", action="store_true",
                      help="a new group starts at the oldest alert kept, not at the end")  # fmt: skip
    hook.add_argument("--secret-file", help="file holding the HMAC secret")
    hook.add_argument("--timeout", type=float, default=10.0, help="seconds per POST (10)")
    hook.add_argument("--max-backoff", type=float, default=30.0, help="longest wait between attempts, s (30)")  # fmt: skip
    hook.add_argument("--max", type=int, default=0, help="stop after this many alerts (0: never)")
    hook.add_argument("--idle-timeout", type=float, default=0.0, help="stop after this many idle seconds (0: never)")  # fmt: skip


def _money(value: Decimal, currency: str, rounded: bool) -> str:
    return to_str(present(value, currency) if rounded else value.normalize())


def format_alert(a: Mapping[str, Any], *, rounded: bool = False) -> str:
    """One human line: when, who, which budget and window, how far, how much."""
    cur = a.get("currency", "USD")
    window = a.get("attributes", {}).get("window_id") or a["window_start"].date().isoformat()
    hard = " HARD LIMIT" if a.get("hard_limit") else ""
    return (
        f"{a['event_time'].isoformat()} {a['level']:<8} {a['tenant']} budget={a['budget_id']} "
        f"window={window} threshold={a['threshold_pct']}% spent={_money(a['spend_amount'], cur, rounded)} "
        f"of {_money(a['limit_amount'], cur, rounded)} {cur}{hard} id={a['alert_id']}"
    )


def to_json(a: Mapping[str, Any]) -> str:
    def enc(v: Any) -> Any:
        if isinstance(v, Decimal):
            return to_str(v)
        if isinstance(v, datetime):
            return v.isoformat()
        raise TypeError(type(v).__name__)

    return json.dumps(dict(a), default=enc, sort_keys=True)


def records(
    poll: Callable[[float], Any],
    *,
    idle_timeout: float = 0.0,
    stopping: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[Any, str | None, dict[str, Any] | DecodeError]]:
    """(message, record name, decoded record) from ``poll`` (a confluent-kafka
    ``Consumer.poll``) until ``stopping()`` or ``idle_timeout`` seconds pass with no
    record (0: never); an undecodable record comes as (message, None, the error)."""
    import time

    idle_since = time.monotonic()
    while not stopping():
        msg = poll(0.5)
        if msg is None or msg.error():
            if idle_timeout and time.monotonic() - idle_since > idle_timeout:
                return
            continue
        idle_since = time.monotonic()
        try:
            name, value = decode_payload(msg.value())
        except DecodeError as exc:
            yield msg, None, exc
            continue
        yield msg, name, value


def tail(
    poll: Callable[[float], Any],
    *,
    tenant: str | None,
    emit: Callable[[Mapping[str, Any]], None],
    max_alerts: int = 0,
    idle_timeout: float = 0.0,
) -> int:
    """Consume with ``poll`` (a confluent-kafka ``Consumer.poll``) and ``emit`` new alerts."""
    shown: set[str] = set()
    for msg, name, alert in records(
        poll, idle_timeout=idle_timeout, stopping=lambda: 0 < max_alerts <= len(shown)
    ):
        if isinstance(alert, DecodeError):
            print(
                f"skipping an undecodable record at offset {msg.offset()}: {alert}", file=sys.stderr
            )
            continue
        if name != "budget_alert" or alert["alert_id"] in shown:
            continue
        if tenant and alert["tenant"] != tenant:
            continue
        shown.add(alert["alert_id"])
        emit(alert)
    return len(shown)


def run(args: argparse.Namespace) -> int:
    if args.action == "webhook":
        return run_webhook(args)
    return run_tail(args)


def _bootstrap_and_topic(args: argparse.Namespace) -> tuple[str | None, str]:
    from nodemeter_stream.topics import Topics

    bootstrap = args.bootstrap or os.environ.get("NODEMETER_KAFKA_BOOTSTRAP")
    prefix = (
        args.topic_prefix
        if args.topic_prefix is not None
        else os.environ.get("NODEMETER_TOPIC_PREFIX", "")
    )
    return bootstrap, Topics(prefix=prefix).budget_alerts


def run_webhook(args: argparse.Namespace) -> int:
    import signal
    import threading

    from confluent_kafka import Consumer

    from nodemeter_stream import alerts_webhook as hook

    bootstrap, topic = _bootstrap_and_topic(args)
    if not bootstrap:
        print("alerts webhook: give --bootstrap or set NODEMETER_KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    if not args.url.startswith(("http://", "https://")):
        print(f"alerts webhook: {args.url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    try:
        secret = hook.read_secret(args.secret_file, os.environ)
    except (OSError, ValueError) as exc:
        print(f"alerts webhook: {exc}", file=sys.stderr)
        return 2
    consumer = Consumer(
        with_logger(
            {
                "bootstrap.servers": bootstrap,
                "group.id": args.group,
                "auto.offset.reset": "earliest" if args.from_beginning else "latest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    print(f"alerts webhook: {topic} -> {args.url} (group {args.group})", file=sys.stderr)
    try:
        n = hook.run_loop(
            consumer,
            hook.http_post(args.url, timeout_s=args.timeout),
            secret=secret,
            tenant=args.tenant,
            max_alerts=args.max,
            idle_timeout=args.idle_timeout,
            max_backoff_s=args.max_backoff,
            stopping=stop.is_set,
            sleep=stop.wait,
        )
    finally:
        consumer.close()
    print(f"alerts webhook: {n} alert(s) delivered", file=sys.stderr)
    return 0


def run_tail(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer

    from nodemeter_stream.topics import Topics

    bootstrap = args.bootstrap or os.environ.get("NODEMETER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        print("alerts tail: give --bootstrap or set NODEMETER_KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    prefix = (
        args.topic_prefix
        if args.topic_prefix is not None
        else os.environ.get("NODEMETER_TOPIC_PREFIX", "")
    )
    topic = Topics(prefix=prefix).budget_alerts
    security = KafkaSecurity.from_env()
    # a wrong password or an untrusted certificate ends the tail with that error
    watch = ErrorWatch(security, bootstrap)
    consumer = Consumer(
        with_logger(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"nodemeter-alerts-tail-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest" if args.from_beginning else "latest",
                "enable.auto.commit": False,
                "error_cb": watch,
            },
            security,
        )
    )
    consumer.subscribe([topic])

    def poll(timeout: float) -> Any:
        msg = consumer.poll(timeout)
        watch.raise_if_failed()
        return msg

    def emit(alert: Mapping[str, Any]) -> None:
        print(
            to_json(alert) if args.json else format_alert(alert, rounded=args.rounded), flush=True
        )

    try:
        tail(
            poll,
            tenant=args.tenant,
            emit=emit,
            max_alerts=args.max,
            idle_timeout=args.idle_timeout,
        )
    finally:
        consumer.close()
    return 0
