"""Report rendering (pure): the terminal table, the SVG graph and chart, the HTML page."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal as D

from nodemeter_stream.analytics import html
from nodemeter_stream.analytics.report import (
    Edge,
    NodeCost,
    Point,
    Report,
    RequestCost,
    bucket_hours_for,
    fmt_amount,
    render_table,
    share,
)

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)


def report(**kw: object) -> Report:
    nodes = (
        NodeCost("qa", "gpu.rerank", "USD", (), D("0.029"), 2),
        NodeCost("qa", "llm.answer", "USD", ("gpt-4o",), D("0.014025"), 6),
        NodeCost("qa", "preprocess", "USD", (), D("0.0001"), 1),
        NodeCost("", "", "USD", (), D("-0.001"), 1),
    )
    base: dict[str, object] = {
        "tenant": "acme",
        "start": START,
        "end": END,
        "generated_at": datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        "bucket_hours": 24,
        "nodes": nodes,
        "edges": (
            Edge("qa", "preprocess", "llm.answer", 2),
            Edge("qa", "llm.answer", "gpu.rerank", 2),
            Edge("qa", "preprocess", "llm.summarize", 1),
        ),
        "series": (
            Point(START, "gpu.rerank", "USD", D("0.025")),
            Point(START, "llm.answer", "USD", D("0.006525")),
            Point(datetime(2026, 11, 2, tzinfo=UTC), "gpu.rerank", "USD", D("0.004")),
            Point(datetime(2026, 11, 2, tzinfo=UTC), "", "USD", D("-0.001")),
        ),
        "top_requests": (
            RequestCost("r1", "qa", "USD", D("0.031625"), START, (("gpu.rerank", D("0.025")),)),
        ),
        "totals": {"USD": D("0.042125")},
    }
    return Report(**(base | kw))  # type: ignore[arg-type]


def test_terminal_table_golden() -> None:
    assert render_table(report()) == (
        "Cost per node for tenant acme, 2026-11-01 00:00 to 2026-11-03 00:00 UTC (end exclusive)\n"
        "\n"
        "node        workflow  models  lines           cost   share\n"
        "----------  --------  ------  -----  -------------  ------\n"
        "gpu.rerank  qa        -           2   0.029000 USD   68.8%\n"
        "llm.answer  qa        gpt-4o      6   0.014025 USD   33.3%\n"
        "preprocess  qa        -           1   0.000100 USD    0.2%\n"
        "(no node)             -           1  -0.001000 USD   -2.4%\n"
        "TOTAL                            10   0.042125 USD  100.0%\n"
        "\n"
        "Most expensive requests (top 1):\n"
        "  r1  0.031625 USD  (gpu.rerank 0.025000)\n"
    )


def test_exact_amounts_and_empty_report() -> None:
    assert "0.014025000000 USD" in render_table(report(), exact=True)
    empty = render_table(report(nodes=(), totals={}, top_requests=()))
    assert empty.endswith("no priced usage in this period\n")


def test_money_formatting_never_goes_through_float() -> None:
    assert fmt_amount(D("1234567.1234565")) == "1,234,567.123456"  # banker's rounding on display
    assert fmt_amount(D("0.000000000001"), exact=True) == "0.000000000001"
    assert share(D(1), D(3)) == "33.3%"
    assert share(D(1), D(0)) == "-"
    assert share(D("0.00001"), D(1)) == "<0.1%"
    assert share(D(0), D(1)) == "0.0%"


def test_bucket_resolution() -> None:
    assert bucket_hours_for(START, END) == 1
    assert bucket_hours_for(START, datetime(2026, 12, 1, tzinfo=UTC)) == 24


def test_layers_longest_path_and_cycles_terminate() -> None:
    edges = [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")]
    assert html.layers(["a", "b", "c", "d"], edges) == {"a": 0, "b": 1, "c": 2, "d": 3}
    cyc = html.layers(["x", "y"], [("x", "y"), ("y", "x")])
    assert set(cyc) == {"x", "y"}  # returns, bounded


def circles(svg: str) -> dict[str, tuple[float, float, float, str]]:
    out = {}
    for m in re.finditer(
        r'data-node="([^"]+)"[^>]*><circle cx="([\d.]+)" cy="([\d.]+)" r="([\d.]+)" fill="(#\w+)"',
        svg,
    ):
        out[m.group(1)] = (float(m.group(2)), float(m.group(3)), float(m.group(4)), m.group(5))
    return out


def test_graph_nodes_sized_and_coloured_by_cost_and_laid_out_by_depth() -> None:
    svg = html.graph_svg(report())
    c = circles(svg)
    assert set(c) == {"preprocess", "llm.answer", "gpu.rerank", "llm.summarize"}
    r = {n: v[2] for n, v in c.items()}
    assert r["gpu.rerank"] > r["llm.answer"] > r["preprocess"] >= r["llm.summarize"]
    assert c["gpu.rerank"][3] == "#bd0026"  # the most expensive node: darkest
    assert c["llm.summarize"][3] == "#ffeda0"  # no cost: lightest
    x = {n: v[0] for n, v in c.items()}
    assert x["preprocess"] < x["llm.answer"] == x["llm.summarize"] < x["gpu.rerank"]
    assert svg.count('class="edge"') == 3
    assert "(no node)" not in svg  # credits are not a node of the workflow


def test_chart_stacks_positive_cost_per_bucket() -> None:
    svg = html.chart_svg(report())
    bars = re.findall(r'<rect class="bar"[^>]*height="([\d.]+)"', svg)
    assert len(bars) == 3  # day 1: two nodes, day 2: one (the credit is left out)
    assert "(no node)" not in svg


def test_html_page_is_self_contained_and_escaped() -> None:
    evil = NodeCost("qa", "<script>alert(1)</script>", "USD", (), D("1"), 1)
    page = html.render(report(nodes=(evil,), edges=(), totals={"USD": D("1")}))
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r'(src|href)="(?!#)', page)
    assert "<link" not in page
    assert set(re.findall(r"https?://[^\s\"']+", page)) == {"http://www.w3.org/2000/svg"}


def test_html_page_has_graph_chart_and_tables() -> None:
    page = html.render(report())
    assert page.count("<svg") == 2
    assert "Total: <b>0.042125 USD</b>" in page
    assert "<td>r1</td>" in page


def test_each_currency_has_its_own_total_and_shares() -> None:
    nodes = (
        NodeCost("qa", "llm", "USD", (), D("3"), 1),
        NodeCost("qa", "gpu", "EUR", (), D("1"), 1),
        NodeCost("qa", "llm", "EUR", (), D("1"), 1),
    )
    r = report(nodes=nodes, totals={"USD": D(3), "EUR": D(2)}, top_requests=())
    rows = [ln.split() for ln in render_table(r).splitlines()]
    assert ["llm", "qa", "-", "1", "3.000000", "USD", "100.0%"] in rows
    assert ["gpu", "qa", "-", "1", "1.000000", "EUR", "50.0%"] in rows
    assert ["TOTAL", "2", "2.000000", "EUR", "100.0%"] in rows
    assert ["TOTAL", "1", "3.000000", "USD", "100.0%"] in rows
    assert r.currency == "USD"  # the graph and chart are drawn in one currency
    assert r.node_totals("EUR") == {"gpu": D(1), "llm": D(1)}


def test_terminal_safe_escapes_controls_and_keeps_text() -> None:
    from nodemeter_stream.analytics.report import table, terminal_safe

    assert terminal_safe("llm.answer — é 中") == "llm.answer — é 中"
    assert terminal_safe("a\nb\tc\rd\\e") == "a\\nb\\tc\\rd\\\\e"
    assert terminal_safe("\x1b[31m\x00\x7f\x85\u202e\u2028\ufeff") == (
        "\\x1b[31m\\x00\\x7f\\x85\\u202e\\u2028\\ufeff"
    )
    forged = table(["node"], [["x\nTOTAL 100.0%"]])
    assert forged.splitlines() == ["node", "-" * 15, "x\\nTOTAL 100.0%"]
