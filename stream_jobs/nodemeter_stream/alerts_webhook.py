"""``nodemeter alerts webhook URL``: budget alerts delivered to an HTTP endpoint.

Consumes ``nodemeter.budget-alerts.v1`` in its own consumer group and POSTs each alert
as JSON (money as exact decimal strings), in topic order per partition:

* **Signed.** ``X-Nodemeter-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is the
  HMAC-SHA256, keyed by the shared secret, of ``"<t>." + body``. A receiver checks it
  with :func:`verify` (or its own three lines), and refuses old timestamps, so a
  captured request cannot be replayed later. The secret comes from
  ``NODEMETER_WEBHOOK_SECRET`` or ``--secret-file``, never from the command line.
* **Retried.** Anything but a 2xx (a refused connection, a timeout, a 5xx, a 4xx) is
  retried with exponential backoff (0.5 s doubling to ``--max-backoff``, 30 s), for as
  long as it takes: an alert is never skipped, and the log says why each attempt failed.
* **Committed only after a 2xx.** The group's offset moves past an alert once the
  endpoint accepted it. Delivery is at-least-once: a crash between the 2xx and the commit
  sends that alert again, and the worker itself may re-send an alert (same id) after a
  crash. ``X-Nodemeter-Alert-Id`` carries the id for the receiver to drop repeats; this
  process also drops repeats it has already delivered.

A new group starts at the end of the topic (``--from-beginning``: at the oldest alert
kept); a known group resumes after its last delivered alert.

    NODEMETER_WEBHOOK_SECRET=... nodemeter alerts webhook https://billing.example/hooks/budget
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from nodemeter.errors import DecodeError

log = logging.getLogger("nodemeter.alerts.webhook")

SIGNATURE_HEADER = "X-Nodemeter-Signature"
ALERT_ID_HEADER = "X-Nodemeter-Alert-Id"
DEFAULT_TOLERANCE_S = 300


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Nodemeter-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """A receiver's check: the signature matches and is at most ``tolerance_s`` old."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def backoff(initial_s: float = 0.5, max_s: float = 30.0) -> Iterator[float]:
    """Delays between attempts: ``initial_s`` doubling, capped at ``max_s``."""
    delay = initial_s
    while True:
        yield delay
        delay = min(delay * 2, max_s)


@dataclass(frozen=True, slots=True)
class Response:
    status: int  # 0: no HTTP answer (refused, timed out)
    reason: str


Post = Callable[[bytes, Mapping[str, str]], Response]


def http_post(url: str, *, timeout_s: float = 10.0) -> Post:
    """A POST to ``url`` with the standard library's HTTP client."""

    def post(body: bytes, headers: Mapping[str, str]) -> Response:
        req = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return Response(resp.status, resp.reason)
        except urllib.error.HTTPError as exc:
            return Response(exc.code, str(exc.reason))
        except (urllib.error.URLError, OSError) as exc:
            return Response(0, str(getattr(exc, "reason", exc)))

    return post


def body_of(alert: Mapping[str, Any]) -> bytes:
    from nodemeter_stream.alerts_cli import to_json

    return to_json(alert).encode()


def deliver(
    alert: Mapping[str, Any],
    post: Post,
    *,
    secret: bytes,
    delays: Iterator[float],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], bool] | None = None,
) -> int | None:
    """POST ``alert`` until the endpoint answers 2xx; the number of attempts it took.

    ``sleep(s)`` waits between attempts and returns True to give up (a stop was asked):
    then None, and the alert stays undelivered (not committed)."""
    body = body_of(alert)
    wait = sleep or _sleep_never_stop
    attempts = 0
    while True:
        attempts += 1
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, int(clock()), body),
            ALERT_ID_HEADER: str(alert["alert_id"]),
        }
        resp = post(body, headers)
        if 200 <= resp.status < 300:
            return attempts
        delay = next(delays)
        what = f"HTTP {resp.status} {resp.reason}" if resp.status else resp.reason
        log.warning("alert %s: attempt %d failed (%s); retrying in %.1f s",
                    alert["alert_id"], attempts, what, delay)  # fmt: skip
        if wait(delay):
            return None


def _sleep_never_stop(seconds: float) -> bool:
    time.sleep(seconds)
    return False


class Recent:
    """Ids delivered lately (bounded: the oldest are forgotten past ``size``)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def add(self, key: str) -> None:
        self._ids[key] = None
        self._ids.move_to_end(key)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


def run_loop(
    consumer: Any,
    post: Post,
    *,
    secret: bytes,
    tenant: str | None = None,
    max_alerts: int = 0,
    idle_timeout: float = 0.0,
    max_backoff_s: float = 30.0,
    stopping: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], bool] | None = None,
) -> int:
    """Deliver alerts from ``consumer`` (a confluent-kafka Consumer) until stopped, idle
    for ``idle_timeout`` s, or ``max_alerts`` delivered; returns how many were."""
    from nodemeter_stream.alerts_cli import records

    recent = Recent()
    delivered = 0

    def sleep_or_stop(seconds: float) -> bool:
        time.sleep(seconds)
        return stopping()

    def done() -> bool:
        return stopping() or 0 < max_alerts <= delivered

    wait: Callable[[float], bool] = sleep or sleep_or_stop
    for msg, name, alert in records(consumer.poll, idle_timeout=idle_timeout, stopping=done):
        if isinstance(alert, DecodeError):
            log.error("skipping an undecodable record at %s[%d] offset %d: %s",
                      msg.topic(), msg.partition(), msg.offset(), alert)  # fmt: skip
            consumer.commit(message=msg, asynchronous=False)
            continue
        wanted = name == "budget_alert" and (not tenant or alert["tenant"] == tenant)
        if wanted and alert["alert_id"] not in recent:
            attempts = deliver(alert, post, secret=secret, delays=backoff(max_s=max_backoff_s),
                               sleep=wait)  # fmt: skip
            if attempts is None:
                break  # stopping: this alert is not committed, the next run sends it
            recent.add(alert["alert_id"])
            delivered += 1
            log.info("alert %s delivered (%s %s, %d attempt(s))",
                     alert["alert_id"], alert["tenant"], alert["budget_id"], attempts)  # fmt: skip
        consumer.commit(message=msg, asynchronous=False)
    return delivered


def read_secret(path: str | None, env: Mapping[str, str]) -> bytes:
    """The shared secret from ``--secret-file`` or ``NODEMETER_WEBHOOK_SECRET``."""
    if path:
        with open(path, "rb") as f:
            secret = f.read().strip()
    else:
        secret = env.get("NODEMETER_WEBHOOK_SECRET", "").encode()
    if not secret:
        raise ValueError(
            "no webhook secret: set NODEMETER_WEBHOOK_SECRET or give --secret-file "
            "(alerts are always signed)"
        )
    return secret
