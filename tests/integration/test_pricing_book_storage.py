"""A price book that loads can be stored: the largest values the loader accepts go into
the real ``price_book_rates`` table and come back unchanged, and the next value up fails
at load (tests/unit/test_pricing_book.py), never at the insert, where the worker would
retry forever and stall pricing."""

from __future__ import annotations

from typing import Any

import pytest

from nodemeter_stream.pricing import PriceBookError, parse_documents
from nodemeter_stream.pricing.book import MAX_UNITS, MAX_VERSION
from nodemeter_stream.pricing.records import PRICE_BOOK_COLUMNS, price_book_rows

pytestmark = pytest.mark.clickhouse

VERSION = {"effective_from": "2299-12-31T23:59:59Z"}
RATES = [
    {"meter": "cpu_ms", "unit_price": "99999999999999999999999999.999999999999",
     "included_units": MAX_UNITS},
    {"meter": "gpu_ms", "charge": "graduated",
     "tiers": [{"up_to": MAX_UNITS, "unit_price": "1"}, {"unit_price": "0"}]},
    {"meter": "api_calls", "charge": "package", "package_size": MAX_UNITS, "package_price": "1"},
]  # fmt: skip


def doc(version: int, **over: Any) -> dict[str, Any]:
    v = {"version": version, **VERSION, "rates": RATES, **over}
    return {"price_book": {"name": "default", "versions": [v]}}


def test_the_largest_values_that_load_are_stored_unchanged(ch: Any) -> None:
    rows = price_book_rows(parse_documents([("b.yaml", doc(MAX_VERSION))]))
    ch.insert("price_book_rates", rows, column_names=list(PRICE_BOOK_COLUMNS))
    back = ch.query(
        "SELECT version, meter, tier, up_to, package_size, included_units, unit_price, "
        "effective_from FROM price_book_rates FINAL ORDER BY meter, tier"
    ).result_rows
    assert [r[:6] for r in back] == [
        (MAX_VERSION, "api_calls", 0, 0, MAX_UNITS, 0),
        (MAX_VERSION, "cpu_ms", 0, 0, 0, MAX_UNITS),
        (MAX_VERSION, "gpu_ms", 1, MAX_UNITS, 0, 0),
        (MAX_VERSION, "gpu_ms", 2, 0, 0, 0),
    ]
    assert str(back[1][6]) == RATES[0]["unit_price"]
    assert back[0][7].year == 2299


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("version", doc(MAX_VERSION + 1)),
        ("included_units", doc(1, rates=[{**RATES[0], "included_units": MAX_UNITS + 1}])),
        ("package_size", doc(1, rates=[{**RATES[2], "package_size": MAX_UNITS + 1}])),
    ],
)
def test_one_more_cannot_be_stored_and_fails_at_load(
    ch: Any, column: str, bad: dict[str, Any]
) -> None:
    # the row such a book would give: the insert fails (the worker would retry forever)
    rows = price_book_rows(parse_documents([("b.yaml", doc(MAX_VERSION))]))
    i = PRICE_BOOK_COLUMNS.index(column)
    rows[0][i] = rows[0][i] + 1 if column == "version" else MAX_UNITS + 1
    with pytest.raises(Exception, match=column):
        ch.insert("price_book_rates", rows[:1], column_names=list(PRICE_BOOK_COLUMNS))
    # so the loader refuses the book, naming the field
    with pytest.raises(PriceBookError, match=rf"b.yaml: .*{column}: must be <= "):
        parse_documents([("b.yaml", bad)])
