"""Statements: what a tenant is billed for one billing window (pure).

A statement is assembled from priced lines (:func:`assemble`): the lines of its own
window, plus the lines of *earlier* windows whose statements were already issued and
that no issued statement holds yet (a late event's delta lines, repricing
adjustments). It is a **draft** until issued; an issued statement is the set of lines
recorded when it was issued, and never changes (docs/pricing.md, "Statements").

Sections, in order:

  usage        usage lines by meter, model, GPU type, tier and unit price
  included     usage lines inside included units (zero-priced)
  credit       credit-grant lines (consumed, and their reconciliation at close)
  settlement   volume true-ups at window close
  adjustment   repricing adjustments of this window
  earlier      any line of an earlier, issued window that arrived after it was issued

plus subtotals per (workflow, node) and per workflow, and one total per currency:
the exact sum of the lines and, rounded once by :func:`money.present`, the amount due.
Line amounts and subtotals are never rounded.

:func:`window_settled` decides from the pricing agent's stored tenant states whether a
window is settled (the precondition of issuing). Rendering (JSON, CSV, text, HTML) is
``analytics.statement_render``; reading and issuing, ``analytics.statements``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from nodemeter_stream.pricing.errors import StatementError
from nodemeter_stream.pricing.money import ZERO, add, present
from nodemeter_stream.pricing.windows import BillingWindow, WindowKind, window_by_id, zone

DRAFT = "draft"
ISSUED = "issued"
SECTIONS: tuple[str, ...] = ("usage", "included", "credit", "settlement", "adjustment", "earlier")
SECTION_TITLES: dict[str, str] = {
    "usage": "Usage",
    "included": "Included units",
    "credit": "Credits",
    "settlement": "Volume settlements",
    "adjustment": "Adjustments",
    "earlier": "Adjustments to earlier windows",
}
NO_NODE = "(no node)"
NO_WORKFLOW = "(no workflow)"

# priced_lines columns a statement reads, in StatementLine field order
STATEMENT_LINE_COLUMNS: tuple[str, ...] = (
    "line_id",
    "line_kind",
    "window_id",
    "workflow",
    "node_id",
    "meter",
    "model",
    "provider",
    "gpu_type",
    "charge_model",
    "tier",
    "price_book",
    "price_book_version",
    "currency",
    "quantity",
    "unit_price",
    "amount",
)


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One priced line as a statement reads it (a row of ``priced_lines``)."""

    line_id: str
    line_kind: str
    window_id: str
    workflow: str
    node_id: str
    meter: str
    model: str
    provider: str
    gpu_type: str
    charge_model: str
    tier: int
    price_book: str
    price_book_version: int
    currency: str
    quantity: int
    unit_price: Decimal
    amount: Decimal

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StatementLine:
        """From a row of ``STATEMENT_LINE_COLUMNS`` (Decimals stay Decimals)."""
        r = list(row)
        r[10], r[12], r[14] = int(r[10]), int(r[12]), int(r[14])
        r[15], r[16] = Decimal(r[15]), Decimal(r[16])
        return cls(*r)


@dataclass(frozen=True, slots=True)
class Item:
    """Lines of one section with the same meter, model, tier and price, summed."""

    section: str
    window_id: str  # the lines' window (an earlier one in section "earlier")
    line_kind: str
    meter: str
    model: str
    provider: str
    gpu_type: str
    charge_model: str
    tier: int
    price_book: str
    price_book_version: int
    currency: str
    unit_price: Decimal
    quantity: int
    amount: Decimal
    lines: int


@dataclass(frozen=True, slots=True)
class Subtotal:
    workflow: str
    node_id: str  # "" in a per-workflow subtotal
    currency: str
    amount: Decimal
    lines: int


@dataclass(frozen=True, slots=True)
class Total:
    currency: str
    amount: Decimal  # exact sum of the lines
    lines: int

    @property
    def due(self) -> Decimal:
        """The total rounded once, to the currency's minor unit (``money.present``)."""
        return present(self.amount, self.currency)


@dataclass(frozen=True, slots=True)
class Statement:
    tenant: str
    window_id: str
    billing_window: str  # day | month
    time_zone: str
    window_start: datetime  # UTC, inclusive
    window_end: datetime  # UTC, exclusive
    statement_id: str
    status: str  # draft | issued
    settled: bool
    issued_at: datetime | None
    items: tuple[Item, ...]
    node_subtotals: tuple[Subtotal, ...]
    workflow_subtotals: tuple[Subtotal, ...]
    totals: tuple[Total, ...]
    line_keys: tuple[tuple[str, str], ...]  # (line_id, the line's window_id), sorted
    earlier_windows: tuple[str, ...]  # windows whose later lines are in section "earlier"

    @property
    def line_ids(self) -> tuple[str, ...]:
        return tuple(k[0] for k in self.line_keys)

    @property
    def content_id(self) -> str:
        return content_id(self.line_ids)

    def total(self, currency: str) -> Total:
        for t in self.totals:
            if t.currency == currency:
                return t
        return Total(currency, ZERO, 0)


def statement_id(tenant: str, window_id: str) -> str:
    """The statement's id: a function of the tenant and the window only."""
    digest = hashlib.sha256(f"statement\x1f{tenant}\x1f{window_id}".encode()).hexdigest()
    return f"st_{digest[:24]}"


def content_id(line_ids: Iterable[str]) -> str:
    """A hash of the set of line ids (order-free)."""
    h = hashlib.sha256()
    for lid in sorted(set(line_ids)):
        h.update(lid.encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def parse_window(window_id: str, kind: WindowKind, time_zone: str) -> BillingWindow:
    """The tenant's window with label ``window_id``, or a StatementError saying why not."""
    shape = "YYYY-MM-DD" if kind is WindowKind.DAY else "YYYY-MM"
    try:
        parts = window_id.split("-")
        if len(parts) != (3 if kind is WindowKind.DAY else 2) or not all(
            p.isdigit() for p in parts
        ):
            raise ValueError(window_id)
        win = window_by_id(window_id, kind, zone(time_zone))
    except ValueError:
        raise StatementError(
            f"unknown window {window_id!r}: the tenant's billing windows are "
            f"{kind.value}s in {time_zone}, named {shape}"
        ) from None
    if win.window_id != window_id:  # e.g. 2026-1 for 2026-01
        raise StatementError(f"unknown window {window_id!r}: write it as {win.window_id!r}")
    return win


def window_settled(
    states: Iterable[Mapping[str, Any]], window: BillingWindow, *, grace: timedelta
) -> bool:
    """Whether the pricing agent has settled ``window``, per its stored tenant states
    (``worker_state`` scope ``tenant``, one per consumer group).

    A state written after the window closed says so (``closed`` and not ``dirty``); the
    agent stores a state only after the lines of its batch, settlement lines included,
    are stored. A window no longer (or never) in the state is settled once the
    watermark passed ``end + grace``: it was closed and dropped after its retention, or
    had no event, so there is nothing to settle. One state saying so is enough."""
    for state in states:
        ws = state.get("windows", {}).get(window.window_id)
        if ws is not None:
            if ws.get("closed") and not ws.get("dirty"):
                return True
            continue
        wm = state.get("watermark")
        if wm and datetime.fromisoformat(wm) >= window.end + grace:
            return True
    return False


def section_of(line: StatementLine, window_id: str) -> str:
    if line.window_id != window_id:
        return "earlier"
    if line.line_kind == "usage":
        return "included" if line.charge_model == "included" else "usage"
    if line.line_kind in ("credit", "settlement", "adjustment"):
        return line.line_kind
    raise StatementError(f"line {line.line_id}: unknown line_kind {line.line_kind!r}")


def assemble(
    *,
    tenant: str,
    window: BillingWindow,
    kind: WindowKind,
    time_zone: str,
    lines: Iterable[StatementLine],
    status: str = DRAFT,
    settled: bool = False,
    issued_at: datetime | None = None,
) -> Statement:
    """The statement of ``lines`` (its window's lines and carried-over earlier ones).

    A line given twice (same ``line_id``) counts once. Sums are exact (money.add)."""
    if status not in (DRAFT, ISSUED):
        raise ValueError(f"status must be {DRAFT!r} or {ISSUED!r}")
    if status == ISSUED and issued_at is None:
        raise ValueError("an issued statement has an issued_at")
    unique: dict[str, StatementLine] = {}
    for ln in lines:
        unique.setdefault(ln.line_id, ln)
    wid = window.window_id
    items: dict[tuple[Any, ...], list[Any]] = {}
    # (workflow, node, currency), (workflow, "", currency), ("", "", currency) -> sums
    nodes: dict[tuple[str, str, str], list[Any]] = {}
    flows: dict[tuple[str, str, str], list[Any]] = {}
    totals: dict[tuple[str, str, str], list[Any]] = {}
    for ln in unique.values():
        section = section_of(ln, wid)
        # a credit grant is the window's, not a model's: its lines are one item per book
        names = ("", "", "") if ln.line_kind == "credit" else (ln.model, ln.provider, ln.gpu_type)
        key = (SECTIONS.index(section), ln.window_id, ln.line_kind, ln.meter, *names,
               ln.tier, ln.charge_model, ln.unit_price, ln.price_book, ln.price_book_version,
               ln.currency)  # fmt: skip
        acc = items.setdefault(key, [0, ZERO, 0])
        acc[0] += ln.quantity
        acc[1] = add(acc[1], ln.amount)
        acc[2] += 1
        for bucket, k in (
            (nodes, (ln.workflow, ln.node_id, ln.currency)),
            (flows, (ln.workflow, "", ln.currency)),
            (totals, ("", "", ln.currency)),
        ):
            a = bucket.setdefault(k, [ZERO, 0])
            a[0] = add(a[0], ln.amount)
            a[1] += 1
    out_items = tuple(
        Item(section=SECTIONS[k[0]], window_id=k[1], line_kind=k[2], meter=k[3], model=k[4],
             provider=k[5], gpu_type=k[6], tier=k[7], charge_model=k[8], unit_price=k[9],
             price_book=k[10], price_book_version=k[11], currency=k[12], quantity=v[0],
             amount=v[1], lines=v[2])
        for k, v in sorted(items.items())
    )  # fmt: skip
    return Statement(
        tenant=tenant,
        window_id=wid,
        billing_window=kind.value,
        time_zone=time_zone,
        window_start=window.start,
        window_end=window.end,
        statement_id=statement_id(tenant, wid),
        status=status,
        settled=settled or status == ISSUED,
        issued_at=issued_at,
        items=out_items,
        node_subtotals=tuple(
            Subtotal(w, n, c, v[0], v[1]) for (w, n, c), v in sorted(nodes.items())
        ),
        workflow_subtotals=tuple(
            Subtotal(w, "", c, v[0], v[1]) for (w, _, c), v in sorted(flows.items())
        ),
        totals=tuple(Total(c, v[0], v[1]) for (_, _, c), v in sorted(totals.items())),
        line_keys=tuple(sorted((lid, ln.window_id) for lid, ln in unique.items())),
        earlier_windows=tuple(sorted({ln.window_id for ln in unique.values()} - {wid})),
    )
