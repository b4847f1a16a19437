"""A statement as JSON, CSV, terminal text and one printable HTML page (pure).

Money is exact everywhere: decimal strings in JSON and CSV, never floats; line
amounts and subtotals unrounded. The total is shown twice: exact, and rounded once to
the currency's minor unit (``Total.due``, ``money.present``), the amount due. The HTML
page has no external assets and no script (inline CSS, like ``analytics.html``), so it
can be mailed, archived and printed.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from typing import Any

from nodemeter_stream.analytics.report import table, terminal_safe
from nodemeter_stream.pricing.money import ZERO, add, present, to_str
from nodemeter_stream.pricing.statement import (
    ISSUED,
    NO_NODE,
    NO_WORKFLOW,
    SECTION_TITLES,
    SECTIONS,
    Item,
    Statement,
    Subtotal,
)

FORMATS: tuple[str, ...] = ("text", "json", "csv", "html")


def amount_text(amount: Decimal, currency: str = "USD") -> str:
    """An unrounded amount, exact, without trailing zeros past the currency's minor unit
    (``12.5`` -> ``12.50``, ``0.000002500000`` -> ``0.0000025``)."""
    exponent = present(Decimal(0), currency).as_tuple().exponent
    places = -exponent if isinstance(exponent, int) else 2
    text = to_str(amount)
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(places, "0")
    return f"{whole}.{frac}" if frac else whole


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t is not None else None


def render(st: Statement, fmt: str) -> str:
    """``st`` in format ``fmt`` (one of FORMATS)."""
    if fmt == "json":
        return to_json(st)
    if fmt == "csv":
        return to_csv(st)
    if fmt == "html":
        return to_html(st)
    if fmt == "text":
        return render_text(st)
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


# --- JSON -------------------------------------------------------------------------


def to_dict(st: Statement) -> dict[str, Any]:
    """JSON-safe form: money as exact decimal strings, times ISO 8601 UTC."""
    return {
        "statement_id": st.statement_id,
        "status": st.status,
        "tenant": st.tenant,
        "window": {
            "id": st.window_id,
            "kind": st.billing_window,
            "time_zone": st.time_zone,
            "start": _iso(st.window_start),
            "end": _iso(st.window_end),
            "settled": st.settled,
        },
        "issued_at": _iso(st.issued_at),
        "content_id": st.content_id,
        "lines": len(st.line_ids),
        "earlier_windows": list(st.earlier_windows),
        "items": [_item(i) for i in st.items],
        "subtotals": {
            "by_node": [_sub(s, node=True) for s in st.node_subtotals],
            "by_workflow": [_sub(s, node=False) for s in st.workflow_subtotals],
        },
        "totals": [
            {
                "currency": t.currency,
                "amount": to_str(t.amount),
                "due": to_str(t.due),
                "lines": t.lines,
            }
            for t in st.totals
        ],
    }


def _item(i: Item) -> dict[str, Any]:
    return {
        "section": i.section,
        "window_id": i.window_id,
        "line_kind": i.line_kind,
        "meter": i.meter,
        "model": i.model,
        "provider": i.provider,
        "gpu_type": i.gpu_type,
        "charge_model": i.charge_model,
        "tier": i.tier,
        "price_book": i.price_book,
        "price_book_version": i.price_book_version,
        "currency": i.currency,
        "quantity": str(i.quantity),
        "unit_price": to_str(i.unit_price),
        "amount": to_str(i.amount),
        "lines": i.lines,
    }


def _sub(s: Subtotal, *, node: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"workflow": s.workflow}
    if node:
        d["node_id"] = s.node_id
    return d | {"currency": s.currency, "amount": to_str(s.amount), "lines": s.lines}


def to_json(st: Statement) -> str:
    return json.dumps(to_dict(st), indent=2) + "\n"


# --- CSV --------------------------------------------------------------------------

CSV_COLUMNS: tuple[str, ...] = (
    "statement_id", "tenant", "statement_window", "status", "record", "section", "window_id",
    "line_kind", "workflow", "node_id", "meter", "model", "provider", "gpu_type",
    "charge_model", "tier", "price_book", "price_book_version", "currency", "quantity",
    "unit_price", "amount", "due", "lines",
)  # fmt: skip


def to_csv(st: Statement) -> str:
    """One row per item, subtotal and total (column ``record``: item, node_subtotal,
    workflow_subtotal, total); money exact; ``due`` (the rounded total) on total rows."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    head = {"statement_id": st.statement_id, "tenant": st.tenant,
            "statement_window": st.window_id, "status": st.status}  # fmt: skip
    for i in st.items:
        row = _item(i) | {"record": "item"}
        w.writerow(head | row)
    for record, subs in (("node_subtotal", st.node_subtotals),
                         ("workflow_subtotal", st.workflow_subtotals)):  # fmt: skip
        for s in subs:
            w.writerow(head | {"record": record} | _sub(s, node=record == "node_subtotal"))
    for t in st.totals:
        w.writerow(head | {"record": "total", "currency": t.currency, "amount": to_str(t.amount),
                           "due": to_str(t.due), "lines": t.lines})  # fmt: skip
    return buf.getvalue()


# --- text -------------------------------------------------------------------------


def status_text(st: Statement) -> str:
    if st.status == ISSUED and st.issued_at is not None:
        return f"ISSUED {st.issued_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return "DRAFT (window settled, not issued)" if st.settled else "DRAFT (window not settled)"


def headline(st: Statement) -> str:
    return terminal_safe(
        f"Statement {st.statement_id} for tenant {st.tenant}, window {st.window_id} "
        f"({st.billing_window} in {st.time_zone}: {st.window_start:%Y-%m-%d %H:%M} to "
        f"{st.window_end:%Y-%m-%d %H:%M} UTC), {status_text(st)}"
    )


def section_sums(st: Statement) -> list[tuple[str, str, Decimal, int]]:
    """(section, currency, exact amount, lines), in section order."""
    out: dict[tuple[str, str], tuple[Decimal, int]] = {}
    for i in st.items:
        amount, n = out.get((i.section, i.currency), (ZERO, 0))
        out[(i.section, i.currency)] = (add(amount, i.amount), n + i.lines)
    keys = sorted(out, key=lambda k: (SECTIONS.index(k[0]), k[1]))
    return [(s, c, *out[(s, c)]) for s, c in keys]


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount_text(amount, currency)} {currency}"


def render_text(st: Statement, *, items: bool = True) -> str:
    """A terminal summary: every line item (or, ``items=False``, one line per section),
    the subtotals per workflow and node, and the total per currency."""
    out = [headline(st), ""]
    if not st.items:
        out += ["no priced lines", ""]
    elif items:
        rows = [
            [i.section, i.window_id if i.section == "earlier" else "", i.meter, i.model or "-",
             i.gpu_type or "-", str(i.tier) if i.tier else "-",
             f"{i.quantity:,}" if i.quantity else "",
             amount_text(i.unit_price, i.currency) if i.line_kind == "usage" else "",
             _money(i.amount, i.currency)]
            for i in st.items
        ]  # fmt: skip
        headers = ["section", "window", "meter", "model", "gpu", "tier", "quantity",
                   "unit price", "amount"]  # fmt: skip
        out += [table(headers, rows, (5, 6, 7, 8)), ""]
    else:
        rows = [[SECTION_TITLES[s], f"{n:,}", _money(a, c)] for s, c, a, n in section_sums(st)]
        out += [table(["section", "lines", "amount"], rows, (1, 2)), ""]
    if st.node_subtotals:
        rows = [
            [s.workflow or NO_WORKFLOW, s.node_id or NO_NODE, f"{s.lines:,}",
             _money(s.amount, s.currency)]
            for s in st.node_subtotals
        ]  # fmt: skip
        rows += [
            [f"{s.workflow or NO_WORKFLOW} (all nodes)", "", f"{s.lines:,}",
             _money(s.amount, s.currency)]
            for s in st.workflow_subtotals
        ]  # fmt: skip
        out += [table(["workflow", "node", "lines", "subtotal"], rows, (2, 3)), ""]
    for t in st.totals:
        out.append(
            f"TOTAL {to_str(t.due)} {t.currency}  (exact {amount_text(t.amount, t.currency)}, "
            f"{t.lines:,} lines; rounded once, half-even)"
        )
    if not st.totals:
        out.append("TOTAL 0")
    return "\n".join(out) + "\n"


# --- HTML -------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px 32px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 6px}
.meta{color:#666}.status{display:inline-block;padding:1px 8px;border-radius:3px;
font-weight:600;font-size:12px;background:#fde7c2;color:#7a4b00}.status.issued{background:#d7f0d9;color:#1d5e25}
table{border-collapse:collapse;margin-top:6px;width:100%}td,th{padding:4px 10px;border-bottom:1px solid #e4e4e4}
th{text-align:left;background:#f6f6f6}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.sum td{font-weight:600;border-top:1px solid #999}.total{font-size:20px;margin:18px 0 4px}
.empty{color:#888}
@media print{body{margin:0;font-size:11px}h2{break-after:avoid}tr{break-inside:avoid}
.status{border:1px solid #444}th{background:none;border-bottom:1px solid #444}}
"""


def _section_table(st: Statement, section: str) -> str:
    items = [i for i in st.items if i.section == section]
    if not items:
        return ""
    earlier = section == "earlier"
    head = ("<tr>" + ("<th>window</th><th>kind</th>" if earlier else "")
            + "<th>meter</th><th>model</th><th>GPU</th><th>provider</th><th>charge</th>"
            "<th class=n>tier</th><th class=n>quantity</th><th class=n>unit price</th>"
            "<th class=n>lines</th><th class=n>amount</th></tr>")  # fmt: skip
    rows = []
    for i in items:
        price = amount_text(i.unit_price, i.currency) if i.line_kind == "usage" else ""
        cells = ([escape(i.window_id), escape(i.line_kind)] if earlier else []) + [
            escape(i.meter), escape(i.model), escape(i.gpu_type), escape(i.provider),
            escape(i.charge_model),
        ]  # fmt: skip
        rows.append(
            "<tr>" + "".join(f"<td>{c}</td>" for c in cells)
            + f"<td class=n>{i.tier or ''}</td><td class=n>{i.quantity or ''}</td>"
            f"<td class=n>{price}</td><td class=n>{i.lines:,}</td>"
            f"<td class=n>{escape(_money(i.amount, i.currency))}</td></tr>"
        )  # fmt: skip
    span = 11 if earlier else 9
    sums = [(c, a) for s, c, a, _ in section_sums(st) if s == section]
    rows += [
        f'<tr class="sum"><td colspan={span}>{escape(SECTION_TITLES[section])}</td>'
        f"<td class=n>{escape(_money(a, c))}</td></tr>"
        for c, a in sums
    ]
    return (
        f'<h2 id="{section}">{escape(SECTION_TITLES[section])}</h2>\n'
        f"<table>{head}\n" + "\n".join(rows) + "\n</table>"
    )


def to_html(st: Statement) -> str:
    title = f"Statement {st.window_id} for {st.tenant}"
    status_class = "status issued" if st.status == ISSUED else "status"
    sections = "\n".join(t for t in (_section_table(st, s) for s in SECTIONS) if t)
    node_rows = "\n".join(
        f"<tr><td>{escape(s.workflow or NO_WORKFLOW)}</td><td>{escape(s.node_id or NO_NODE)}</td>"
        f"<td class=n>{s.lines:,}</td><td class=n>{escape(_money(s.amount, s.currency))}</td></tr>"
        for s in st.node_subtotals
    )
    flow_rows = "\n".join(
        f"<tr><td>{escape(s.workflow or NO_WORKFLOW)}</td><td class=n>{s.lines:,}</td>"
        f"<td class=n>{escape(_money(s.amount, s.currency))}</td></tr>"
        for s in st.workflow_subtotals
    )
    totals = (
        "\n".join(
            f'<div class="total" data-currency="{escape(t.currency)}" data-due="{t.due}" '
            f'data-amount="{to_str(t.amount)}">Total due: <b>{t.due} {escape(t.currency)}</b></div>'
            f'<div class="meta">exact {escape(_money(t.amount, t.currency))} over {t.lines:,} '
            "lines; rounded once, to the currency's minor unit (half-even)</div>"
            for t in st.totals
        )
        or '<div class="total">Total due: <b>0</b></div>'
    )
    issued = (
        f"issued {st.issued_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        if st.issued_at is not None
        else "not issued: a preview, it changes until the window is settled and issued"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{escape(title)} <span class="{status_class}">{escape(st.status.upper())}</span></h1>
<div class="meta">statement {escape(st.statement_id)}; {escape(issued)}</div>
<div class="meta">billing window {escape(st.window_id)} ({escape(st.billing_window)} in
{escape(st.time_zone)}): {st.window_start:%Y-%m-%d %H:%M} to {st.window_end:%Y-%m-%d %H:%M} UTC
(end exclusive){"; settled" if st.settled else "; not settled yet"}</div>
{totals}
{sections or '<p class="empty">no priced lines</p>'}
<h2>Subtotals by node</h2>
<table><tr><th>workflow</th><th>node</th><th class=n>lines</th><th class=n>subtotal</th></tr>
{node_rows}
</table>
<h2>Subtotals by workflow</h2>
<table><tr><th>workflow</th><th class=n>lines</th><th class=n>subtotal</th></tr>
{flow_rows}
</table>
<div class="meta">content {escape(st.content_id)}, {len(st.line_ids):,} priced lines</div>
</body></html>
"""
