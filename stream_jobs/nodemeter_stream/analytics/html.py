"""The cost report as one self-contained HTML page.

No external assets and no script: inline CSS and two inline SVG drawings, so the file
can be mailed or archived and opens offline.

* the workflow graph: nodes laid out left to right by depth (longest path from a
  root, edges parent -> child from the spans' parents), each node's circle sized
  (area) and coloured by its cost;
* cost over time: stacked bars per time bucket for the most expensive nodes.

Geometry is computed in Decimal and rounded to 0.1 px; money is never a float.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from html import escape

from nodemeter_stream.analytics.report import (
    UNATTRIBUTED,
    Report,
    fmt_amount,
    share,
)

# low -> high cost (light yellow -> dark red); stacked-bar palette
_LOW = (255, 237, 160)
_HIGH = (189, 0, 38)
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1")
OTHER_COLOUR = "#bab0ac"
MAX_SERIES = 6
_PX = Decimal("0.1")


def _px(value: Decimal | int) -> str:
    return str(Decimal(value).quantize(_PX))


def colour(ratio: Decimal) -> str:
    """Colour for a cost ratio in [0, 1]."""
    r = min(max(ratio, Decimal(0)), Decimal(1))
    rgb = [round(lo + (hi - lo) * r) for lo, hi in zip(_LOW, _HIGH, strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Depth of each node: the longest path from a root (cycles are cut after n rounds)."""
    depth = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):
        changed = False
        for parent, child in edges:
            if depth[child] < depth[parent] + 1 <= len(nodes):
                depth[child] = depth[parent] + 1
                changed = True
        if not changed:
            break
    return depth


def graph_svg(report: Report) -> str:
    # money not tied to a node (credits, adjustments) is in the table, not the graph
    costs = {n: c for n, c in report.node_totals().items() if n != UNATTRIBUTED}
    edges = sorted({(e.parent, e.node) for e in report.edges if e.parent and e.node})
    names = sorted(set(costs) | {n for e in edges for n in e})
    if not names:
        return '<p class="empty">no nodes in this period</p>'
    depth = layers(names, edges)
    columns: dict[int, list[str]] = defaultdict(list)
    for n in names:
        columns[depth[n]].append(n)
    col_w, row_h, pad, r_min, r_max = 220, 130, 90, 12, 48
    width = pad * 2 + col_w * max(len(columns) - 1, 0)
    height = pad * 2 + row_h * max(max(len(c) for c in columns.values()) - 1, 0)
    top = max(costs.values(), default=Decimal(0))
    pos: dict[str, tuple[Decimal, Decimal]] = {}
    for d, col in columns.items():
        offset = Decimal(height - 2 * pad - row_h * (len(col) - 1)) / 2
        for i, n in enumerate(col):
            pos[n] = (Decimal(pad + col_w * d), Decimal(pad) + offset + row_h * i)
    radius = {}
    for n in names:
        ratio = max(costs.get(n, Decimal(0)), Decimal(0)) / top if top > 0 else Decimal(0)
        radius[n] = r_min + (r_max - r_min) * ratio.sqrt()  # area grows with cost
    out = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="workflow graph, nodes sized and coloured by cost">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#888"/></marker></defs>',
    ]
    for parent, child in edges:
        (x1, y1), (x2, y2) = pos[parent], pos[child]
        dx, dy = x2 - x1, y2 - y1
        length = (dx * dx + dy * dy).sqrt() or Decimal(1)
        sx, sy = x1 + dx * radius[parent] / length, y1 + dy * radius[parent] / length
        ex, ey = x2 - dx * (radius[child] + 3) / length, y2 - dy * (radius[child] + 3) / length
        out.append(
            f'<line class="edge" x1="{_px(sx)}" y1="{_px(sy)}" x2="{_px(ex)}" y2="{_px(ey)}" '
            f'stroke="#888" stroke-width="1.5" marker-end="url(#arrow)">'
            f"<title>{escape(parent)} → {escape(child)}</title></line>"
        )
    total = report.totals.get(report.currency, Decimal(0))
    for n in names:
        x, y = pos[n]
        cost = costs.get(n, Decimal(0))
        # sqrt, like the area: small nodes stay distinguishable from each other
        fill = colour((max(cost, Decimal(0)) / top).sqrt() if top > 0 else Decimal(0))
        label = escape(n)
        out.append(
            f'<g class="node" data-node="{label}" data-cost="{cost}">'
            f'<circle cx="{_px(x)}" cy="{_px(y)}" r="{_px(radius[n])}" fill="{fill}" '
            f'stroke="#444" stroke-width="1"><title>{label}: {fmt_amount(cost)} '
            f"{escape(report.currency)} ({share(cost, total)})</title></circle>"
            f'<text x="{_px(x)}" y="{_px(y + radius[n] + 16)}" text-anchor="middle" '
            f'class="label">{label}</text>'
            f'<text x="{_px(x)}" y="{_px(y + radius[n] + 31)}" text-anchor="middle" '
            f'class="cost">{fmt_amount(cost)}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


def buckets(report: Report) -> list[datetime]:
    step = timedelta(hours=report.bucket_hours)
    # align to the query's buckets (toStartOfInterval: whole hours / UTC days)
    t = report.start.replace(minute=0, second=0, microsecond=0)
    if report.bucket_hours == 24:
        t = t.replace(hour=0)
    out = []
    while t < report.end:
        out.append(t)
        t += step
    return out


def chart_svg(report: Report) -> str:
    cur = report.currency
    # stacked bars show positive cost; credits (negative) are in the table
    costs = {n: c for n, c in report.node_totals(cur).items() if c > 0}
    ranked = sorted(costs, key=lambda n: (-costs[n], n))
    shown = ranked[:MAX_SERIES]
    per: dict[datetime, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for p in report.series:
        if p.currency != cur:
            continue
        name = p.node_id or UNATTRIBUTED
        if name not in costs:
            continue
        per[p.bucket][name if name in shown else "other"] += p.amount
    times = buckets(report)
    if not times or not per:
        return '<p class="empty">no cost in this period</p>'
    series = shown + (["other"] if len(ranked) > len(shown) else [])
    colours = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(shown)} | {"other": OTHER_COLOUR}
    width, height, left, bottom, top_pad = 1100, 320, 90, 40, 20
    plot_h = height - bottom - top_pad
    bar_w = Decimal(width - left - 20) / len(times)
    peak = max((sum(v.values(), Decimal(0)) for v in per.values()), default=Decimal(0))
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="cost over time">'
    ]
    for i in range(5):  # y axis: 0, 25, 50, 75, 100 % of the peak
        value = peak * i / 4
        y = Decimal(height - bottom) - Decimal(plot_h) * i / 4
        out.append(
            f'<line x1="{left}" x2="{width - 20}" y1="{_px(y)}" y2="{_px(y)}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{_px(y + 4)}" text-anchor="end" class="axis">'
            f"{fmt_amount(value)}</text>"
        )
    label_every = max(1, len(times) // 12)
    for i, t in enumerate(times):
        x = Decimal(left) + bar_w * i
        y = Decimal(height - bottom)
        for s in series:
            amount = per.get(t, {}).get(s, Decimal(0))
            if amount <= 0 or peak <= 0:
                continue
            h = Decimal(plot_h) * amount / peak
            y -= h
            out.append(
                f'<rect class="bar" x="{_px(x + 1)}" y="{_px(y)}" width="{_px(max(bar_w - 2, Decimal(1)))}" '
                f'height="{_px(h)}" fill="{colours[s]}"><title>{t:%Y-%m-%d %H:%M} {escape(s)}: '
                f"{fmt_amount(amount)} {escape(cur)}</title></rect>"
            )
        if i % label_every == 0:
            fmt = "%m-%d %H:%M" if report.bucket_hours < 24 else "%Y-%m-%d"
            out.append(
                f'<text x="{_px(x + bar_w / 2)}" y="{height - bottom + 16}" text-anchor="middle" '
                f'class="axis">{t.strftime(fmt)}</text>'
            )
    out.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{colours[s]}"></i>{escape(s)}</span>'
        for s in series
    )
    return "\n".join(out) + f'\n<div class="legend">{legend}</div>'


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px 32px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#666}.total{font-size:18px;margin:10px 0}
table{border-collapse:collapse;margin-top:6px}td,th{padding:4px 10px;border-bottom:1px solid #e4e4e4}
th{text-align:left;background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
svg text.label{font-size:13px;font-weight:600}svg text.cost{font-size:12px;fill:#555}
svg text.axis{font-size:11px;fill:#666}.legend .key{margin-right:14px;white-space:nowrap}
.legend i{display:inline-block;width:11px;height:11px;margin-right:5px;vertical-align:-1px}
.empty{color:#888}
"""


def render(report: Report) -> str:
    cur = report.currency
    totals = ", ".join(f"{fmt_amount(v)} {escape(c)}" for c, v in sorted(report.totals.items()))
    node_rows = "\n".join(
        f"<tr><td>{escape(n.node_id or UNATTRIBUTED)}</td><td>{escape(n.workflow)}</td>"
        f"<td>{escape(', '.join(n.models))}</td><td class=n>{n.lines:,}</td>"
        f"<td class=n>{fmt_amount(n.amount)} {escape(n.currency)}</td>"
        f"<td class=n>{share(n.amount, report.totals[n.currency])}</td></tr>"
        for n in report.nodes
    )
    req_rows = "\n".join(
        f"<tr><td>{escape(r.request_id)}</td><td>{escape(r.workflow)}</td>"
        f"<td class=n>{fmt_amount(r.amount)} {escape(r.currency)}</td><td>"
        + escape(", ".join(f"{n} {fmt_amount(a)}" for n, a in r.nodes))
        + "</td></tr>"
        for r in report.top_requests
    )
    title = f"nodemeter: cost per node for {report.tenant}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<div class="meta">{report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC (end exclusive);
generated {report.generated_at:%Y-%m-%d %H:%M:%S} UTC</div>
<div class="total">Total: <b>{totals or "0"}</b></div>
<h2>Workflow graph</h2>
<div class="meta">Circle area and colour grow with the node's cost ({escape(cur)}).</div>
{graph_svg(report)}
<h2>Cost over time ({report.bucket_hours} h buckets, {escape(cur)})</h2>
{chart_svg(report)}
<h2>Cost per node</h2>
<table><tr><th>node</th><th>workflow</th><th>models</th><th>lines</th><th>cost</th><th>share</th></tr>
{node_rows}
</table>
<h2>Most expensive requests</h2>
<table><tr><th>request</th><th>workflow</th><th>cost</th><th>by node</th></tr>
{req_rows}
</table>
</body></html>
"""
