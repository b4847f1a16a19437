"""Analytics at scale on embedded chDB: every library query's latency, bytes per line.

    .venv/bin/python bench/bench_analytics.py [--lines 1000000] [--runs 20]
        [--path DIR] [--skip-rebuild] [--settle SECONDS]

Lines are generated inside ClickHouse (INSERT ... SELECT FROM numbers) in blocks, with
the rollup views attached, so the figures measure the engine and the views, not Python
row building. The data look like the pipeline's: 32-hex ids (request, event, line:
hashes, as the SDK and the pricing worker make them), 8 lines from 5 events per request
(preprocess, db.query, features, llm.answer with input/output/cached/cache-write tokens,
gpu.rerank), 3 tenants, requests spread evenly over 46 days from 2026-10-15, a request
in 97 fifty times larger, two price book versions, a credit line per tenant and day,
budget alerts (a monthly tenant budget and a daily workflow budget per day).

Prints, for each library query that takes a tenant and a period, the median and p95 of
--runs runs (after one warm-up run, shown as "first") for acme and November (a month)
and for one day with edges off the hour; the queries over all history (reconcile) with
their times; the worker's stored-line lookup; and the bytes stored per priced line
(compressed, from system.parts). usage_events is not generated: request_spans and
gpu_measured_vs_estimated read it and are timed on an empty table (listed as such).
--path keeps the store: a second run with the same --path and --lines reuses it (and
applies the migrations it lacks). Before measuring it waits for the background merges
to finish (at most --settle seconds, printed): right after generating or migrating,
dozens of merges would otherwise share the cores with the queries.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from nodemeter_stream.analytics import queries
from nodemeter_stream.analytics.rebuild import ROLLUPS, rebuild
from nodemeter_stream.analytics.report import collect
from nodemeter_stream.sink.migrate import migrate
from nodemeter_stream.sink.store import ClickHouseConfig, connect

T = TypeVar("T")

SPAN_S = 4_000_000  # 46.3 days
LINES_PER_REQUEST = 8

GENERATE = """
INSERT INTO priced_lines (line_id, line_kind, event_id, tenant, request_id, node_id, workflow,
    model, provider, meter, gpu_type, quantity, unit_price, amount, currency, price_book,
    price_book_version, charge_model, tier, window_id, window_start, event_time, cache_savings)
SELECT
    lower(hex(MD5(concat(event_id, '/', meter)))), 'usage', event_id, tenant, request_id,
    node_id, 'qa', if(e = 3, 'gpt-4o', ''), if(e = 3, 'openai', ''), meter,
    if(e = 4, 'H100', ''), toDecimal128(qty, 0) AS q, price, q * price, 'USD',
    concat(tenant, '-book'),
    if(event_time < toDateTime64('2026-11-15 00:00:00', 6, 'UTC'), 1, 2), 'flat', 0,
    formatDateTime(event_time, '%Y-%m'), toStartOfMonth(event_time), event_time,
    if(j = 5, q * toDecimal128('0.0000027', 12), toDecimal128(0, 12))
FROM
(
    SELECT
        intDiv(number, 8) AS r, number % 8 AS j,
        ['acme', 'globex', 'initech'][r % 3 + 1] AS tenant,
        lower(hex(MD5(concat('request/', toString(r))))) AS request_id,
        [0, 1, 2, 3, 3, 3, 3, 4][j + 1] AS e,
        ['preprocess', 'db.query', 'features', 'llm.answer', 'gpu.rerank'][e + 1] AS node_id,
        ['cpu_ms', 'api_calls', 'cpu_ms', 'input_tokens', 'output_tokens',
         'cached_input_tokens', 'cache_write_tokens', 'gpu_ms'][j + 1] AS meter,
        lower(hex(MD5(concat(request_id, '/', toString(e))))) AS event_id,
        toDateTime64('2026-10-15 00:00:00', 6, 'UTC')
            + toIntervalMicrosecond(r * {us_per_request} + e * 150000 + cityHash64(r) % 100000)
            AS event_time,
        cityHash64(number) AS h,
        [h % 500 + 1, 1, h % 300 + 1, h % 4000 + 100, h % 1000 + 10, h % 2000, h % 500,
         h % 1000 + 1][j + 1] * if(r % 97 = 0, 50, 1) AS qty,
        toDecimal128(['0.000001', '0.0005', '0.000001', '0.000003', '0.000015', '0.0000003',
                      '0.00000375', '0.0001'][j + 1], 12) AS price
    FROM numbers({offset}, {count})
)
"""

CREDITS = """
INSERT INTO priced_lines (line_id, line_kind, event_id, tenant, request_id, node_id, workflow,
    model, provider, meter, gpu_type, quantity, unit_price, amount, currency, price_book,
    price_book_version, charge_model, tier, window_id, window_start, event_time)
SELECT lower(hex(MD5(concat('credit/', toString(number))))), 'credit', '', tenant, '', '', '',
    '', '', 'credit', '', toDecimal128(0, 0), toDecimal128(0, 12), toDecimal128('-0.5', 12),
    'USD', concat(tenant, '-book'), 1, 'credit', 0, formatDateTime(at, '%Y-%m'),
    toStartOfMonth(at), at
FROM (SELECT number, ['acme', 'globex', 'initech'][number % 3 + 1] AS tenant,
             toDateTime64('2026-10-15 12:00:00', 6, 'UTC') + toIntervalDay(intDiv(number, 3)) AS at
      FROM numbers(46 * 3))
"""

ALERTS = """
INSERT INTO budget_alerts (alert_id, tenant, budget, workflow, window_id, window_start,
    window_end, threshold_pct, level, limit_amount, spend_amount, hard_limit, crossed_at)
SELECT concat(tenant, '/', budget, '/', wid, '/', toString(pct)), tenant, budget, workflow, wid,
    ws, we, pct, 'INFO', toDecimal128(lim, 12), toDecimal128(lim * pct / 100, 12), false,
    ws + toIntervalHour(1)
FROM
(
    SELECT tenant, 'monthly' AS budget, '' AS workflow, formatDateTime(ws, '%Y-%m') AS wid,
           ws, ws + toIntervalMonth(1) AS we, pct, 100000 AS lim
    FROM (SELECT arrayJoin(['acme', 'globex', 'initech']) AS tenant,
                 arrayJoin([toDateTime64('2026-10-01 00:00:00', 6, 'UTC'),
                            toDateTime64('2026-11-01 00:00:00', 6, 'UTC')]) AS ws,
                 arrayJoin([50, 80, 100]) AS pct)
    UNION ALL
    SELECT tenant, 'qa-daily', 'qa', formatDateTime(ws, '%Y-%m-%d'), ws, ws + toIntervalDay(1),
           50, 2000
    FROM (SELECT arrayJoin(['acme', 'globex', 'initech']) AS tenant,
                 toDateTime64('2026-10-15 00:00:00', 6, 'UTC') + toIntervalDay(number) AS ws
          FROM numbers(46))
)
"""

RATES = """
INSERT INTO price_book_rates (price_book, version, effective_from, currency, meter, model,
    provider, gpu_type, charge_model, tier, up_to, unit_price)
SELECT concat(tenant, '-book'), v, if(v = 1, toDateTime64('2026-10-01 00:00:00', 6, 'UTC'),
       toDateTime64('2026-11-15 00:00:00', 6, 'UTC')), 'USD', meter, '', '', '', 'flat', 0, 0,
       toDecimal128('0.000001', 12)
FROM (SELECT arrayJoin(['acme', 'globex', 'initech']) AS tenant, arrayJoin([1, 2]) AS v,
             arrayJoin(['cpu_ms', 'api_calls', 'input_tokens', 'output_tokens', 'gpu_ms']) AS meter)
"""

MONTH = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
DAY_OFF_HOUR = (
    datetime(2026, 11, 10, 5, 30, tzinfo=UTC),
    datetime(2026, 11, 11, 5, 30, tzinfo=UTC),
)
USAGE_EVENTS_QUERIES = {"request_spans", "gpu_measured_vs_estimated"}


def timed(label: str, fn: Callable[..., T], *args: Any, **kw: Any) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    dt = time.perf_counter() - t0
    print(f"{label:<52} {dt:9.2f} s", flush=True)
    return out, dt


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, -(-len(s) * 95 // 100) - 1)]  # nearest rank


def measure(fn: Callable[[], Any], runs: int) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    xs = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t0)
    return first, statistics.median(xs), p95(xs)


def params_for(query: queries.Query, start: datetime, end: datetime) -> dict[str, Any]:
    extra = {"limit": 10, "bucket_hours": 24}
    return {"tenant": "acme", "start": start, "end": end} | {
        p: v for p, v in extra.items() if p in query.params
    }


def generate(client: Any, n: int, block: int) -> None:
    us = SPAN_S * 1_000_000 // max(1, n // LINES_PER_REQUEST)

    def insert_all() -> None:
        for off in range(0, n, block):
            client.command(
                GENERATE.replace("{us_per_request}", str(us)).format(
                    offset=off, count=min(block, n - off)
                )
            )

    _, dt = timed(f"insert {n:,} lines (4 rollup views attached)", insert_all)
    print(f"{'  -> lines/s with rollups fed on insert':<52} {n / dt:11,.0f}")
    for sql in (CREDITS, ALERTS, RATES):
        client.command(sql)


def settle(client: Any, limit_s: float) -> None:
    """Wait until no merge runs in the bench database, or limit_s passed."""
    t0 = time.perf_counter()
    sql = "SELECT count() FROM system.merges WHERE database = currentDatabase()"
    running = int(client.query(sql).result_rows[0][0])
    while running and time.perf_counter() - t0 < limit_s:
        time.sleep(5)
        running = int(client.query(sql).result_rows[0][0])
    state = f"{running} still running" if running else "none running"
    print(f"{'waited for background merges':<52} {time.perf_counter() - t0:9.2f} s ({state})")


def storage(client: Any) -> None:
    rows = client.query(
        "SELECT table, sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes), "
        "count() FROM system.parts WHERE active AND database = currentDatabase() "
        "GROUP BY table ORDER BY sum(data_compressed_bytes) DESC"
    ).result_rows
    lines = next((int(r[1]) for r in rows if r[0] == "priced_lines"), 0)
    print(f"\n{'table':<26} {'rows':>13} {'compressed':>12} {'B/row':>7} {'B/line':>7} parts")
    for table, n, comp, _unc, parts in rows:
        per_line = comp / lines if lines else 0.0
        print(
            f"{table:<26} {n:>13,} {comp / 2**20:>10,.1f}Mi {comp / max(1, n):>7.1f} "
            f"{per_line:>7.1f} {parts:>5}"
        )
    comp = next(r[2] for r in rows if r[0] == "priced_lines")
    unc = next(r[3] for r in rows if r[0] == "priced_lines")
    print(
        f"priced_lines: {comp / lines:.1f} bytes per line compressed "
        f"({unc / lines:.1f} uncompressed, {unc / comp:.1f}x)"
    )
    cols = client.query(
        "SELECT column, sum(column_data_compressed_bytes) AS b FROM system.parts_columns "
        "WHERE active AND database = currentDatabase() AND table = 'priced_lines' "
        "GROUP BY column ORDER BY b DESC LIMIT 6"
    ).result_rows
    print("  largest columns (B/line): " + ", ".join(f"{c} {b / lines:.1f}" for c, b in cols))


def library_table(client: Any, runs: int) -> None:
    print(f"\n{'query (acme)':<28} {'period':<16} {'first':>8} {'median':>8} {'p95':>8}  (ms)")
    for q in queries.library():
        if set(q.params) < {"tenant", "start", "end"}:
            continue
        note = "  usage_events empty" if q.name in USAGE_EVENTS_QUERIES else ""
        for label, (start, end) in (("November", MONTH), ("1 day, off-hour", DAY_OFF_HOUR)):
            kw = params_for(q, start, end)
            first, med, hi = measure(functools.partial(queries.run, client, q.name, **kw), runs)
            print(
                f"{q.name:<28} {label:<16} {first * 1e3:8.1f} {med * 1e3:8.1f} {hi * 1e3:8.1f}"
                + note,
                flush=True,
            )
    first, med, hi = measure(
        lambda: collect(client, tenant="acme", start=MONTH[0], end=MONTH[1]), max(3, runs // 4)
    )
    print(
        f"{'report collect (4 queries)':<28} {'November':<16} {first * 1e3:8.1f} "
        f"{med * 1e3:8.1f} {hi * 1e3:8.1f}"
    )


def other_reads(client: Any, runs: int) -> None:
    print("\nall history and the worker's lookup:")
    _, med, hi = measure(lambda: queries.run(client, "reconcile"), max(2, runs // 10))
    print(f"{'reconcile (all tenants, all history)':<45} median {med:7.2f} s, p95 {hi:7.2f} s")
    ids = [
        str(r[0])
        for r in client.query(
            "SELECT line_id FROM priced_lines WHERE tenant = 'acme' AND window_id = '2026-11' "
            "LIMIT 200 OFFSET 1000000"
        ).result_rows
    ]
    in_list = ", ".join(f"'{i}'" for i in ids)
    lookup = (
        "SELECT line_id FROM priced_lines WHERE (tenant = 'acme' AND window_id = '2026-11' "
        f"AND line_id IN ({in_list}))"
    )
    _, med, hi = measure(lambda: client.query(lookup), max(3, runs // 4))
    print(
        f"{'stored_lines lookup, 200 ids (sink/state.py)':<45} median {med * 1e3:7.1f} ms, "
        f"p95 {hi * 1e3:7.1f} ms"
    )
    bounds = client.query(
        f"SELECT min(event_time), max(event_time) FROM priced_lines WHERE line_id IN ({in_list})"
    ).result_rows[0]
    bounded = lookup[:-1] + (
        f" AND event_time BETWEEN toDateTime64('{bounds[0]}', 6, 'UTC') "
        f"AND toDateTime64('{bounds[1]}', 6, 'UTC'))"
    )
    _, med, hi = measure(lambda: client.query(bounded), max(3, runs // 4))
    print(
        f"{'  the same with the lines event_time bounds':<45} median {med * 1e3:7.1f} ms, "
        f"p95 {hi * 1e3:7.1f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--block", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--path", help="store directory (kept; reused when it holds --lines)")
    ap.add_argument("--skip-rebuild", action="store_true")
    ap.add_argument("--settle", type=float, default=900, help="max seconds to wait for merges")
    args = ap.parse_args()
    path = args.path or tempfile.mkdtemp(prefix="nm-bench-")
    Path(path).mkdir(parents=True, exist_ok=True)
    client = connect(ClickHouseConfig(url=f"chdb://{path}", database="bench"))
    migrate(client, verbose=False)
    n = args.lines
    have = int(
        client.query("SELECT count() FROM priced_lines WHERE line_kind = 'usage'").result_rows[0][0]
    )
    if have == 0:
        generate(client, n, args.block)
    elif have != n:
        raise SystemExit(f"{path} holds {have:,} usage lines, not {n:,}: use another --path")
    else:
        print(f"reusing {path}: {have:,} usage lines")
    settle(client, args.settle)
    storage(client)
    library_table(client, args.runs)
    other_reads(client, args.runs)
    if not args.skip_rebuild:
        _, dt = timed("\nrebuild all rollups", rebuild, client)
        k = sum(r.source == "priced_lines" for r in ROLLUPS)
        label = f"  -> line-rows/s ({k} rollups from priced_lines)"
        print(f"{label:<52} {n * k / dt:11,.0f}")
        result, _ = timed("reconcile after rebuild", queries.run, client, "reconcile")
        assert all(r[-1] for r in result.rows), result.rows
    rows = queries.run(client, "reconcile").rows
    assert all(r[-1] for r in rows), [r for r in rows if not r[-1]]
    print("totals reconcile: priced_lines = every rollup, to the unit")


if __name__ == "__main__":
    main()
