"""The query library's files and parameter binding (pure: no ClickHouse)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from nodemeter_stream.analytics import queries
from nodemeter_stream.analytics.errors import QueryParameterError, UnknownQueryError
from nodemeter_stream.sink.migrate import split_statements

PERIOD = {"tenant": "String", "start": "DateTime('UTC')", "end": "DateTime('UTC')"}

# golden: each query's parameters, in order of first use
SIGNATURES = {
    "budget_status": PERIOD,
    "cache_savings": PERIOD,
    "cache_savings_by_node": PERIOD,
    "cost_over_time": {"bucket_hours": "UInt32", **PERIOD},
    "daily_spend": PERIOD,
    "gpu_measured_vs_estimated": PERIOD,
    "model_meter_daily": PERIOD,
    "node_costs": PERIOD,
    "price_book_versions": PERIOD,
    "reconcile": {},
    "request_spans": {**PERIOD, "limit": "UInt32"},
    "top_requests": {**PERIOD, "limit": "UInt32"},
    "unmatched_models": PERIOD,
}


def test_library_signatures() -> None:
    assert {q.name: q.params for q in queries.library()} == SIGNATURES
    for q in queries.library():
        assert list(q.params) == list(SIGNATURES[q.name]), q.name


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_each_query_is_one_documented_select(name: str) -> None:
    q = queries.load(name)
    assert len(q.description) > 40, "start the file with comment lines saying what it answers"
    assert len(split_statements(q.text)) == 1
    body = "\n".join(line for line in q.text.splitlines() if not line.startswith("--"))
    assert re.match(r"\s*(SELECT|WITH)\b", body)
    assert not re.search(r"\b(INSERT|ALTER|DROP|TRUNCATE|CREATE)\b", body)
    # no braces except placeholders: the driver must not see stray {..}
    assert body.count("{") == len(re.findall(r"\{[a-z_]+:[^{}]+\}", body))


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_queries_on_mergetree_bases_read_final(name: str) -> None:
    text = queries.load(name).text
    for table in ("priced_lines", "usage_events", "budget_alerts", "price_book_rates"):
        for m in re.finditer(rf"FROM {table}\b(\s+\w+)?", text):
            if table == "priced_lines" and (m.group(1) or "").strip() != "FINAL":
                # or one copy per line_id (unmatched_models, the partial-minute edges of
                # the hybrid period queries: their headers say why): the read's own
                # GROUP BY starts with line_id
                group = re.search(r"\bGROUP BY\s+(\w+)", text[m.end() :])
                assert group and group.group(1) == "line_id", f"{name}: {m.group(0)}"
                continue
            assert (m.group(1) or "").strip() == "FINAL", f"{name}: {m.group(0)}"


def test_bind_converts_values() -> None:
    q = queries.load("top_requests")
    start = datetime(2026, 11, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    bound = q.bind({"tenant": "acme", "start": start, "end": start, "limit": 3})
    assert bound == {
        "tenant": "acme",
        "start": "2026-11-01 00:00:00",  # sent as UTC wall clock
        "end": "2026-11-01 00:00:00",
        "limit": 3,
    }


def test_bind_rejects_missing_and_unexpected() -> None:
    q = queries.load("node_costs")
    with pytest.raises(QueryParameterError, match=r"missing: start, end; unexpected: tennant"):
        q.bind({"tenant": "a", "tennant": "a"})


@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        ("start", datetime(2026, 11, 1), "timezone-aware"),  # noqa: DTZ001 - the point
        ("start", date(2026, 11, 1), "timezone-aware"),
        ("tenant", 7, "needs a string"),
        ("limit", "5", "needs an integer"),
        ("limit", True, "needs an integer"),
        ("limit", -1, "must not be negative"),
    ],
)
def test_bind_rejects_wrong_kinds(param: str, value: object, match: str) -> None:
    good = {
        "tenant": "a",
        "start": datetime(2026, 11, 1, tzinfo=UTC),
        "end": datetime(2026, 12, 1, tzinfo=UTC),
        "limit": 5,
    }
    with pytest.raises(QueryParameterError, match=match):
        queries.load("top_requests").bind(good | {param: value})


def test_date_parameters() -> None:
    assert queries.convert("q", "d", "Date", date(2026, 1, 2)) == "2026-01-02"
    with pytest.raises(QueryParameterError):
        queries.convert("q", "d", "Date", datetime(2026, 1, 2, tzinfo=UTC))


def test_a_placeholder_with_two_types_is_an_error() -> None:
    q = queries.Query("bad", "SELECT {a:String}, {a:UInt32}")
    with pytest.raises(QueryParameterError, match="two types"):
        _ = q.params


@pytest.mark.parametrize("name", ["nope", "../migrations/001_usage_events", "Node_Costs"])
def test_unknown_query(name: str) -> None:
    with pytest.raises(UnknownQueryError):
        queries.load(name)
