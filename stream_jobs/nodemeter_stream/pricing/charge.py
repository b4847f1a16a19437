"""Charge models as pure arithmetic on window positions.

Units of one usage key (tenant, meter, model, provider, GPU type) in one billing
window are numbered 0, 1, 2, ... in arrival order; an event of ``qty`` units at
cumulative ``position`` occupies ``[position, position + qty)``. Tier bounds and
included units are positions in that numbering (they count every unit of the
window, free or paid).

- included units: positions below ``included`` cost nothing; consumed first.
- flat: every paid unit at one price.
- graduated: each unit at the price of the tier its position falls in; an event
  crossing a bound is split into one piece per tier. The window total therefore
  depends only on the window's total quantity, never on event order or batching.
- volume: all paid units at the price of the tier the window *total* reaches.
  While the window is open the total is not known: each event is priced
  provisionally at the tier reached by the cumulative total *after* it; the window
  close emits a settlement so the window total is exactly ``paid units x final price``.
- package: ``package_price`` per started block of ``package_size`` paid units; an
  event pays for the blocks it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from nodemeter_stream.pricing.book import ChargeModel, Rate, Tier
from nodemeter_stream.pricing.money import ZERO, mul


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of an event's quantity priced one way. ``tier`` is 1-based; 0 = not tiered."""

    charge_model: str  # a ChargeModel value, or "included"
    tier: int
    quantity: int
    unit_price: Decimal
    amount: Decimal


_GRADUATED = ChargeModel.GRADUATED.value


def split_included(included: int, position: int, qty: int) -> tuple[int, int]:
    """(free, paid) units of an event at ``position`` given ``included`` free units."""
    free = max(0, min(position + qty, included) - position)
    return free, qty - free


def tier_of(tiers: tuple[Tier, ...], position: int) -> int:
    """0-based index of the tier holding unit ``position``."""
    for i, t in enumerate(tiers):
        if t.up_to is None or position < t.up_to:
            return i
    return len(tiers) - 1


def graduated(tiers: tuple[Tier, ...], position: int, qty: int) -> list[Piece]:
    pieces: list[Piece] = []
    lo, end = position, position + qty
    while lo < end:
        i = tier_of(tiers, lo)
        bound = tiers[i].up_to
        hi = end if bound is None else min(end, bound)
        n = hi - lo
        price = tiers[i].unit_price
        pieces.append(Piece(_GRADUATED, i + 1, n, price, mul(price, n)))
        lo = hi
    return pieces


def volume_tier(tiers: tuple[Tier, ...], total: int) -> int:
    """0-based tier reached by a window total of ``total`` units (the tier of its last unit)."""
    return tier_of(tiers, max(total - 1, 0))


def package_blocks(size: int, paid_before: int, paid_after: int) -> int:
    """Blocks started by paid units ``[paid_before, paid_after)``: ceil(after/size) - ceil(before/size)."""
    return -(-paid_after // size) - -(-paid_before // size)


def price_pieces(rate: Rate, position: int, qty: int) -> list[Piece]:
    """Pieces for ``qty`` units of ``rate`` at window ``position`` (provisional for volume)."""
    free, paid = split_included(rate.included_units, position, qty)
    pieces: list[Piece] = []
    if free:
        pieces.append(Piece("included", 0, free, ZERO, ZERO))
    if not paid:
        return pieces
    start = position + free
    charge = rate.charge
    if charge is ChargeModel.FLAT:
        pieces.append(Piece(charge.value, 0, paid, rate.unit_price, mul(rate.unit_price, paid)))
    elif charge is ChargeModel.GRADUATED:
        pieces.extend(graduated(rate.tiers, start, paid))
    elif charge is ChargeModel.VOLUME:
        i = volume_tier(rate.tiers, start + paid)
        price = rate.tiers[i].unit_price
        pieces.append(Piece(charge.value, i + 1, paid, price, mul(price, paid)))
    else:
        before = max(position - rate.included_units, 0)
        blocks = package_blocks(rate.package_size, before, before + paid)
        price = rate.package_price
        pieces.append(Piece(charge.value, 0, paid, price, mul(price, blocks)))
    return pieces


def volume_exact(rate: Rate, window_total: int, qty_at_rate: int) -> tuple[int, Decimal, Decimal]:
    """(tier 1-based, unit price, exact amount) for ``qty_at_rate`` paid units of a window
    whose total (all versions, free units included) is ``window_total``."""
    i = volume_tier(rate.tiers, window_total)
    price = rate.tiers[i].unit_price
    return i + 1, price, mul(price, qty_at_rate)
