"""Analytics figures on embedded chDB: inserting priced lines with the rollup views
attached, reconciliation, the per-node report and a full rebuild.

    .venv/bin/python bench/bench_analytics.py [--lines 1000000]

Lines are generated inside ClickHouse (INSERT ... SELECT FROM numbers) in blocks, so
the figures measure the engine and the views, not Python row building. Prints figures;
asserts only that the totals reconcile.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from nodemeter_stream.analytics import html, queries
from nodemeter_stream.analytics.rebuild import rebuild
from nodemeter_stream.analytics.report import collect
from nodemeter_stream.sink.migrate import migrate
from nodemeter_stream.sink.store import ClickHouseConfig, connect

T = TypeVar("T")

# ~3 tenants x 200k requests x 5 nodes, spread over two months; amounts = qty x price
GENERATE = """
INSERT INTO priced_lines (line_id, line_kind, event_id, tenant, request_id, node_id, workflow,
    model, provider, meter, gpu_type, quantity, unit_price, amount, currency, price_book,
    price_book_version, charge_model, tier, window_id, window_start, event_time)
SELECT
    concat('l', toString(number)), 'usage', concat('e', toString(number)),
    ['acme', 'globex', 'initech'][number % 3 + 1],
    concat('r', toString(intDiv(number, 5))),
    ['preprocess', 'db.query', 'features', 'llm.answer', 'gpu.rerank'][number % 5 + 1],
    'qa', if(number % 5 = 3, 'gpt-4o', ''), if(number % 5 = 3, 'openai', ''),
    ['cpu_ms', 'api_calls', 'cpu_ms', 'input_tokens', 'gpu_ms'][number % 5 + 1],
    if(number % 5 = 4, 'H100', ''),
    toDecimal128(number % 1000 + 1, 0) AS q,
    toDecimal128('0.000003', 12) AS p,
    toDecimal128(q * p, 12),
    'USD', 'book', 1, 'flat', 0, '2026-11', toDateTime('2026-11-01 00:00:00', 'UTC'),
    toDateTime64('2026-10-15 00:00:00', 6, 'UTC') + toIntervalSecond(intDiv(number * 37, 7) % 4000000)
FROM numbers({offset}, {count})
"""


def timed(label: str, fn: Callable[..., T], *args: Any, **kw: Any) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    dt = time.perf_counter() - t0
    print(f"{label:<44} {dt:8.2f} s")
    return out, dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--block", type=int, default=100_000)
    args = ap.parse_args()
    path = tempfile.mkdtemp(prefix="nm-bench-")
    client = connect(ClickHouseConfig(url=f"chdb://{path}", database="bench"))
    migrate(client, verbose=False)
    n = args.lines

    def insert_all() -> None:
        for off in range(0, n, args.block):
            client.command(GENERATE.format(offset=off, count=min(args.block, n - off)))

    _, dt = timed(f"insert {n:,} lines (3 rollup views attached)", insert_all)
    print(f"{'  -> lines/s with rollups fed on insert':<44} {n / dt:10,.0f}")
    rows, dt = timed("reconcile (all history)", queries.run, client, "reconcile")
    assert all(r[-1] for r in rows.rows), rows.rows
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    report, _ = timed(
        "report collect (acme, November, 4 queries)",
        collect, client, tenant="acme", start=start, end=end,
    )  # fmt: skip
    page, _ = timed("html render", html.render, report)
    print(f"{'  -> page size':<44} {len(page):10,} bytes")
    _, dt = timed("rebuild all rollups", rebuild, client)
    print(f"{'  -> line-rows/s (3 rollups from priced_lines)':<44} {n * 3 / dt:10,.0f}")
    rows, _ = timed("reconcile after rebuild", queries.run, client, "reconcile")
    assert all(r[-1] for r in rows.rows), rows.rows
    print("totals reconcile: priced_lines = cost_hourly = tenant_spend_daily = request_node_costs")


if __name__ == "__main__":
    main()
