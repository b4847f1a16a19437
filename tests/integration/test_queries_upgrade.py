"""Migrations 050-052 and 090-093 (issue 16) on chDB: an existing store upgrades without
losing data, the new layout is in place, the queries give the same answers, the period
queries that mix rollup hours and minutes with base-table edges equal direct sums for any
period, and top_requests' threshold (091, 093) ranks what summing the lines gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D
from typing import Any

import pytest
from analytics_data import (
    DEC_START,
    NOV_START,
    insert_alerts,
    insert_lines,
    known_lines,
    line,
    load_known,
    t,
)
from test_queries_library import COVERAGE

from nodemeter_stream.analytics import queries
from nodemeter_stream.analytics.rebuild import rebuild
from nodemeter_stream.pricing.lines import PRICED_LINE_COLUMNS
from nodemeter_stream.sink.migrate import discover, migrate
from nodemeter_stream.sink.store import connect

pytestmark = pytest.mark.clickhouse

NOV = {"tenant": "acme", "start": NOV_START, "end": DEC_START}
LIBRARY = {
    "node_costs": NOV,
    "top_requests": {**NOV, "limit": 5},
    "model_meter_daily": NOV,
    "gpu_measured_vs_estimated": NOV,
    "cache_savings": NOV,
    "cache_savings_by_node": NOV,
    "budget_status": NOV,
    "price_book_versions": NOV,
    "daily_spend": NOV,
    "cost_over_time": {**NOV, "bucket_hours": 24},
    "request_spans": {**NOV, "limit": 10},
    "reconcile": {},
}
# priced_lines columns added after 050 (060, 075): not in the rows of the old store
NEWER = ("rate_match", "input_list_cost")
TABLES = ("priced_lines", "cost_hourly", "tenant_spend_daily", "request_node_costs")
# rollup rows of one key may be merged by the copy: compare what they add up to
MONEY = {t: f"SELECT sum(lines), toString(sum(amount)) FROM {t}" for t in TABLES}
MONEY["priced_lines"] = "SELECT count(), toString(sum(amount)) FROM priced_lines FINAL"


@pytest.fixture
def before_050(clickhouse_config: Any) -> Any:
    """A store migrated up to 040 (the schema before issue 16), with the known rows."""
    client = connect(clickhouse_config)
    migrate(client, migrations=[m for m in discover() if m.version < 50], verbose=False)
    load_known(client)
    # a duplicate line in a block of its own and a line before the rollups existed
    insert_lines(client, [r for r in known_lines() if r[4] == "r2" and r[5] == "gpu.rerank"])
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS {clickhouse_config.database}")


def answers(ch: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {name: queries.run(ch, name, **p).rows for name, p in LIBRARY.items()}


def test_upgrade_keeps_the_data_and_the_answers(before_050: Any) -> None:
    ch = before_050
    lines_before = ch.query("SELECT * FROM priced_lines FINAL ORDER BY line_id").result_rows
    money_before = {t: ch.query(sql).result_rows for t, sql in MONEY.items() if t != "cost_hourly"}

    ran = migrate(ch, verbose=False)
    assert [m.version for m in ran] == [m.version for m in discover() if m.version >= 50]

    keys = dict(
        ch.query(
            "SELECT name, sorting_key FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    )
    assert keys["priced_lines"].startswith("tenant, window_id, toStartOfHour(event_time)")
    assert keys["request_costs_by_start"] == "tenant, start_hour, request_id, currency"
    assert keys["cost_minutely"].startswith("tenant, minute, workflow")
    ddl = ch.query("SHOW CREATE TABLE request_costs_by_start").result_rows[0][0]
    assert "PROJECTION bucket_max_16" in ddl and "index_granularity = 1024" in ddl
    ddl = ch.query("SHOW CREATE TABLE request_node_costs").result_rows[0][0]
    assert "index_granularity = 256" in ddl and "min_compress_block_size = 8192" in ddl
    # every line copied, every column (the duplicate may collapse in the copy, as in a merge)
    got = ch.query(
        f"SELECT {', '.join(c for c in PRICED_LINE_COLUMNS if c not in NEWER)}, priced_at "
        "FROM priced_lines FINAL ORDER BY line_id"
    ).result_rows
    # (priced_at: of the duplicate, either copy may be the one kept)
    assert [r[:-1] for r in got] == [_old_order(r)[:-1] for r in lines_before]
    for table, rows in money_before.items():
        assert ch.query(MONEY[table]).result_rows == rows, table
    # cost_hourly was recomputed from priced_lines FINAL: the duplicate counted once
    assert ch.query(MONEY["cost_hourly"]).result_rows == ch.query(MONEY["priced_lines"]).result_rows

    # tenant_spend_daily (untouched) and request_node_costs (copied as it was) still count
    # the duplicate the old views saw; request_costs_by_start was filled from FINAL.
    # reconcile says so, rebuild fixes it
    bad = {r["check"] for r in queries.run(ch, "reconcile").dicts() if not r["ok"]}
    assert bad == {
        "amount: priced_lines = request_node_costs",
        "amount: priced_lines = tenant_spend_daily",
    }
    rebuild(ch, ["request_node_costs", "tenant_spend_daily"])
    for name, check in COVERAGE.items():  # the known-answer tests, on the upgraded store
        check(ch)
        assert name in queries.names()
    # some known-answer tests insert a redelivered line on purpose (unmatched_models counts
    # it once), which the rollups count twice: rebuild, then the views must keep them equal
    rebuild(ch)
    assert [r for r in queries.run(ch, "reconcile").dicts() if not r["ok"]] == []

    # the views still feed the rollups from the new priced_lines
    insert_lines(ch, [line(request_id="r9", node_id="n", meter="api_calls", quantity=2,
                           unit_price="0.5", at=t(20, 8))])  # fmt: skip
    assert ch.query(
        "SELECT toString(sum(amount)) FROM request_costs_by_start WHERE request_id = 'r9'"
    ).result_rows == [("1",)]
    assert [r[0] for r in queries.run(ch, "top_requests", **NOV, limit=1).rows] == ["r9"]
    assert [r for r in queries.run(ch, "reconcile").dicts() if not r["ok"]] == []


def _old_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of the old table (005 + 030 column order) in the order selected above."""
    names = [c for c in PRICED_LINE_COLUMNS if c not in ("cache_savings", *NEWER)]
    old = dict(zip([*names, "priced_at", "cache_savings"], row, strict=True))
    return tuple(old[c] for c in [*names, "cache_savings", "priced_at"])


def test_migrations_050_to_052_can_run_again(ch: Any) -> None:
    load_known(ch)
    before = answers(ch)
    for mig in discover():
        if mig.version >= 50:
            for stmt in mig.statements():
                ch.command(stmt)
    assert answers(ch) == before


def direct(ch: Any, sql: str, **params: Any) -> Any:
    return ch.query(sql, parameters=params).result_rows


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (t(2, 10, 1), t(3, 11, 1)),  # inside hours at both ends
        (t(2, 10, 1), t(2, 10, 2)),  # both ends in one hour
        (t(2, 9, 30), t(3, 12, 0)),  # one partial edge
        (NOV_START, DEC_START),  # whole hours only
    ],
)
def test_hybrid_period_queries_equal_the_lines_for_any_period(
    ch: Any, start: datetime, end: datetime
) -> None:
    load_known(ch)
    p = {"tenant": "acme", "start": start, "end": end}
    fmt = "%Y-%m-%d %H:%M:%S"
    where = (
        "tenant = 'acme' AND event_time >= toDateTime64({s:String}, 6, 'UTC') "
        "AND event_time < toDateTime64({e:String}, 6, 'UTC')"
    )
    kw = {"s": start.strftime(fmt), "e": end.strftime(fmt)}
    books = direct(
        ch,
        f"SELECT price_book, price_book_version, toUInt64(count()), sum(amount) "
        f"FROM priced_lines FINAL WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2",
        **kw,
    )
    got = [(r[0], r[1], r[5], r[6]) for r in queries.run(ch, "price_book_versions", **p).rows]
    assert got == [tuple(r) for r in books]

    cache = direct(
        ch,
        f"SELECT model, sumIf(quantity, meter = 'cached_input_tokens'), "
        f"sumIf(cache_savings, meter = 'cached_input_tokens'), "
        f"sumIf(amount, meter = 'cache_write_tokens'), "
        f"sumIf(amount - input_list_cost, meter = 'cache_write_tokens') "
        f"FROM priced_lines FINAL WHERE {where} "
        f"AND line_kind = 'usage' AND meter IN ('cached_input_tokens', 'cache_write_tokens') "
        f"GROUP BY model",
        **kw,
    )
    got_cache = [
        (r[0], r[2], r[4] - r[3], r[6], r[7]) for r in queries.run(ch, "cache_savings", **p).rows
    ]
    assert got_cache == [tuple(r) for r in cache]


def test_budget_windows_off_the_hour_are_exact(ch: Any) -> None:
    """A tenant in UTC+05:30: its day window starts and ends at :30 past a UTC hour. The
    spend takes the whole hours from cost_hourly and the half hours from the lines."""
    ist = timezone(timedelta(hours=5, minutes=30))
    ws = datetime(2026, 11, 2, 0, 0, tzinfo=ist).astimezone(UTC)  # Nov 1 18:30 UTC
    we = datetime(2026, 11, 3, 0, 0, tzinfo=ist).astimezone(UTC)  # Nov 2 18:30 UTC
    load_known(ch)
    edge = [
        line(request_id="x1", node_id="n", meter="api_calls", quantity=1, unit_price="1",
             at=ws - timedelta(minutes=1)),  # outside, in the window's first UTC hour
        line(request_id="x2", node_id="n", meter="api_calls", quantity=1, unit_price="2",
             at=ws + timedelta(minutes=1)),  # inside, same hour
        line(request_id="x3", node_id="n", meter="api_calls", quantity=1, unit_price="4",
             at=we - timedelta(minutes=1)),  # inside, in the last UTC hour
        line(request_id="x4", node_id="n", meter="api_calls", quantity=1, unit_price="8",
             at=we),  # outside: the window is half-open
    ]  # fmt: skip
    insert_lines(ch, edge)
    insert_alerts(ch, [["i1", "acme", "ist-daily", "", "2026-11-02", ws, we, 50, "INFO",
                        D(100), D(1), False, ws + timedelta(minutes=1)]])  # fmt: skip
    rows = {r["budget"]: r for r in queries.run(ch, "budget_status", **NOV).dicts()}
    expected = direct(
        ch,
        "SELECT sum(amount) FROM priced_lines FINAL WHERE tenant = 'acme' "
        "AND event_time >= {a:DateTime64(6, 'UTC')} AND event_time < {b:DateTime64(6, 'UTC')}",
        a=ws.replace(tzinfo=None),
        b=we.replace(tzinfo=None),
    )[0][0]
    # r1 (Nov 2 10:xx UTC, 0.031625) and x2 + x3
    assert expected == D("6.031625")
    assert rows["ist-daily"]["spend"] == expected
    assert rows["monthly"]["spend"] == D("0.042125") + D(15)  # all four are in November


def _sub_minute_lines() -> list[list[Any]]:
    """Cache and plain lines off the minute (seconds 10, 30, 50) in the hours of r1 / r2."""
    m = "gpt-4o"
    sec = timedelta(seconds=1)
    return [
        line(request_id="s1", node_id="llm.answer", meter="cached_input_tokens", quantity=300,
             unit_price="0.0000003", at=t(2, 10, 1) + 10 * sec, model=m, cache_savings="0.00081"),
        line(request_id="s1", node_id="llm.answer", meter="cache_write_tokens", quantity=40,
             unit_price="0.00000375", at=t(2, 10, 1) + 30 * sec, model=m),
        line(request_id="s2", node_id="llm.answer", meter="input_tokens", quantity=70,
             unit_price="0.000003", at=t(2, 10, 1) + 50 * sec, model=m),
        line(request_id="s3", node_id="llm.answer", meter="cached_input_tokens", quantity=900,
             unit_price="0.0000003", at=t(3, 11, 0) + 30 * sec, model=m, cache_savings="0.00243"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (t(2, 10, 1) + timedelta(seconds=20), t(3, 11, 0) + timedelta(seconds=40)),  # both off
        (t(2, 10, 1) + timedelta(seconds=20), t(2, 10, 1) + timedelta(seconds=40)),  # one minute
        (t(2, 10, 1) + timedelta(seconds=5), t(2, 10, 2)),  # off at the start only
        (t(2, 9, 30), t(3, 11, 0) + timedelta(seconds=31)),  # off at the end only
        (t(2, 10, 1), t(3, 11, 1)),  # whole minutes: no line read
    ],
)
def test_hybrid_period_queries_off_the_minute(ch: Any, start: datetime, end: datetime) -> None:
    """Periods with edges inside a minute: whole hours from cost_hourly, whole minutes from
    cost_minutely, the seconds from the lines; the same as summing the lines."""
    load_known(ch)
    insert_lines(ch, _sub_minute_lines())
    p = {"tenant": "acme", "start": start, "end": end}
    fmt = "%Y-%m-%d %H:%M:%S"
    where = (
        "tenant = 'acme' AND event_time >= toDateTime64({s:String}, 6, 'UTC') "
        "AND event_time < toDateTime64({e:String}, 6, 'UTC')"
    )
    kw = {"s": start.strftime(fmt), "e": end.strftime(fmt)}
    books = direct(
        ch,
        f"SELECT price_book, price_book_version, toUInt64(count()), sum(amount), "
        f"min(event_time), max(event_time) FROM priced_lines FINAL WHERE {where} "
        f"GROUP BY 1, 2 ORDER BY 1, 2",
        **kw,
    )
    got = [
        (r[0], r[1], r[5], r[6], r[7], r[8])
        for r in queries.run(ch, "price_book_versions", **p).rows
    ]
    assert got == [tuple(r) for r in books]
    cache = direct(
        ch,
        f"SELECT model, sumIf(quantity, meter = 'cached_input_tokens'), "
        f"sumIf(cache_savings, meter = 'cached_input_tokens'), "
        f"sumIf(amount, meter = 'cache_write_tokens'), "
        f"sumIf(amount - input_list_cost, meter = 'cache_write_tokens') "
        f"FROM priced_lines FINAL WHERE {where} "
        f"AND line_kind = 'usage' AND meter IN ('cached_input_tokens', 'cache_write_tokens') "
        f"GROUP BY model",
        **kw,
    )
    got_cache = [
        (r[0], r[2], r[4] - r[3], r[6], r[7]) for r in queries.run(ch, "cache_savings", **p).rows
    ]
    assert got_cache == [tuple(r) for r in cache]
    per_node = queries.run(ch, "cache_savings_by_node", **p).rows
    totals = [sum((r[i] for r in per_node), D(0)) for i in range(4, 11)]
    assert [list(r[2:]) for r in queries.run(ch, "cache_savings", **p).rows] == (
        [totals] if per_node else []
    )


def test_a_redelivered_line_in_a_partial_minute_counts_once(ch: Any) -> None:
    """The seconds at a period's edge come from priced_lines, one copy per line_id."""
    load_known(ch)
    sub = _sub_minute_lines()
    insert_lines(ch, sub)
    insert_lines(ch, sub[:2])  # s1's lines again, in another block (not a retried block)
    p = {"tenant": "acme", "start": t(2, 10, 1) + timedelta(seconds=5), "end": t(2, 10, 2)}
    cache = queries.run(ch, "cache_savings", **p).dicts()
    assert [(r["cached_tokens"], r["cache_write_tokens"]) for r in cache] == [(D(300), D(40))]
    books = queries.run(ch, "price_book_versions", **p).dicts()
    assert [r["lines"] for r in books] == [3]  # s1's two lines and s2's, once each


def test_top_requests_threshold_ranks_the_same_requests(ch: Any) -> None:
    """Enough requests that the period has more bucket maxima (091) than candidates: the
    threshold path ranks, over unmerged parts, exactly what summing the lines gives."""
    rows = []
    for i in range(600):
        at = t(2 + i % 20, i % 24, i % 60)
        price = str(D(i * 7919 % 1000 + 1) / 1000 * (50 if i % 97 == 0 else 1))
        for node in ("a", "b"):
            rows.append(line(request_id=f"q{i:03d}", node_id=node, meter="api_calls",
                             quantity=1, unit_price=price, at=at))  # fmt: skip
    for k in range(0, len(rows), 150):  # four blocks: four parts, a request in one of them
        insert_lines(ch, rows[k : k + 150])
    p = {"tenant": "acme", "start": t(5, 0), "end": t(19, 0)}
    buckets = direct(
        ch,
        "SELECT count() FROM (SELECT 1 FROM request_costs_by_start WHERE tenant = 'acme' "
        "AND start_hour >= {s:DateTime('UTC')} AND start_hour < {e:DateTime('UTC')} "
        "GROUP BY start_hour, cityHash64(request_id) % 16)",
        s=p["start"].replace(tzinfo=None),
        e=p["end"].replace(tzinfo=None),
    )[0][0]
    assert buckets > 10 * 4 + 40  # the threshold applies for limit 10
    expected = direct(
        ch,
        "SELECT request_id, sum(amount) AS a FROM priced_lines FINAL WHERE tenant = 'acme' "
        "AND request_id != '' GROUP BY request_id "
        "HAVING min(event_time) >= {s:DateTime('UTC')} AND min(event_time) < {e:DateTime('UTC')} "
        "ORDER BY a DESC, request_id LIMIT 10",
        s=p["start"].replace(tzinfo=None),
        e=p["end"].replace(tzinfo=None),
    )
    got = queries.run(ch, "top_requests", **p, limit=10).rows
    assert [(r[0], r[3]) for r in got] == [tuple(r) for r in expected]
