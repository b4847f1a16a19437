"""The per-node cost report: its data (from the query library) and a terminal table.

:func:`collect` runs the library queries for one tenant and period and returns a
:class:`Report` (plain values, no client); :func:`render_table` and ``html.render``
are pure functions of it. Amounts stay Decimal end to end; the table rounds only
for display (``exact=True`` prints all 12 decimal places).
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from nodemeter_stream.analytics import queries
from nodemeter_stream.analytics.progress import Progress, no_progress

UNATTRIBUTED = "(no node)"


@dataclass(frozen=True)
class NodeCost:
    workflow: str
    node_id: str
    currency: str
    models: tuple[str, ...]
    amount: Decimal
    lines: int


@dataclass(frozen=True)
class Edge:
    workflow: str
    parent: str
    node: str
    requests: int


@dataclass(frozen=True)
class Point:
    bucket: datetime
    node_id: str
    currency: str
    amount: Decimal


@dataclass(frozen=True)
class RequestCost:
    request_id: str
    workflow: str
    currency: str
    amount: Decimal
    first_event: datetime
    nodes: tuple[tuple[str, Decimal], ...]


@dataclass(frozen=True)
class Report:
    tenant: str
    start: datetime
    end: datetime
    generated_at: datetime
    bucket_hours: int
    nodes: tuple[NodeCost, ...]
    edges: tuple[Edge, ...] = ()
    series: tuple[Point, ...] = ()
    top_requests: tuple[RequestCost, ...] = ()
    totals: dict[str, Decimal] = field(default_factory=dict)

    @property
    def currency(self) -> str:
        """The currency with the largest total (graph and chart are drawn in it)."""
        if not self.totals:
            return "USD"
        return max(self.totals, key=lambda c: (self.totals[c], c))

    def node_totals(self, currency: str | None = None) -> dict[str, Decimal]:
        """Cost per node id across workflows, in one currency."""
        cur = currency or self.currency
        out: dict[str, Decimal] = defaultdict(Decimal)
        for n in self.nodes:
            if n.currency == cur:
                out[n.node_id or UNATTRIBUTED] += n.amount
        return dict(out)


def bucket_hours_for(start: datetime, end: datetime) -> int:
    """Chart resolution: hourly up to two days, daily beyond."""
    return 1 if end - start <= timedelta(days=2) else 24


def _utc(value: Any) -> datetime:
    # clickhouse-connect returns UTC columns as naive datetimes
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value  # type: ignore[no-any-return]


def collect(
    client: Any,
    *,
    tenant: str,
    start: datetime,
    end: datetime,
    top: int = 5,
    graph_requests: int = 500,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress = no_progress,
) -> Report:
    """Run the report's queries for ``tenant`` in [start, end)."""
    period = {"tenant": tenant, "start": start, "end": end}
    steps = 4
    progress("report", 0, steps, f"{tenant} {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC")
    nodes = tuple(
        NodeCost(
            r["workflow"],
            r["node_id"],
            r["currency"],
            tuple(r["models"]),
            Decimal(r["amount"]),
            int(r["lines"]),
        )
        for r in queries.run(client, "node_costs", **period).dicts()
    )
    progress("report", 1, steps, "node costs")
    from nodemeter_stream.analytics.graph import SpanRow, execution_edges

    edges = execution_edges(
        SpanRow(
            r["request_id"],
            r["workflow"],
            r["span_id"],
            r["parent_span_id"],
            r["branch_path"],
            r["node_id"],
            _utc(r["ended_at"]),
        )
        for r in queries.run(client, "request_spans", limit=graph_requests, **period).dicts()
    )
    progress("report", 2, steps, "workflow graph")
    hours = bucket_hours_for(start, end)
    series = tuple(
        Point(_utc(r["bucket"]), r["node_id"], r["currency"], Decimal(r["amount"]))
        for r in queries.run(client, "cost_over_time", bucket_hours=hours, **period).dicts()
    )
    progress("report", 3, steps, "cost over time")
    top_requests = tuple(
        RequestCost(
            r["request_id"],
            r["workflow"],
            r["currency"],
            Decimal(r["amount"]),
            _utc(r["first_event"]),
            tuple((str(n), Decimal(a)) for n, a in r["nodes"]),
        )
        for r in queries.run(client, "top_requests", limit=top, **period).dicts()
    )
    progress("report", 4, steps, "top requests")
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for n in nodes:
        totals[n.currency] += n.amount
    return Report(
        tenant=tenant,
        start=start,
        end=end,
        generated_at=clock(),
        bucket_hours=hours,
        nodes=nodes,
        edges=edges,
        series=series,
        top_requests=top_requests,
        totals=dict(totals),
    )


# --- terminal table (pure) ------------------------------------------------------------


def fmt_amount(amount: Decimal, *, exact: bool = False) -> str:
    if exact:
        return f"{amount:,.12f}"
    return f"{amount.quantize(Decimal('0.000001')):,}"


def share(amount: Decimal, total: Decimal) -> str:
    if not total:
        return "-"
    pct = (amount * 100 / total).quantize(Decimal("0.1"))
    if not pct and amount:
        return "<0.1%" if amount > 0 else ">-0.1%"
    return f"{pct}%"


_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    # Cc: C0/C1 controls (ESC starts terminal escape sequences); Cf: format characters
    # (bidi overrides reorder what is shown); Zl/Zp: line and paragraph separators
    if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch


def terminal_safe(text: str) -> str:
    """``text`` with control and format characters (and ``\\``) escaped, so a value
    read from the store can neither start a line, move the cursor, recolour nor
    reorder what the terminal shows (a forged TOTAL row, hidden rows). The escapes
    are TSV's (``\\n``, ``\\t``, ``\\\\``) plus ``\\xNN`` / ``\\uNNNN``."""
    if text.isprintable() and "\\" not in text:
        return text  # the common case, without a per-character walk
    return "".join(_escape_char(ch) for ch in text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A plain-text table; columns in ``right`` are right-aligned. Every cell and
    header is passed through :func:`terminal_safe`."""
    headers = [terminal_safe(h) for h in headers]
    rows = [[terminal_safe(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def render_table(report: Report, *, exact: bool = False) -> str:
    head = (
        f"Cost per node for tenant {terminal_safe(report.tenant)}, "
        f"{report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC (end exclusive)"
    )
    if not report.nodes:
        return f"{head}\n\nno priced usage in this period\n"
    rows = [
        [
            n.node_id or UNATTRIBUTED,
            n.workflow,
            ", ".join(n.models) or "-",
            f"{n.lines:,}",
            f"{fmt_amount(n.amount, exact=exact)} {n.currency}",
            share(n.amount, report.totals[n.currency]),
        ]
        for n in report.nodes
    ]
    for cur, total in sorted(report.totals.items()):
        lines = sum(n.lines for n in report.nodes if n.currency == cur)
        rows.append(
            ["TOTAL", "", "", f"{lines:,}", f"{fmt_amount(total, exact=exact)} {cur}", "100.0%"]
        )
    out = [
        head,
        "",
        table(["node", "workflow", "models", "lines", "cost", "share"], rows, (3, 4, 5)),
    ]
    if report.top_requests:
        out += ["", f"Most expensive requests (top {len(report.top_requests)}):"]
        for r in report.top_requests:
            parts = ", ".join(
                f"{terminal_safe(n)} {fmt_amount(a, exact=exact)}" for n, a in r.nodes[:4]
            )
            more = f", +{len(r.nodes) - 4} more" if len(r.nodes) > 4 else ""
            amount = f"{fmt_amount(r.amount, exact=exact)} {terminal_safe(r.currency)}"
            out.append(f"  {terminal_safe(r.request_id)}  {amount}  ({parts}{more})")
    return "\n".join(out) + "\n"
