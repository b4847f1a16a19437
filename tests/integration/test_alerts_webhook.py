"""``nodemeter alerts webhook`` against the real broker and a real HTTP server on loopback.

The endpoint refuses the first two POSTs (503); the command retries with backoff, and
each alert reaches it once, signed, in topic order; the group's offsets are committed
only for what the endpoint accepted, so a second run in the same group sends nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from nodemeter.cli import main
from nodemeter_stream.alerts_webhook import ALERT_ID_HEADER, SIGNATURE_HEADER, verify
from nodemeter_stream.offsets import committed, end_offsets
from nodemeter_stream.pricing import BudgetAlert
from nodemeter_stream.pricing.budgets import alert_id
from nodemeter_stream.pricing.records import encode_alert

pytestmark = pytest.mark.kafka

SECRET = "webhook-test-secret"


class Endpoint:
    """A loopback HTTP server that answers 503 to the first ``fail`` POSTs, then 200."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.seen: list[tuple[int, dict[str, str], bytes]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 503 if len(endpoint.seen) < endpoint.fail else 200
                endpoint.seen.append((status, dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/budget"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for s, h, b in self.seen if s == 200]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint(fail=2)
    yield e
    e.server.shutdown()


def alerts() -> list[BudgetAlert]:
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    return [
        BudgetAlert(
            alert_id=alert_id("acme", "monthly", "2026-11", t),
            tenant="acme",
            budget="monthly",
            workflow="",
            window_id="2026-11",
            window_start=start,
            window_end=end,
            threshold_percent=t,
            budget_amount=Decimal("100"),
            spent=Decimal(t) + Decimal("0.000000000001"),
            currency="USD",
            hard_limit=t == 100,
            crossed_at=start,
            event_id=f"e{t}",
        )
        for t in (50, 80, 100)
    ]


def test_each_alert_is_posted_once_signed_and_committed_after_a_2xx(
    kafka_bootstrap: str, topics: Any, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    from confluent_kafka import Producer

    sent = alerts()
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for a in [*sent, sent[0]]:  # the worker may re-send an alert (same id)
        k, v = encode_alert(a)
        p.produce(topics.budget_alerts, key=k, value=v, partition=0)
    assert p.flush(30) == 0
    monkeypatch.setenv("NODEMETER_WEBHOOK_SECRET", SECRET)
    group = f"{topics.prefix}webhook"
    argv = ["alerts", "webhook", endpoint.url, "--bootstrap", kafka_bootstrap,
            "--topic-prefix", topics.prefix, "--group", group, "--from-beginning",
            "--idle-timeout", "5", "--max-backoff", "0.2"]  # fmt: skip
    assert main(argv) == 0

    assert [s for s, _, _ in endpoint.seen] == [503, 503, 200, 200, 200]
    got = endpoint.accepted()
    assert [h[ALERT_ID_HEADER] for h, _ in got] == [a.alert_id for a in sent]
    for headers, body in got:
        assert verify(SECRET.encode(), headers[SIGNATURE_HEADER], body)
        assert headers["Content-Type"] == "application/json"
    bodies = [json.loads(b) for _, b in got]
    assert [b["spend_amount"] for b in bodies] == [
        "50.000000000001",
        "80.000000000001",
        "100.000000000001",
    ]  # exact, as strings
    # all on partition 0: committed past the repeat too, the other partitions empty
    assert end_offsets(kafka_bootstrap, topics.budget_alerts)[0] == 4
    assert committed(kafka_bootstrap, group, topics.budget_alerts)[0] == 4
    # the same group again: everything was committed, nothing is sent twice
    assert main(argv) == 0
    assert len(endpoint.seen) == 5


def test_the_webhook_refuses_to_run_unsigned(
    kafka_bootstrap: str, topics: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.delenv("NODEMETER_WEBHOOK_SECRET", raising=False)
    rc = main(["alerts", "webhook", "http://127.0.0.1:9/x", "--bootstrap", kafka_bootstrap])
    assert rc == 2 and "NODEMETER_WEBHOOK_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("NODEMETER_WEBHOOK_SECRET", SECRET)
    rc = main(["alerts", "webhook", "ftp://example/x", "--bootstrap", kafka_bootstrap])
    assert rc == 2 and "not an http(s) URL" in capsys.readouterr().err
