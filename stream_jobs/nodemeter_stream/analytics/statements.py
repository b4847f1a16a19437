"""Statements in ClickHouse: drafts read from ``priced_lines``, issued ones recorded in
``statements`` / ``statement_lines`` (migration 070). The assembly is the pure
``pricing.statement``; this module only reads and writes.

- :func:`statement` returns the issued statement of (tenant, window) if there is one,
  rebuilt from exactly the lines recorded on it; otherwise a draft: the window's lines
  plus the lines of earlier, issued windows that no issued statement holds.
- :func:`issue` makes the draft final. It refuses a window the pricing agent has not
  settled (``worker_state`` tenant states, :func:`pricing.statement.window_settled`),
  records the lines (``statement_lines``), then the statement row (the commit), and
  reads back what is stored. Issuing an issued window returns it unchanged.

Issue one tenant's statements from one process at a time: two processes issuing two
windows of a tenant at once could both carry the same late line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from nodemeter_stream.analytics.progress import Progress, no_progress
from nodemeter_stream.analytics.queries import run_sql
from nodemeter_stream.pricing.book import PricingConfig
from nodemeter_stream.pricing.errors import StatementError
from nodemeter_stream.pricing.statement import (
    DRAFT,
    ISSUED,
    STATEMENT_LINE_COLUMNS,
    Statement,
    StatementLine,
    assemble,
    parse_window,
    window_settled,
)
from nodemeter_stream.pricing.windows import BillingWindow

_COLS = ", ".join(STATEMENT_LINE_COLUMNS)
# the lines on issued statements of the tenant (rows of a statement row's content only)
_CLAIMED = (
    "SELECT l.line_id FROM statement_lines AS l INNER JOIN "
    "(SELECT statement_id, content_id FROM statements FINAL WHERE tenant = {tenant:String}) AS s "
    "ON l.statement_id = s.statement_id AND l.content_id = s.content_id "
    "WHERE l.tenant = {tenant:String}"
)
_TOP = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Issued:
    """A row of ``statements``."""

    window_id: str
    window_start: datetime
    window_end: datetime
    statement_id: str
    content_id: str
    issued_at: datetime
    lines: int
    totals: dict[str, Decimal]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _lines(client: Any, sql: str, params: dict[str, Any]) -> list[StatementLine]:
    return [StatementLine.from_row(r) for r in run_sql(client, sql, params).rows]


def tenant_states(client: Any, tenant: str) -> list[dict[str, Any]]:
    """The pricing agent's stored states of ``tenant`` (one per consumer group)."""
    sql = (
        "SELECT value FROM worker_state FINAL "
        "WHERE scope = 'tenant' AND key = {tenant:String} ORDER BY group_id"
    )
    return [json.loads(r[0]) for r in run_sql(client, sql, {"tenant": tenant}).rows]


def issued(client: Any, tenant: str) -> dict[str, Issued]:
    """The tenant's issued statements by window id."""
    sql = (
        "SELECT window_id, window_start, window_end, statement_id, content_id, issued_at, "
        "lines, totals_currency, totals_amount FROM statements FINAL "
        "WHERE tenant = {tenant:String} ORDER BY window_start"
    )
    out = {}
    for r in run_sql(client, sql, {"tenant": tenant}).rows:
        totals = {c: Decimal(a) for c, a in zip(r[7], r[8], strict=True)}
        out[r[0]] = Issued(r[0], _utc(r[1]), _utc(r[2]), r[3], r[4], _utc(r[5]), int(r[6]), totals)
    return out


def latest_window(client: Any, tenant: str) -> str | None:
    """The window of the tenant's latest usage line (by event time), or None."""
    sql = (
        "SELECT window_id FROM priced_lines WHERE tenant = {tenant:String} "
        "AND line_kind = 'usage' ORDER BY event_time DESC LIMIT 1"
    )
    rows = run_sql(client, sql, {"tenant": tenant}).rows
    return str(rows[0][0]) if rows else None


def _known(client: Any, config: PricingConfig, tenant: str) -> None:
    if tenant in config.tenants:
        return
    listed = ", ".join(sorted(config.tenants)) or "none"
    if config.unknown_tenants == "reject":
        raise StatementError(
            f"unknown tenant {tenant!r}: it has no plan in the price books (tenants: {listed}; "
            "unknown_tenants: reject)"
        )
    sql = "SELECT count() FROM (SELECT 1 FROM priced_lines WHERE tenant = {tenant:String} LIMIT 1)"
    if not run_sql(client, sql, {"tenant": tenant}).rows[0][0]:
        raise StatementError(
            f"unknown tenant {tenant!r}: no plan in the price books (tenants: {listed}) and "
            "no priced lines"
        )


def _no_lines(client: Any, tenant: str, win: BillingWindow) -> StatementError:
    sql = (
        "SELECT window_id FROM priced_lines WHERE tenant = {tenant:String} "
        "GROUP BY window_id ORDER BY window_id"
    )
    windows = [r[0] for r in run_sql(client, sql, {"tenant": tenant}).rows]
    shown = ", ".join(windows[-6:]) if windows else "none"
    more = f" (last 6 of {len(windows)})" if len(windows) > 6 else ""
    return StatementError(
        f"unknown window {win.window_id!r} for tenant {tenant!r}: no priced lines in it "
        f"({win.start:%Y-%m-%d %H:%M} to {win.end:%Y-%m-%d %H:%M} UTC); windows with lines: "
        f"{shown}{more}"
    )


def statement(
    client: Any,
    config: PricingConfig,
    tenant: str,
    window_id: str,
    *,
    grace: timedelta,
    progress: Progress = no_progress,
) -> Statement:
    """The issued statement of ``tenant`` for ``window_id``, or its draft."""
    _known(client, config, tenant)
    plan = config.plan_for(tenant)
    win = parse_window(window_id, plan.billing_window, plan.time_zone)
    steps = 3
    progress(
        "statement",
        0,
        steps,
        f"{tenant} {window_id} ({plan.billing_window.value} in {plan.time_zone})",
    )
    done = issued(client, tenant)
    header = done.get(window_id)
    if header is not None:
        return _issued_statement(client, config, tenant, header, progress)
    params = {"tenant": tenant, "window": window_id}
    own = _lines(
        client,
        f"SELECT {_COLS} FROM priced_lines FINAL "
        "WHERE tenant = {tenant:String} AND window_id = {window:String}",
        params,
    )
    progress("statement", 1, steps, f"{len(own):,} lines of the window")
    earlier = [w.window_id for w in done.values() if w.window_start < win.start]
    carried: list[StatementLine] = []
    if earlier:
        carried = _lines(
            client,
            f"SELECT {_COLS} FROM priced_lines FINAL WHERE tenant = {{tenant:String}} "
            f"AND window_id IN {{earlier:Array(String)}} AND line_id NOT IN ({_CLAIMED})",
            params | {"earlier": earlier},
        )
    progress("statement", 2, steps, f"{len(carried):,} later lines of issued windows")
    if not own and not carried:
        raise _no_lines(client, tenant, win)
    settled = window_settled(tenant_states(client, tenant), win, grace=grace)
    progress("statement", 3, steps, "settled" if settled else "not settled")
    return assemble(
        tenant=tenant, window=win, kind=plan.billing_window, time_zone=plan.time_zone,
        lines=[*own, *carried], status=DRAFT, settled=settled,
    )  # fmt: skip


def _issued_statement(
    client: Any, config: PricingConfig, tenant: str, header: Issued, progress: Progress
) -> Statement:
    params = {"tenant": tenant, "sid": header.statement_id, "cid": header.content_id}
    on_it = (
        "SELECT {col} FROM statement_lines WHERE tenant = {{tenant:String}} "
        "AND statement_id = {{sid:String}} AND content_id = {{cid:String}}"
    )
    lines = _lines(
        client,
        f"SELECT {_COLS} FROM priced_lines FINAL WHERE tenant = {{tenant:String}} "
        f"AND window_id IN ({on_it.format(col='window_id')}) "
        f"AND line_id IN ({on_it.format(col='line_id')})",
        params,
    )
    progress(
        "statement", 3, 3, f"issued {header.issued_at:%Y-%m-%d %H:%M:%S} UTC, {len(lines):,} lines"
    )
    plan = config.plan_for(tenant)
    win = BillingWindow(header.window_id, header.window_start, header.window_end)
    st = assemble(
        tenant=tenant, window=win, kind=plan.billing_window, time_zone=plan.time_zone,
        lines=lines, status=ISSUED, issued_at=header.issued_at,
    )  # fmt: skip
    got = {t.currency: t.amount for t in st.totals}
    if (
        len(st.line_ids) != header.lines
        or got != header.totals
        or st.content_id != header.content_id
    ):
        raise StatementError(
            f"issued statement {header.statement_id} ({tenant} {header.window_id}) was recorded "
            f"with {header.lines} lines totalling {_fmt(header.totals)}, but priced_lines now holds "
            f"{len(st.line_ids)} of them totalling {_fmt(got)}: lines were deleted or altered"
        )
    return st


def _ns(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def _fmt(totals: dict[str, Decimal]) -> str:
    return ", ".join(f"{a} {c}" for c, a in sorted(totals.items())) or "0"


def issue(
    client: Any,
    config: PricingConfig,
    tenant: str,
    window_id: str,
    *,
    grace: timedelta,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress = no_progress,
) -> tuple[Statement, bool]:
    """Issue the statement of ``tenant`` for ``window_id``: (the issued statement, whether
    this call issued it). An issued window's statement is returned as it is."""
    st = statement(client, config, tenant, window_id, grace=grace, progress=progress)
    if st.status == ISSUED:
        return st, False
    if not st.settled:
        raise StatementError(_unsettled(client, tenant, st, grace))
    issued_at = clock().astimezone(UTC)
    cid = st.content_id
    rows: Sequence[Sequence[Any]] = [
        (tenant, st.statement_id, cid, lid, wid) for lid, wid in st.line_keys
    ]
    client.insert(
        "statement_lines",
        rows,
        column_names=["tenant", "statement_id", "content_id", "line_id", "window_id"],
    )
    client.insert(
        "statements",
        [(tenant, st.window_id, st.window_start, st.window_end, st.statement_id, cid,
          issued_at, _TOP - _ns(issued_at), len(rows),
          [t.currency for t in st.totals], [t.amount for t in st.totals])],
        column_names=["tenant", "window_id", "window_start", "window_end", "statement_id",
                      "content_id", "issued_at", "version", "lines", "totals_currency",
                      "totals_amount"],
    )  # fmt: skip
    stored = statement(client, config, tenant, window_id, grace=grace)
    return stored, stored.content_id == cid


def _unsettled(client: Any, tenant: str, st: Statement, grace: timedelta) -> str:
    states = tenant_states(client, tenant)
    marks = [s["watermark"] for s in states if s.get("watermark")]
    due = st.window_end + grace
    if not marks:
        where = (
            "the pricing agent has stored no state for it (worker_state): is the worker running?"
        )
    else:
        wm = max(datetime.fromisoformat(m) for m in marks)
        where = (
            f"the pricing agent's watermark for it is {wm.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        )
    return (
        f"window {st.window_id} of tenant {tenant!r} is not settled, so its statement cannot "
        f"be issued: it settles when the tenant's watermark passes the window's end + grace "
        f"({due.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, grace {grace}); {where}"
    )
