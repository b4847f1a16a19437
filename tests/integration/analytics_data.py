"""Known rows for the analytics tests: priced lines and usage events with hand-computed
answers. Used by tests/integration/test_queries_*.py and test_report_*.py.

Tenant acme, November 2026 (prices per unit, amounts = quantity x price, exact):

request r1 (2026-11-02 10:xx), workflow "qa":
  preprocess   cpu_ms 100 x 0.000001                        = 0.0001
  llm.answer   input_tokens 1000 x 0.000003                 = 0.003
               output_tokens 200 x 0.000015                 = 0.003
               cached_input_tokens 500 x 0.0000003          = 0.00015
                 (cache_savings 500 x (0.000003 - 0.0000003) = 0.00135)
               cache_write_tokens 100 x 0.00000375          = 0.000375
  gpu.rerank   gpu_ms 250 x 0.0001                          = 0.025
  request total                                             = 0.031625
request r2 (2026-11-03 11:xx), workflow "qa":
  llm.answer   input_tokens 2000 x 0.000003                 = 0.006
               output_tokens 100 x 0.000015                 = 0.0015
  gpu.rerank   gpu_ms 40 x 0.0001                           = 0.004
  request total                                             = 0.0115
credit line (2026-11-03 12:00, no node)                     = -0.001
acme total for November                                     = 0.042125
request r0 (2026-10-30, outside the period): llm.answer input 100000 x 0.000003 = 0.3

Tenant globex, request g1 (2026-11-02 10:00): llm.answer input 1 x 5 = 5 (isolation).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from nodemeter_stream.pricing.lines import PRICED_LINE_COLUMNS

NOV_START = datetime(2026, 11, 1, tzinfo=UTC)
DEC_START = datetime(2026, 12, 1, tzinfo=UTC)


def line(
    *,
    tenant: str = "acme",
    request_id: str,
    node_id: str,
    meter: str,
    quantity: int,
    unit_price: str,
    at: datetime,
    model: str = "",
    workflow: str = "qa",
    kind: str = "usage",
    tier: int = 0,
    line_id: str | None = None,
    amount: str | None = None,
    cache_savings: str = "0",
) -> list[Any]:
    price = Decimal(unit_price)
    return [
        line_id or f"{tenant}/{request_id}/{node_id}/{meter}/{tier}/{kind}",
        kind,
        f"ev-{request_id}-{node_id}",
        tenant,
        request_id,
        node_id,
        workflow,
        model,
        "openai" if model else "",
        meter,
        "H100" if meter == "gpu_ms" else "",
        Decimal(quantity),
        price,
        Decimal(amount) if amount is not None else price * quantity,
        "USD",
        f"{tenant}-book",
        1,
        "flat",
        tier,
        at.strftime("%Y-%m"),
        at.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
        at,
        Decimal(cache_savings),
    ]


def t(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def known_lines() -> list[list[Any]]:
    m = "gpt-4o"
    return [
        line(request_id="r1", node_id="preprocess", meter="cpu_ms", quantity=100,
             unit_price="0.000001", at=t(2, 10, 0)),
        line(request_id="r1", node_id="llm.answer", meter="input_tokens", quantity=1000,
             unit_price="0.000003", at=t(2, 10, 1), model=m),
        line(request_id="r1", node_id="llm.answer", meter="output_tokens", quantity=200,
             unit_price="0.000015", at=t(2, 10, 1), model=m),
        line(request_id="r1", node_id="llm.answer", meter="cached_input_tokens", quantity=500,
             unit_price="0.0000003", at=t(2, 10, 1), model=m, cache_savings="0.00135"),
        line(request_id="r1", node_id="llm.answer", meter="cache_write_tokens", quantity=100,
             unit_price="0.00000375", at=t(2, 10, 1), model=m),
        line(request_id="r1", node_id="gpu.rerank", meter="gpu_ms", quantity=250,
             unit_price="0.0001", at=t(2, 10, 2)),
        line(request_id="r2", node_id="llm.answer", meter="input_tokens", quantity=2000,
             unit_price="0.000003", at=t(3, 11, 0), model=m),
        line(request_id="r2", node_id="llm.answer", meter="output_tokens", quantity=100,
             unit_price="0.000015", at=t(3, 11, 0), model=m),
        line(request_id="r2", node_id="gpu.rerank", meter="gpu_ms", quantity=40,
             unit_price="0.0001", at=t(3, 11, 1)),
        line(request_id="", node_id="", meter="credit", quantity=1, unit_price="-0.001",
             at=t(3, 12, 0), kind="credit", workflow=""),
        line(request_id="r0", node_id="llm.answer", meter="input_tokens", quantity=100000,
             unit_price="0.000003", at=t(30, 9, 0, month=10), model=m),
        line(tenant="globex", request_id="g1", node_id="llm.answer", meter="input_tokens",
             quantity=1, unit_price="5", at=t(2, 10, 0), model="claude"),
    ]  # fmt: skip


def insert_lines(client: Any, rows: list[list[Any]], **settings: Any) -> None:
    # the columns the rows carry, in PRICED_LINE_COLUMNS order (later columns: defaults)
    columns = list(PRICED_LINE_COLUMNS)[: len(rows[0])] if rows else list(PRICED_LINE_COLUMNS)
    client.insert("priced_lines", rows, column_names=columns, settings=settings or None)


EVENT_COLUMNS = (
    "event_id",
    "tenant",
    "request_id",
    "node_id",
    "span_id",
    "parent_span_id",
    "workflow",
    "model",
    "gpu_ms",
    "gpu_type",
    "gpu_source",
    "input_tokens",
    "billable",
    "event_time",
)


def known_events() -> list[list[Any]]:
    """The spans of r1 and r2 (acme) and g1 (globex).

    Graph: preprocess -> llm.answer -> gpu.rerank, preprocess -> llm.summarize (r1 only).
    GPU: r1 gpu.rerank 250 ms MEASURED, r2 gpu.rerank 40 ms ESTIMATED, plus a
    non-billable warm-up of 1000 ms (excluded) and an event outside the period.
    """

    def ev(
        eid: str, req: str, node: str, span: str, parent: str, at: datetime, **kw: Any
    ) -> list[Any]:
        row = {
            "event_id": eid, "tenant": "acme", "request_id": req, "node_id": node,
            "span_id": span, "parent_span_id": parent, "workflow": "qa", "model": "",
            "gpu_ms": 0, "gpu_type": "", "gpu_source": "NONE", "input_tokens": 0,
            "billable": True, "event_time": at,
        } | kw  # fmt: skip
        return [row[c] for c in EVENT_COLUMNS]

    return [
        ev("e1", "r1", "preprocess", "s0", "", t(2, 10, 0)),
        ev("e2", "r1", "llm.answer", "s1", "s0", t(2, 10, 1), model="gpt-4o", input_tokens=1000),
        ev("e3", "r1", "gpu.rerank", "s2", "s1", t(2, 10, 2), gpu_ms=250, gpu_type="H100",
           gpu_source="MEASURED"),
        ev("e4", "r1", "llm.summarize", "s3", "s0", t(2, 10, 1), model="gpt-4o-mini"),
        ev("e5", "r2", "preprocess", "s0", "", t(3, 11, 0)),
        ev("e6", "r2", "llm.answer", "s1", "s0", t(3, 11, 0), model="gpt-4o", input_tokens=2000),
        ev("e7", "r2", "gpu.rerank", "s2", "s1", t(3, 11, 1), gpu_ms=40, gpu_type="H100",
           gpu_source="ESTIMATED"),
        ev("e8", "warm", "gpu.rerank", "w0", "", t(2, 9, 0), gpu_ms=1000, gpu_type="H100",
           gpu_source="MEASURED", billable=False),
        ev("e9", "r0", "gpu.rerank", "s2", "", t(30, 9, 0, month=10), gpu_ms=77,
           gpu_type="H100", gpu_source="MEASURED"),
        ev("g1", "g1", "gpu.rerank", "s0", "", t(2, 10, 0), tenant="globex", gpu_ms=999,
           gpu_type="A100", gpu_source="MEASURED"),
    ]  # fmt: skip


def insert_events(client: Any, rows: list[list[Any]]) -> None:
    client.insert("usage_events", rows, column_names=list(EVENT_COLUMNS))


def load_known(client: Any) -> None:
    insert_lines(client, known_lines())
    insert_events(client, known_events())
    insert_alerts(client, known_alerts())
    insert_rates(client, known_rates())


ALERT_COLUMNS = (
    "alert_id",
    "tenant",
    "budget",
    "workflow",
    "window_id",
    "window_start",
    "window_end",
    "threshold_pct",
    "level",
    "limit_amount",
    "spend_amount",
    "hard_limit",
    "crossed_at",
)


def known_alerts() -> list[list[Any]]:
    """acme: a monthly tenant budget of 0.04 (50 % and 100 % crossed; spend now 0.042125
    -> exceeded, 105.31 %) and a daily workflow budget "qa" of 0.05 for Nov 2 (50 %
    crossed; usage of qa that day 0.031625 -> ok, 63.25 %); globex: one alert."""
    monthly = ("acme", "monthly", "", "2026-11", NOV_START, DEC_START)
    daily = ("acme", "qa-daily", "qa", "2026-11-02", t(2, 0), t(3, 0))
    return [
        ["a1", *monthly, 50, "INFO", Decimal("0.04"), Decimal("0.025"), False, t(2, 10, 2)],
        ["a2", *monthly, 100, "EXCEEDED", Decimal("0.04"), Decimal("0.0415"), True, t(3, 11, 1)],
        ["a2", *monthly, 100, "EXCEEDED", Decimal("0.04"), Decimal("0.0415"), True, t(3, 11, 1)],
        ["a3", *daily, 50, "INFO", Decimal("0.05"), Decimal("0.03"), False, t(2, 10, 2)],
        ["g1", "globex", "monthly", "", "2026-11", NOV_START, DEC_START, 80, "WARNING",
         Decimal("6"), Decimal("5"), False, t(2, 10, 0)],
    ]  # fmt: skip


def insert_alerts(client: Any, rows: list[list[Any]]) -> None:
    for r in rows:  # one block each: the repeated a2 is a redelivery, not a retried block
        client.insert("budget_alerts", [r], column_names=list(ALERT_COLUMNS))


RATE_COLUMNS = (
    "price_book", "version", "effective_from", "currency", "meter", "model", "provider",
    "gpu_type", "charge_model", "tier", "up_to", "unit_price",
)  # fmt: skip


def known_rates() -> list[list[Any]]:
    """acme-book v1 (3 rates, one loaded twice: a worker restart) and v2 (not used yet)."""
    v1 = ("acme-book", 1, t(1, 0, month=10), "USD")
    v2 = ("acme-book", 2, t(1, 0, month=12), "USD")
    return [
        [*v1, "input_tokens", "gpt-4o", "openai", "", "flat", 0, 0, Decimal("0.000003")],
        [*v1, "output_tokens", "gpt-4o", "openai", "", "flat", 0, 0, Decimal("0.000015")],
        [*v1, "gpu_ms", "", "", "H100", "flat", 0, 0, Decimal("0.0001")],
        [*v2, "input_tokens", "gpt-4o", "openai", "", "flat", 0, 0, Decimal("0.000002")],
    ]


def insert_rates(client: Any, rows: list[list[Any]]) -> None:
    for block in (rows, rows[:1]):  # the first rate loaded again by a restarted worker
        client.insert("price_book_rates", block, column_names=list(RATE_COLUMNS))
