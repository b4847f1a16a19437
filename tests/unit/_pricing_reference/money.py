"""Exact money. Decimal only; no floats ever reach a price or an amount.

Every arithmetic step of pricing runs under :data:`EXACT`, a context whose
``Inexact`` trap raises instead of rounding silently: a line amount is an integer
quantity times a price with at most 12 decimal places, so it is always exact and
fits ClickHouse ``Decimal(38, 12)``.

Rounding happens once, in :func:`present`, when an invoice total is shown in the
currency's minor unit (half-even). Lines, rollups and stored totals are never
rounded.
"""

from __future__ import annotations

from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Any

SCALE = 12  # decimal places stored (ClickHouse Decimal(38, 12))
MAX_DIGITS = 38
# 76 digits of precision: products of two Decimal(38, x) values never need rounding.
EXACT = Context(prec=76, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
ZERO = Decimal(0)
_QUANTUM = Decimal(1).scaleb(-SCALE)
MINOR_UNITS: dict[str, int] = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "CHF": 2}


def exact() -> Any:
    """``with exact():`` runs a block under the trapping context."""
    return localcontext(EXACT)


def parse_price(value: object, *, what: str = "price") -> Decimal:
    """A non-negative decimal with at most 12 places, from a string or int (never a float).

    Floats are refused: YAML ``0.1`` would already be a binary approximation.
    """
    if isinstance(value, bool | float):
        raise ValueError(
            f'{what} must be written as a string (e.g. "0.0000025"), not a float {value!r}: '
            "floats cannot hold prices exactly"
        )
    if isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, str):
        try:
            dec = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{what} {value!r} is not a decimal number") from None
    elif isinstance(value, Decimal):
        dec = value
    else:
        raise ValueError(f"{what} must be a decimal string, got {type(value).__name__}")
    if not dec.is_finite():
        raise ValueError(f"{what} {value!r} is not finite")
    if dec < 0:
        raise ValueError(f"{what} {value!r} must not be negative")
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > SCALE:
        raise ValueError(f"{what} {value!r} has more than {SCALE} decimal places")
    if dec.adjusted() >= MAX_DIGITS - SCALE:
        raise ValueError(f"{what} {value!r} is too large")
    return dec


def to_str(amount: Decimal) -> str:
    """Canonical text form (fixed point, no exponent) for state, JSON and Avro."""
    return format(amount, "f")


def from_str(text: str) -> Decimal:
    return Decimal(text)


def stored(amount: Decimal) -> Decimal:
    """The value as ClickHouse stores it (scale 12). Raises if that would round."""
    with exact():
        return amount.quantize(_QUANTUM)


def present(amount: Decimal, currency: str = "USD") -> Decimal:
    """THE rounding point: an invoice total in the currency's minor unit, half-even."""
    places = MINOR_UNITS.get(currency.upper(), 2)
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
