"""Every query of sql/queries/ on chDB, on known rows with hand-computed answers
(see analytics_data.py for the arithmetic)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from analytics_data import DEC_START, NOV_START, load_known, t
from test_queries_cache import test_cache_savings_by_node  # its known-answer test
from test_queries_unmatched import test_unmatched_models  # its known-answer test

from nodemeter_stream.analytics import queries
from nodemeter_stream.analytics.report import collect

pytestmark = pytest.mark.clickhouse

NOV = {"tenant": "acme", "start": NOV_START, "end": DEC_START}


def run(ch: Any, name: str, **params: Any) -> list[tuple[Any, ...]]:
    return queries.run(ch, name, **params).rows


@pytest.fixture
def known(ch: Any) -> Any:
    load_known(ch)
    return ch


def test_node_costs(known: Any) -> None:
    rows = run(known, "node_costs", **NOV)
    assert rows == [
        ("qa", "gpu.rerank", "USD", [], D("0.029"), 2),
        ("qa", "llm.answer", "USD", ["gpt-4o"], D("0.014025"), 6),
        ("qa", "preprocess", "USD", [], D("0.0001"), 1),
        ("", "", "USD", [], D("-0.001"), 1),
    ]
    assert sum(r[4] for r in rows) == D("0.042125")


def test_node_costs_other_tenant_and_period(known: Any) -> None:
    assert run(known, "node_costs", tenant="globex", start=NOV_START, end=DEC_START) == [
        ("qa", "llm.answer", "USD", ["claude"], D("5"), 1)
    ]
    october = datetime(2026, 10, 1, tzinfo=UTC)
    assert run(known, "node_costs", tenant="acme", start=october, end=NOV_START) == [
        ("qa", "llm.answer", "USD", ["gpt-4o"], D("0.3"), 1)
    ]
    assert run(known, "node_costs", tenant="nobody", start=NOV_START, end=DEC_START) == []


def test_top_requests_with_node_breakdown(known: Any) -> None:
    rows = run(known, "top_requests", limit=5, **NOV)
    assert [(r[0], r[2], r[3], r[6]) for r in rows] == [
        ("r1", "qa", D("0.031625"),
         [("gpu.rerank", D("0.025")), ("llm.answer", D("0.006525")), ("preprocess", D("0.0001"))]),
        ("r2", "qa", D("0.0115"), [("llm.answer", D("0.0075")), ("gpu.rerank", D("0.004"))]),
    ]  # fmt: skip
    assert rows[0][4].replace(tzinfo=UTC) == datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    assert rows[0][5].replace(tzinfo=UTC) == datetime(2026, 11, 2, 10, 2, tzinfo=UTC)
    assert [r[0] for r in run(known, "top_requests", limit=1, **NOV)] == ["r1"]


def test_model_meter_daily(known: Any) -> None:
    rows = run(known, "model_meter_daily", **NOV)
    d2, d3 = date(2026, 11, 2), date(2026, 11, 3)
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in rows] == [
        (d2, "", "cpu_ms", D(100), D("0.0001")),
        (d2, "", "gpu_ms", D(250), D("0.025")),
        (d2, "gpt-4o", "cache_write_tokens", D(100), D("0.000375")),
        (d2, "gpt-4o", "cached_input_tokens", D(500), D("0.00015")),
        (d2, "gpt-4o", "input_tokens", D(1000), D("0.003")),
        (d2, "gpt-4o", "output_tokens", D(200), D("0.003")),
        (d3, "", "credit", D(1), D("-0.001")),
        (d3, "", "gpu_ms", D(40), D("0.004")),
        (d3, "gpt-4o", "input_tokens", D(2000), D("0.006")),
        (d3, "gpt-4o", "output_tokens", D(100), D("0.0015")),
    ]
    assert {r[3] for r in rows} == {"USD"}


def test_gpu_measured_vs_estimated(known: Any) -> None:
    # warm-up (non-billable), October and globex rows are excluded
    assert run(known, "gpu_measured_vs_estimated", **NOV) == [
        ("gpu.rerank", "H100", 250, 40, 290, 1, 1)
    ]


def test_gpu_counts_a_duplicate_event_once(known: Any) -> None:
    from analytics_data import insert_events, known_events

    insert_events(known, [r for r in known_events() if r[0] == "e3"])  # a resend
    assert run(known, "gpu_measured_vs_estimated", **NOV)[0][2] == 250


def test_cache_savings(known: Any) -> None:
    assert run(known, "cache_savings", **NOV) == [
        # 500 cached tokens: charged 0.00015, at the input price 0.0015; 100 cache-write
        # tokens 0.000375. The write line carries no input_list_cost (as a line priced
        # before migration 075): its whole cost counts as premium. Engine-priced lines with
        # a real premium: test_queries_cache.py
        ("gpt-4o", "USD", D(500), D("0.00015"), D("0.0015"), D(100), D("0.000375"),
         D("0.000375"), D("0.000975"))
    ]  # fmt: skip
    assert run(known, "cache_savings", tenant="globex", start=NOV_START, end=DEC_START) == []


def test_budget_status(known: Any) -> None:
    rows = queries.run(known, "budget_status", **NOV).dicts()
    assert [
        (r["budget"], r["workflow"], r["window_id"], r["limit_amount"], r["spend"],
         r["remaining"], r["used_pct"], r["status"], r["max_threshold_pct"], r["alerts"])
        for r in rows
    ] == [
        # tenant-wide: every November line, credit included; the re-sent alert a2 counts once
        ("monthly", "", "2026-11", D("0.04"), D("0.042125"), D("-0.002125"), D("105.31"),
         "exceeded", 100, 2),
        # workflow qa on Nov 2: usage lines of that day only
        ("qa-daily", "qa", "2026-11-02", D("0.05"), D("0.031625"), D("0.018375"), D("63.25"),
         "ok", 50, 1),
    ]  # fmt: skip
    assert rows[0]["hard_limit"] is True
    december = {"tenant": "acme", "start": DEC_START, "end": datetime(2027, 1, 1, tzinfo=UTC)}
    assert queries.run(known, "budget_status", **december).rows == []
    globex = queries.run(known, "budget_status", tenant="globex", start=NOV_START, end=DEC_START)
    assert [(r["status"], r["spend"]) for r in globex.dicts()] == [
        ("warning", D(5))
    ]  # 5 of 6: 83 %


def test_daily_spend_with_running_total(known: Any) -> None:
    assert run(known, "daily_spend", **NOV) == [
        (date(2026, 11, 2), "USD", D("0.031625"), 6, D("0.031625")),
        (date(2026, 11, 3), "USD", D("0.0105"), 4, D("0.042125")),
    ]


def test_cost_over_time_daily_and_hourly(known: Any) -> None:
    rows = run(known, "cost_over_time", bucket_hours=24, **NOV)
    n2, n3 = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    assert [(r[0].replace(tzinfo=UTC), r[1], r[3]) for r in rows] == [
        (n2, "gpu.rerank", D("0.025")),
        (n2, "llm.answer", D("0.006525")),
        (n2, "preprocess", D("0.0001")),
        (n3, "", D("-0.001")),
        (n3, "gpu.rerank", D("0.004")),
        (n3, "llm.answer", D("0.0075")),
    ]
    hourly = run(known, "cost_over_time", bucket_hours=1, **NOV)
    assert sorted({r[0].hour for r in hourly}) == [10, 11, 12]
    assert sum(r[3] for r in hourly) == D("0.042125")


def test_request_spans_and_the_graph_built_from_them(known: Any) -> None:
    rows = run(known, "request_spans", limit=10, **NOV)
    assert [(r[0], r[2], r[3], r[4], r[5], r[6].replace(tzinfo=UTC)) for r in rows] == [
        ("r1", "s0", "", "", "preprocess", t(2, 10, 0)),
        ("r1", "s1", "s0", "", "llm.answer", t(2, 10, 1)),
        ("r1", "s3", "s0", "", "llm.summarize", t(2, 10, 1)),
        ("r1", "s2", "s1", "", "gpu.rerank", t(2, 10, 2)),
        ("r2", "s0", "", "", "preprocess", t(3, 11, 0)),
        ("r2", "s1", "s0", "", "llm.answer", t(3, 11, 0)),
        ("r2", "s2", "s1", "", "gpu.rerank", t(3, 11, 1)),
        ("warm", "w0", "", "", "gpu.rerank", t(2, 9, 0)),
    ]  # fmt: skip
    # the most recent request only
    assert {r[0] for r in run(known, "request_spans", limit=1, **NOV)} == {"r2"}
    report = collect(known, tenant="acme", start=NOV_START, end=DEC_START)
    assert [(e.parent, e.node, e.requests) for e in report.edges] == [
        ("llm.answer", "gpu.rerank", 2),
        ("llm.answer", "llm.summarize", 1),
        ("preprocess", "llm.answer", 2),
    ]


def test_reconcile_all_ok(known: Any) -> None:
    rows = queries.run(known, "reconcile").dicts()
    assert all(r["ok"] for r in rows), rows
    got = {(r["tenant"], r["check"]): r["expected"] for r in rows}
    assert got[("acme", "amount: priced_lines = cost_hourly")] == D("0.342125")
    assert got[("acme", "lines: priced_lines = cost_hourly")] == 11
    assert got[("acme", "events: usage_events = usage_hourly")] == 9
    assert got[("globex", "amount: priced_lines = request_node_costs")] == D("5")
    assert got[("acme", "amount: priced_lines with a request = request_costs_by_start")] == D(
        "0.343125"
    )  # every acme line but the credit
    assert got[("acme", "amount: priced_lines = cost_minutely")] == D("0.342125")
    assert got[("acme", "lines: priced_lines = cost_minutely")] == 11
    assert len(rows) == 16  # 2 tenants x (7 money checks + 1 event check)


def test_price_book_versions(known: Any) -> None:
    rows = run(known, "price_book_versions", **NOV)
    assert [(r[0], r[1], r[2].replace(tzinfo=UTC), r[3], r[4], r[5], r[6]) for r in rows] == [
        # 10 November lines priced with acme-book v1; its 3 rates (one loaded twice)
        ("acme-book", 1, datetime(2026, 10, 1, tzinfo=UTC), "USD", 3, 10, D("0.042125")),
    ]
    october = {"tenant": "acme", "start": datetime(2026, 10, 1, tzinfo=UTC), "end": NOV_START}
    assert [(r[0], r[1], r[5], r[6]) for r in run(known, "price_book_versions", **october)] == [
        ("acme-book", 1, 1, D("0.3"))
    ]
    # globex's book was never loaded into price_book_rates: listed, with no rates
    globex = run(known, "price_book_versions", tenant="globex", start=NOV_START, end=DEC_START)
    assert [(r[0], r[1], r[4], r[5]) for r in globex] == [("globex-book", 1, 0, 1)]


# query -> the test above that checks its exact answer
COVERAGE = {
    "node_costs": test_node_costs,
    "top_requests": test_top_requests_with_node_breakdown,
    "model_meter_daily": test_model_meter_daily,
    "gpu_measured_vs_estimated": test_gpu_measured_vs_estimated,
    "cache_savings": test_cache_savings,
    "budget_status": test_budget_status,
    "price_book_versions": test_price_book_versions,
    "daily_spend": test_daily_spend_with_running_total,
    "cost_over_time": test_cost_over_time_daily_and_hourly,
    "request_spans": test_request_spans_and_the_graph_built_from_them,
    "reconcile": test_reconcile_all_ok,
    # these two add tenants of their own: after reconcile, which counts the tenants
    "unmatched_models": test_unmatched_models,
    "cache_savings_by_node": test_cache_savings_by_node,
}


def test_every_library_query_has_a_known_answer_test() -> None:
    assert set(queries.names()) == set(COVERAGE)
