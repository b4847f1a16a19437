"""Statements on chDB (issue 14, part 1), with lines priced by the real PricingEngine from
the example books and tenant states stored in ``worker_state`` as the pricing agent
stores them: totals to the unit, tenant time zones, issuing, late lines and repricing
adjustments on the next statement, the three formats, the CLI's errors."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from nodemeter.cli import main
from nodemeter.events import GpuSource, Meters, UsageEvent
from nodemeter_stream.analytics.statement_render import render, to_csv, to_html, to_json
from nodemeter_stream.analytics.statements import issue, statement
from nodemeter_stream.pricing import PricedLine, PricingEngine, load_config, new_state
from nodemeter_stream.pricing.book import EXAMPLES_DIR
from nodemeter_stream.pricing.errors import StatementError
from nodemeter_stream.pricing.lines import PRICED_LINE_COLUMNS
from nodemeter_stream.pricing.reprice import reprice
from nodemeter_stream.sink.progress import STATE_COLUMNS, state_row

pytestmark = pytest.mark.clickhouse

GRACE = timedelta(hours=1)
CONFIG = load_config(EXAMPLES_DIR)


class Pricer:
    """Prices events as the worker does and stores lines, then the tenant state."""

    def __init__(self, ch: Any, engine: PricingEngine | None = None) -> None:
        self.ch = ch
        self.engine = engine or PricingEngine(CONFIG, grace=GRACE)
        self.states: dict[str, dict[str, Any]] = {}
        self.seen: dict[str, Any] = {}
        self.events: list[UsageEvent] = []
        self.lines: list[PricedLine] = []
        self.n = 0

    def event(
        self, tenant: str, at: datetime, node: str = "llm.answer", **meters: Any
    ) -> list[PricedLine]:
        self.n += 1
        ev = UsageEvent(event_id=f"e{self.n}", tenant=tenant, request_id=f"r{self.n}", node_id=node,
                        span_id="s", workflow="support", event_time=at,
                        model=meters.pop("model", None), meters=Meters(**meters))  # fmt: skip
        self.events.append(ev)
        state = self.states.setdefault(tenant, new_state(tenant))
        return self._store(tenant, self.engine.process(state, self.seen, ev).lines)

    def tick(self, tenant: str, at: datetime) -> list[PricedLine]:
        out = self.engine.advance(self.states[tenant], self.seen, at)
        return self._store(tenant, out.lines)

    def insert(self, lines: Sequence[PricedLine]) -> None:
        if lines:
            self.ch.insert(
                "priced_lines", [ln.row() for ln in lines], column_names=list(PRICED_LINE_COLUMNS)
            )
        self.lines += lines

    def _store(self, tenant: str, lines: list[PricedLine]) -> list[PricedLine]:
        self.insert(lines)  # lines first, then the state: as the pricing agent does
        row = state_row(
            "pricing-g", "tenant", "usage-by-tenant", 0, tenant, json.dumps(self.states[tenant])
        )
        self.ch.insert("worker_state", [row], column_names=list(STATE_COLUMNS))
        return lines


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def acme_november(p: Pricer) -> None:
    """acme (New York, monthly, $25 credit, volume H100, 5000 API calls included)."""
    p.event(
        "acme", utc(2026, 11, 3, 15), model="gpt-4o", input_tokens=1_000_000, output_tokens=200_000
    )
    p.event("acme", utc(2026, 11, 10), node="gpu.rerank", gpu_ms=30_000_000, gpu_type="H100",
            gpu_source=GpuSource.MEASURED)  # fmt: skip
    p.event("acme", utc(2026, 11, 12), node="gpu.rerank", gpu_ms=10_000_000, gpu_type="H100",
            gpu_source=GpuSource.MEASURED)  # fmt: skip
    p.event("acme", utc(2026, 11, 20), node="tools", api_calls=6000)
    # 04:30 UTC on December 1 is 23:30 on November 30 in New York: November
    p.event("acme", utc(2026, 12, 1, 4, 30), model="gpt-4o", input_tokens=400_000)


def sql_sum(ch: Any, where: str) -> D:
    return D(
        ch.query(f"SELECT sum(amount) FROM priced_lines FINAL WHERE {where}").result_rows[0][0]
    )


def test_total_is_the_sum_of_the_lines_and_issue_is_idempotent(ch: Any) -> None:
    p = Pricer(ch)
    acme_november(p)
    draft = statement(ch, CONFIG, "acme", "2026-11", grace=GRACE)
    assert draft.status == "draft" and not draft.settled
    with pytest.raises(StatementError, match="not settled"):
        issue(ch, CONFIG, "acme", "2026-11", grace=GRACE)
    assert ch.query("SELECT count() FROM statements").result_rows[0][0] == 0

    assert p.tick("acme", utc(2026, 12, 1, 6)), "the close settles the volume meter"
    st, new = issue(ch, CONFIG, "acme", "2026-11", grace=GRACE,
                    clock=lambda: utc(2026, 12, 2, 9))  # fmt: skip
    assert new and st.status == "issued" and st.settled
    # to the unit: the statement's total is the sum of its priced lines, as stored
    total = st.total("USD")
    assert total.amount == sql_sum(ch, "tenant = 'acme' AND window_id = '2026-11'")
    assert total.amount == sum((ln.amount for ln in p.lines), D(0))
    assert total.lines == len(p.lines) == len(st.line_ids)
    # by hand: input 2.50 + 0.80 (December 1, 04:30 UTC: the default book's version 2 is
    # in force at that event time), output 2.00, H100 30 + 9 provisional settled to
    # 40M x 0.0000009 = 36 (-3), API calls 1000 x 0.0004 = 0.40, credit -25
    assert total.amount == D("16.7") and total.due == D("16.70")
    sections = {i.section: i for i in st.items}
    assert set(sections) == {"usage", "included", "credit", "settlement"}
    assert sections["settlement"].amount == D("-3") and sections["credit"].amount == D("-25")
    assert sections["included"].quantity == 5000 and sections["included"].amount == 0
    h100 = [i for i in st.items if i.section == "usage" and i.meter == "gpu_ms"]
    assert [(i.quantity, i.unit_price, i.lines) for i in h100] == [
        (30_000_000, D("0.000001"), 1), (10_000_000, D("0.0000009"), 1)]  # fmt: skip
    assert sum((s.amount for s in st.node_subtotals), D(0)) == total.amount
    assert sum((s.amount for s in st.workflow_subtotals), D(0)) == total.amount
    nodes = {(s.workflow, s.node_id): s.amount for s in st.node_subtotals}
    # a node's subtotal is net of the credit its events consumed (credit lines name the
    # event's node); the settlement belongs to no node
    assert nodes[("support", "gpu.rerank")] == D("30") + D("9") - D("20.5")
    assert nodes[("", "")] == D("-3")

    again, new_again = issue(ch, CONFIG, "acme", "2026-11", grace=GRACE,
                             clock=lambda: utc(2026, 12, 9))  # fmt: skip
    assert not new_again and again.statement_id == st.statement_id
    assert to_json(again) == to_json(st)  # same id, same content, same issue time
    rows = ch.query("SELECT count() FROM statements FINAL").result_rows[0][0]
    assert rows == 1


def test_tenant_time_zone_decides_the_window(ch: Any) -> None:
    p = Pricer(ch)
    # initech: Tokyo (UTC+9), monthly; 23:30 UTC on November 30 is December 1 there
    p.event("initech", utc(2026, 11, 15), model="gpt-4o", input_tokens=1_000_000)  # 2.50
    late_night = p.event(
        "initech", utc(2026, 11, 30, 23, 30), model="gpt-4o", input_tokens=1_000_000
    )
    assert {ln.window_id for ln in late_night} == {"2026-12"}
    nov = statement(ch, CONFIG, "initech", "2026-11", grace=GRACE)
    dec = statement(ch, CONFIG, "initech", "2026-12", grace=GRACE)
    assert nov.total("USD").amount == D("2.5") and nov.window_start == utc(2026, 10, 31, 15)
    # December's window at version 1's price: versions go by UTC event time, windows local
    assert dec.total("USD").amount == D("2.5") and dec.window_start == utc(2026, 11, 30, 15)
    assert not set(nov.line_ids) & set(dec.line_ids)
    # globex: Berlin, daily; 23:30 UTC on November 24 is 00:30 on the 25th
    p.event("globex", utc(2026, 11, 24, 23, 30), model="gpt-4o", output_tokens=1000)
    day = statement(ch, CONFIG, "globex", "2026-11-25", grace=GRACE)
    assert day.total("USD").amount == D("0.01") and day.billing_window == "day"
    assert day.window_start == utc(2026, 11, 24, 23)
    with pytest.raises(StatementError, match="no priced lines in it"):
        statement(ch, CONFIG, "globex", "2026-11-24", grace=GRACE)


def repricing_engine(tmp: Path) -> PricingEngine:
    """The example books with acme version 2 from November 1: version 1's rates, but API
    calls at 0.0003 instead of 0.0004."""
    books = tmp / "books"
    shutil.copytree(EXAMPLES_DIR, books)
    text = (books / "acme.yaml").read_text()
    v1 = text[text.index("    - version: 1") :]
    v2 = v1.replace("version: 1", "version: 2").replace(
        '"2026-01-01T00:00:00Z"', '"2026-11-01T00:00:00Z"'
    )
    assert 'unit_price: "0.0004"' in v2
    (books / "acme.yaml").write_text(text + v2.replace('"0.0004"', '"0.0003"'))
    return PricingEngine(load_config(books), grace=GRACE)


def test_late_lines_and_repricing_go_on_the_next_statement_once(ch: Any, tmp_path: Path) -> None:
    p = Pricer(ch)
    acme_november(p)
    p.tick("acme", utc(2026, 12, 1, 6))
    nov, _ = issue(ch, CONFIG, "acme", "2026-11", grace=GRACE, clock=lambda: utc(2026, 12, 2))
    issued_json = to_json(nov)

    # a late event for November, after its statement was issued: usage + a settlement delta
    late = p.event("acme", utc(2026, 11, 25), node="gpu.rerank", gpu_ms=330_000_000,
                   gpu_type="H100", gpu_source=GpuSource.MEASURED)  # fmt: skip
    assert {ln.window_id for ln in late} == {"2026-11"}
    assert {ln.line_kind for ln in late} == {"usage", "settlement"}
    late_sum = sum((ln.amount for ln in late), D(0))
    # 330M ms reach tier 3: 330M x 0.00000075 = 247.50 provisional; the window's 370M ms
    # settle at 277.50 where 286.50 was charged and -3 settled: -6
    assert late_sum == D("247.5") - D("6")
    p.event("acme", utc(2026, 12, 5), model="gpt-4o", output_tokens=3_000_000)  # 30, credit -25

    again = statement(ch, CONFIG, "acme", "2026-11", grace=GRACE)
    assert to_json(again) == issued_json  # the issued statement does not change
    dec = statement(ch, CONFIG, "acme", "2026-12", grace=GRACE)
    earlier = [i for i in dec.items if i.section == "earlier"]
    assert {i.window_id for i in earlier} == {"2026-11"} and dec.earlier_windows == ("2026-11",)
    assert sum((i.amount for i in earlier), D(0)) == late_sum
    assert set(dec.line_ids) >= {ln.line_id for ln in late}
    assert dec.total("USD").amount == D("5") + late_sum

    p.tick("acme", utc(2027, 1, 1, 7))
    dec_issued, new = issue(
        ch, CONFIG, "acme", "2026-12", grace=GRACE, clock=lambda: utc(2027, 1, 2)
    )
    assert new and dec_issued.total("USD").amount == dec.total("USD").amount
    # nothing left over: January has no lines of its own and none carried
    with pytest.raises(StatementError, match="unknown window '2027-01'"):
        statement(ch, CONFIG, "acme", "2027-01", grace=GRACE)

    # repricing November under acme version 2 writes adjustment lines for November
    nov_events = [ev for ev in p.events if ev.event_time < utc(2026, 12, 1, 5)]
    old = [ln for ln in p.lines if ln.window_id == "2026-11"]
    adjustments = reprice(repricing_engine(tmp_path), nov_events, old, tag="acme@v2")
    assert adjustments and {a.window_id for a in adjustments} == {"2026-11"}
    p.insert(adjustments)
    adj_sum = sum((a.amount for a in adjustments), D(0))
    assert adj_sum == D("-0.1")  # 1000 paid calls at 0.0003 instead of 0.0004

    jan = statement(ch, CONFIG, "acme", "2027-01", grace=GRACE)
    assert {i.line_kind for i in jan.items} == {"adjustment"}
    assert set(jan.line_ids) == {a.line_id for a in adjustments}  # not the late lines again
    assert jan.total("USD").amount == adj_sum and jan.total("USD").due == D("-0.10")
    assert to_json(statement(ch, CONFIG, "acme", "2026-11", grace=GRACE)) == issued_json
    assert to_json(statement(ch, CONFIG, "acme", "2026-12", grace=GRACE)) == to_json(dec_issued)
    # every line of acme is on exactly one statement (or on January's draft)
    on = list(nov.line_ids) + list(dec_issued.line_ids) + list(jan.line_ids)
    assert sorted(on) == sorted({ln.line_id for ln in p.lines})


def test_json_csv_html_and_text_render_the_same_total(ch: Any) -> None:
    p = Pricer(ch)
    # 3 x 1_234_567 gpt-4o input tokens: 9.2592525, due 9.26 (rounded once, not per line)
    for day in (2, 3, 4):
        p.event("initech", utc(2026, 11, day), model="gpt-4o", input_tokens=1_234_567)
    st = statement(ch, CONFIG, "initech", "2026-11", grace=GRACE)
    exact, due = D("9.2592525"), D("9.26")
    assert st.total("USD").amount == exact and st.total("USD").due == due
    doc = json.loads(render(st, "json"), parse_float=lambda s: pytest.fail(f"float {s}"))
    assert doc["totals"] == [
        {"currency": "USD", "amount": "9.259252500000", "due": "9.26", "lines": 3}
    ]
    assert doc["items"][0]["amount"] == "9.259252500000"  # lines unrounded
    total_rows = [r for r in csv.DictReader(io.StringIO(to_csv(st))) if r["record"] == "total"]
    assert [(D(r["amount"]), D(r["due"])) for r in total_rows] == [(exact, due)]
    page = to_html(st)
    assert 'data-due="9.26"' in page and 'data-amount="9.259252500000"' in page
    assert "<script" not in page and "http" not in page.split("</style>")[0]
    assert re.search(r"^TOTAL 9\.26 USD  \(exact 9\.2592525,", render(st, "text"), re.M)


def test_cli_prints_issues_and_refuses_with_a_clear_message(
    ch: Any, clickhouse_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = Pricer(ch)
    acme_november(p)
    store = ["--url", clickhouse_config.url, "--database", clickhouse_config.database,
             "--pricebooks", str(EXAMPLES_DIR)]  # fmt: skip
    base = ["statement", "--tenant", "acme", "--window", "2026-11", *store]
    for argv, message in [
        (["statement", "--tenant", "nobody", "--window", "2026-11", *store], "unknown tenant 'nobody'"),
        (["statement", "--tenant", "acme", "--window", "2026-13", *store], "unknown window '2026-13'"),
        (["statement", "--tenant", "acme", "--window", "2026-11-05", *store], "months in America/New_York, named YYYY-MM"),
        (["statement", "--tenant", "acme", "--window", "2026-07", *store], "windows with lines: 2026-11"),
        ([*base, "--issue"], "window 2026-11 of tenant 'acme' is not settled"),
    ]:  # fmt: skip
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        last = err.splitlines()[-1]
        assert last.startswith("nodemeter statement: error: ") and message in last, err
    assert main([*base, "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("statement_id,tenant,statement_window,status,")
    p.tick("acme", utc(2026, 12, 1, 6))
    page = tmp_path / "acme.html"
    assert main([*base, "--issue", "--format", "html", "-o", str(page)]) == 0
    out, err = capsys.readouterr()
    assert "issued st_" in err and "[statement] 3/3" in err and str(page) in out
    assert 'data-due="16.70"' in page.read_text() and "ISSUED" in page.read_text()
    assert main([*base, "--issue"]) == 0
    out, err = capsys.readouterr()
    assert "already issued" in err and "TOTAL 16.70 USD" in out
