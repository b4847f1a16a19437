"""The pure statement core (``pricing.statement``): assembly, rounding once, the settled
rule and window names. Lines are built by hand here; the chDB tests price them with
the real engine (tests/integration/test_statements.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest

from nodemeter_stream.analytics.statement_render import amount_text
from nodemeter_stream.pricing.errors import StatementError
from nodemeter_stream.pricing.statement import (
    StatementLine,
    assemble,
    parse_window,
    statement_id,
    window_settled,
)
from nodemeter_stream.pricing.windows import WindowKind

NOV = parse_window("2026-11", WindowKind.MONTH, "UTC")


def line(lid: str, amount: str, **kw: Any) -> StatementLine:
    d: dict[str, Any] = dict(line_id=lid, line_kind="usage", window_id="2026-11", workflow="w",
                             node_id="n", meter="api_calls", model="", provider="", gpu_type="",
                             charge_model="flat", tier=0, price_book="b", price_book_version=1,
                             currency="USD", quantity=1, unit_price=D(amount), amount=D(amount))  # fmt: skip
    return StatementLine(**(d | kw))


def test_the_total_is_rounded_once_not_per_line() -> None:
    lines = [line(f"l{i}", "0.005") for i in range(3)]
    st = assemble(
        tenant="t", window=NOV, kind=WindowKind.MONTH, time_zone="UTC", lines=[*lines, lines[0]]
    )  # a line given twice counts once
    total = st.total("USD")
    assert (total.amount, total.lines) == (D("0.015"), 3)
    assert total.due == D("0.02")  # rounding each line first would give 0.00 (half-even)
    [item] = st.items
    assert (item.quantity, item.amount, item.lines) == (3, D("0.015"), 3)  # unrounded
    yen = assemble(tenant="t", window=NOV, kind=WindowKind.MONTH, time_zone="UTC",
                   lines=[line("y", "2.5", currency="JPY")])  # fmt: skip
    assert yen.total("JPY").due == D("2")  # no minor unit, half-even


def test_sections_subtotals_and_carried_lines() -> None:
    st = assemble(
        tenant="t", window=NOV, kind=WindowKind.MONTH, time_zone="UTC",
        lines=[
            line("u", "4"),
            line("i", "0", charge_model="included", quantity=1000),
            line("c", "-1", line_kind="credit", meter="credit_grant", model="gpt-4o", unit_price=D(0)),
            line("c2", "-0.5", line_kind="credit", meter="credit_grant", model="claude", unit_price=D(0)),
            line("s", "-0.25", line_kind="settlement", node_id="", workflow=""),
            line("a", "0.1", line_kind="adjustment"),
            line("late", "2", window_id="2026-10", line_kind="usage"),
        ],
    )  # fmt: skip
    assert [i.section for i in st.items] == [
        "usage", "included", "credit", "settlement", "adjustment", "earlier"]  # fmt: skip
    assert st.items[2].amount == D("-1.5")  # one credit item per book, not per model
    assert st.earlier_windows == ("2026-10",) and ("late", "2026-10") in st.line_keys
    assert st.total("USD").amount == D("4.35")
    assert {(s.workflow, s.node_id): s.amount for s in st.node_subtotals} == {
        ("", ""): D("-0.25"), ("w", "n"): D("4.6")}  # fmt: skip
    assert st.statement_id == statement_id("t", "2026-11") != statement_id("t", "2026-12")
    same = assemble(tenant="t", window=NOV, kind=WindowKind.MONTH, time_zone="UTC",
                    lines=reversed([line("u", "4"), line("a", "0.1", line_kind="adjustment")]))  # fmt: skip
    other = assemble(tenant="t", window=NOV, kind=WindowKind.MONTH, time_zone="UTC",
                     lines=[line("a", "0.1", line_kind="adjustment"), line("u", "4")])  # fmt: skip
    assert same.content_id == other.content_id  # a hash of the set, not the order


def test_window_settled_reads_the_agents_states() -> None:
    grace = timedelta(hours=1)
    end = NOV.end.isoformat()
    closed = {
        "watermark": "2026-12-01T02:00:00+00:00",
        "windows": {"2026-11": {"closed": True, "dirty": False, "end": end}},
    }
    open_ = {
        "watermark": "2026-12-01T00:30:00+00:00",
        "windows": {"2026-11": {"closed": False, "dirty": False, "end": end}},
    }
    dirty = {
        "watermark": "2026-12-05T00:00:00+00:00",
        "windows": {"2026-11": {"closed": True, "dirty": True, "end": end}},
    }
    dropped = {"watermark": "2027-02-01T00:00:00+00:00", "windows": {}}
    quiet = {"watermark": "2026-12-01T00:59:59+00:00", "windows": {}}  # fmt: skip
    assert window_settled([closed], NOV, grace=grace)
    assert not window_settled([open_], NOV, grace=grace)
    assert not window_settled([dirty], NOV, grace=grace)
    assert window_settled([dropped], NOV, grace=grace)  # closed and dropped after retention
    assert not window_settled([quiet], NOV, grace=grace)  # end + grace not passed
    assert window_settled([open_, closed], NOV, grace=grace)  # one group says so
    assert not window_settled([], NOV, grace=grace)


def test_window_names_follow_the_tenants_windows() -> None:
    day = parse_window("2026-11-25", WindowKind.DAY, "Europe/Berlin")
    assert day.start == datetime(2026, 11, 24, 23, tzinfo=UTC)
    for bad, why in [
        ("2026-11-25", "months in UTC, named YYYY-MM"),
        ("2026-13", "unknown window '2026-13'"),
        ("nov", "unknown window 'nov'"),
        ("2026-1", "write it as '2026-01'"),
    ]:
        with pytest.raises(StatementError, match=why):
            parse_window(bad, WindowKind.MONTH, "UTC")


def test_amounts_are_shown_exact() -> None:
    assert amount_text(D("12.500000000000")) == "12.50"
    assert amount_text(D("0.000002500000")) == "0.0000025"
    assert amount_text(D("-3")) == "-3.00"
    assert amount_text(D("7.000000000000"), "JPY") == "7"
