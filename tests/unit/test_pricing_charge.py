"""Charge models as pure arithmetic: worked numbers and hypothesis properties."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from nodemeter_stream.pricing.book import ChargeModel, Rate, Tier
from nodemeter_stream.pricing.charge import (
    graduated,
    package_blocks,
    price_pieces,
    split_included,
    volume_exact,
    volume_tier,
)

D = Decimal
TIERS = (Tier(1000, D("0.01")), Tier(5000, D("0.008")), Tier(None, D("0.005")))


def test_graduated_event_crossing_a_bound_is_split() -> None:
    pieces = graduated(TIERS, 900, 300)  # units 900..1199: 100 in tier 1, 200 in tier 2
    assert [(p.tier, p.quantity, p.amount) for p in pieces] == [
        (1, 100, D("1.00")),
        (2, 200, D("1.600")),
    ]


def test_graduated_event_spanning_three_tiers() -> None:
    pieces = graduated(TIERS, 0, 6000)
    assert [(p.tier, p.quantity) for p in pieces] == [(1, 1000), (2, 4000), (3, 1000)]
    assert sum(p.amount for p in pieces) == D("10") + D("32") + D("5")


def test_volume_tier_is_the_tier_of_the_last_unit() -> None:
    assert volume_tier(TIERS, 1) == 0
    assert volume_tier(TIERS, 1000) == 0
    assert volume_tier(TIERS, 1001) == 1
    assert volume_tier(TIERS, 5000) == 1
    assert volume_tier(TIERS, 5001) == 2


def test_package_blocks_started() -> None:
    assert package_blocks(1000, 0, 1) == 1
    assert package_blocks(1000, 1, 1000) == 0
    assert package_blocks(1000, 1000, 1001) == 1
    assert package_blocks(1000, 0, 2500) == 3


def test_included_units_are_consumed_first() -> None:
    assert split_included(1000, 0, 400) == (400, 0)
    assert split_included(1000, 800, 400) == (200, 200)
    assert split_included(1000, 1000, 400) == (0, 400)
    rate = Rate(
        meter="api_calls", charge=ChargeModel.FLAT, unit_price=D("0.001"), included_units=1000
    )
    pieces = price_pieces(rate, 800, 400)
    assert [(p.charge_model, p.quantity, p.amount) for p in pieces] == [
        ("included", 200, D(0)),
        ("flat", 200, D("0.200")),
    ]


def test_volume_exact_amount() -> None:
    rate = Rate(meter="custom:pages", charge=ChargeModel.VOLUME, tiers=TIERS)
    assert volume_exact(rate, 6000, 6000) == (3, D("0.005"), D("30.000"))


quantities = st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=30)


@given(quantities, st.randoms(use_true_random=False))
def test_graduated_total_depends_only_on_total_quantity(qs: list[int], rnd: object) -> None:
    def run(order: list[int]) -> Decimal:
        pos, total = 0, D(0)
        for q in order:
            total += sum(p.amount for p in graduated(TIERS, pos, q))
            pos += q
        return total

    shuffled = list(qs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert run(qs) == run(shuffled) == run([sum(qs)])


@given(quantities)
def test_graduated_pieces_cover_the_quantity_and_are_non_negative(qs: list[int]) -> None:
    pos = 0
    for q in qs:
        pieces = graduated(TIERS, pos, q)
        assert sum(p.quantity for p in pieces) == q
        assert all(p.amount >= 0 and p.quantity > 0 for p in pieces)
        pos += q


@given(
    quantities, st.integers(min_value=1, max_value=500), st.integers(min_value=0, max_value=2000)
)
def test_package_total_is_blocks_of_paid_units(qs: list[int], size: int, included: int) -> None:
    rate = Rate(
        meter="api_calls", charge=ChargeModel.PACKAGE, package_size=size,
        package_price=D("0.5"), included_units=included,
    )  # fmt: skip
    pos, total = 0, D(0)
    for q in qs:
        total += sum(p.amount for p in price_pieces(rate, pos, q))
        pos += q
    paid = max(sum(qs) - included, 0)
    assert total == D("0.5") * (-(-paid // size))
