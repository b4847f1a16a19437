"""Budget alerts and budget state on the wire: Avro round trips, keys, the tail format."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from nodemeter.codec import decode_payload
from nodemeter_stream.alerts_cli import format_alert, tail, to_json
from nodemeter_stream.pricing import BudgetAlert
from nodemeter_stream.pricing.budgets import alert_id
from nodemeter_stream.pricing.records import decode_alert, encode_alert, encode_budget_state, level

START, END = datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 12, 1, 5, tzinfo=UTC)


def alert(threshold: int = 80) -> BudgetAlert:
    return BudgetAlert(
        alert_id=alert_id("acme", "monthly", "2026-11", threshold), tenant="acme", budget="monthly",
        workflow="", window_id="2026-11", window_start=START, window_end=END,
        threshold_percent=threshold, budget_amount=Decimal("500.00"),
        spent=Decimal("400.123456789012"), currency="USD", hard_limit=True,
        crossed_at=datetime(2026, 11, 20, 9, 30, tzinfo=UTC), event_id="ev-9",
    )  # fmt: skip


def test_alert_round_trip_is_exact() -> None:
    key, value = encode_alert(alert())
    assert key == b"acme"
    got = decode_alert(value)
    assert got["spend_amount"] == Decimal("400.123456789012")
    assert got["limit_amount"] == Decimal("500")
    assert (got["threshold_pct"], got["level"], got["hard_limit"]) == (80, "WARNING", True)
    assert got["window_start"] == START and got["attributes"]["window_id"] == "2026-11"


def test_levels() -> None:
    assert [level(t) for t in (50, 79, 80, 99, 100, 120)] == [
        "INFO", "INFO", "WARNING", "WARNING", "EXCEEDED", "EXCEEDED",
    ]  # fmt: skip


def test_budget_state_record_key_and_round_trip() -> None:
    record = {
        "tenant": "acme", "budget_id": "monthly", "window_start": START, "window_end": END,
        "currency": "USD", "limit_amount": Decimal("500"), "spend_amount": Decimal("12.5"),
        "alerted_threshold_pct": 0, "event_count": 3, "updated_at": END, "window_id": "2026-11",
        "workflow": "", "status": "ok", "hard_limit": True,
    }  # fmt: skip
    key, value = encode_budget_state(record)
    assert key == b"acme/monthly/2026-11-01T04:00:00+00:00"
    name, got = decode_payload(value)
    assert name == "budget_state"
    assert (got["spend_amount"], got["status"], got["hard_limit"]) == (Decimal("12.5"), "OK", True)


def test_format_alert_line_and_json() -> None:
    decoded = decode_alert(encode_alert(alert())[1])
    line = format_alert(decoded)
    assert (
        "acme budget=monthly window=2026-11 threshold=80% spent=400.123456789012 of 500 USD" in line
    )
    assert "HARD LIMIT" in line
    assert "spent=400.12 of 500.00 USD" in format_alert(decoded, rounded=True)
    assert '"spend_amount": "400.123456789012"' in to_json(decoded)


class FakeMessage:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None

    def offset(self) -> int:
        return 0


def test_tail_shows_each_alert_id_once_and_filters_tenant() -> None:
    values = [encode_alert(alert(t))[1] for t in (50, 80, 50, 100)] + [b"junk"]
    queue: list[FakeMessage | None] = [FakeMessage(v) for v in values]
    shown: list[int] = []
    n = tail(lambda _t: queue.pop(0) if queue else None, tenant="acme",
             emit=lambda a: shown.append(a["threshold_pct"]), idle_timeout=0.01)  # fmt: skip
    assert (n, shown) == (3, [50, 80, 100])
    queue = [FakeMessage(v) for v in values]
    assert (
        tail(
            lambda _t: queue.pop(0) if queue else None,
            tenant="globex",
            emit=print,
            idle_timeout=0.01,
        )
        == 0
    )
