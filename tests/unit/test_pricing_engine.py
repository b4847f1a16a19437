"""The pricing engine on its own: tiers across events, settlement, credits, replays."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodemeter.events import GpuSource, Meters, UsageEvent
from nodemeter_stream.pricing import (
    PricedLine,
    PricingEngine,
    PricingError,
    new_state,
    parse_documents,
)
from nodemeter_stream.pricing.book import PricingConfig

D = Decimal
T0 = datetime(2026, 10, 1, 12, tzinfo=UTC)
TIERS = [
    {"up_to": 1000, "unit_price": "0.01"},
    {"up_to": 5000, "unit_price": "0.008"},
    {"unit_price": "0.005"},
]


def config(rates: list[Any], *, grant: str = "0", versions: list[dict[str, Any]] | None = None,
           budgets: list[dict[str, Any]] | None = None, tz: str = "UTC", window: str = "month") -> PricingConfig:  # fmt: skip
    book = {
        "name": "default",
        "versions": versions
        or [
            {
                "version": 1,
                "effective_from": "2026-01-01T00:00:00Z",
                "credit_grant": grant,
                "rates": rates,
            }
        ],
    }
    plan = {"time_zone": tz, "billing_window": window, "budgets": budgets or []}
    return parse_documents([("test", {"price_book": book, "defaults": plan})])


def fresh(tenant: str = "t1") -> tuple[dict[str, Any], dict[str, Any]]:
    return new_state(tenant), {}


def event(
    i: int, *, t: datetime = T0, tenant: str = "t1", model: str = "m", **meters: Any
) -> UsageEvent:
    return UsageEvent(
        event_id=f"ev-{i}", tenant=tenant, request_id=f"r{i}", node_id="node", span_id=f"s{i}",
        event_time=t, model=model, workflow="wf", meters=Meters(**meters),
    )  # fmt: skip


def run(engine: PricingEngine, events: list[UsageEvent], *, close: bool = True,
        restart_each: bool = False) -> list[PricedLine]:  # fmt: skip
    state, seen = fresh(events[0].tenant)
    lines: list[PricedLine] = []
    for ev in events:
        if restart_each:  # what the worker recovers from its changelog: JSON-safe data
            state, seen = json.loads(json.dumps(state)), json.loads(json.dumps(seen))
        lines += engine.process(state, seen, ev).lines
    if close:
        lines += engine.close_all(state).lines
    return lines


def total(lines: list[PricedLine]) -> Decimal:
    return sum((ln.amount for ln in lines), D(0))


def unique(lines: list[PricedLine]) -> list[PricedLine]:
    """What ClickHouse keeps: one row per line_id."""
    return list({ln.line_id: ln for ln in lines}.values())


# --- worked examples (docs/pricing.md, section "Worked examples") ----------------------


def test_graduated_example_from_docs() -> None:
    eng = PricingEngine(config([{"meter": "custom:pages", "charge": "graduated", "tiers": TIERS}]))
    lines = run(eng, [event(1, custom={"pages": 800}), event(2, custom={"pages": 700})])
    assert [(ln.event_id, ln.tier, ln.quantity, ln.amount) for ln in lines] == [
        ("ev-1", 1, 800, D("8.00")),
        ("ev-2", 1, 200, D("2.00")),
        ("ev-2", 2, 500, D("4.000")),
    ]
    assert total(lines) == D("14.00")


def test_volume_example_from_docs_settles_exactly() -> None:
    eng = PricingEngine(config([{"meter": "custom:pages", "charge": "volume", "tiers": TIERS}]))
    lines = run(eng, [event(1, custom={"pages": 800}), event(2, custom={"pages": 700})])
    got = [(ln.line_kind, ln.tier, ln.quantity, ln.amount) for ln in lines]
    assert got == [
        ("usage", 1, 800, D("8.00")),  # provisional: 800 reached tier 1
        ("usage", 2, 700, D("5.600")),  # provisional: 1500 reached tier 2
        ("settlement", 2, 0, D("-1.600")),  # 1500 x 0.008 = 12.00; 13.60 charged
    ]
    assert total(lines) == D("12.000")


def test_credit_grant_example_from_docs() -> None:
    rates = [{"meter": "api_calls", "charge": "flat", "unit_price": "0.01"}]
    eng = PricingEngine(config(rates, grant="5.00"))
    lines = run(eng, [event(1, api_calls=300), event(2, api_calls=400)])
    assert [(ln.line_kind, ln.amount) for ln in lines] == [
        ("usage", D("3.00")),
        ("credit", D("-3.00")),
        ("usage", D("4.00")),
        ("credit", D("-2.00")),
    ]
    assert total(lines) == D("2.00")


def test_package_example_from_docs() -> None:
    rates = [
        {"meter": "api_calls", "charge": "package", "package_size": 1000,
         "package_price": "0.50", "included_units": 1000},
    ]  # fmt: skip
    eng = PricingEngine(config(rates))
    lines = run(eng, [event(1, api_calls=800), event(2, api_calls=900), event(3, api_calls=800)])
    assert [(ln.event_id, ln.charge_model, ln.quantity, ln.amount) for ln in lines] == [
        ("ev-1", "included", 800, D(0)),
        ("ev-2", "included", 200, D(0)),
        ("ev-2", "package", 700, D("0.50")),
        ("ev-3", "package", 800, D("0.50")),
    ]
    assert total(lines) == D("1.00")


def test_cached_tokens_priced_once_at_their_rate_and_savings_reported() -> None:
    rates = [
        {"meter": "input_tokens", "charge": "flat", "unit_price": "0.000003"},
        {"meter": "cached_input_tokens", "charge": "flat", "unit_price": "0.0000003"},
    ]
    eng = PricingEngine(config(rates))
    lines = run(eng, [event(1, input_tokens=1000, cached_input_tokens=9000)])
    by_meter = {ln.meter: ln for ln in lines}
    assert by_meter["input_tokens"].amount == D("0.003")
    assert by_meter["cached_input_tokens"].amount == D("0.0027")
    assert by_meter["cached_input_tokens"].cache_savings == D("0.027") - D("0.0027")
    assert sum(ln.quantity for ln in lines) == 10_000  # each token counted once


def test_cache_writes_carry_their_cost_as_plain_input() -> None:
    """The write premium (amount - input_list_cost) is what the savings are net of."""
    rates = [
        {"meter": "input_tokens", "charge": "flat", "unit_price": "0.000003"},
        {"meter": "cached_input_tokens", "charge": "flat", "unit_price": "0.0000003"},
        {"meter": "cache_write_tokens", "charge": "flat", "unit_price": "0.00000375"},
    ]
    eng = PricingEngine(config(rates))
    lines = run(eng, [event(1, input_tokens=10, cache_write_tokens=1000, cached_input_tokens=1)])
    by_meter = {ln.meter: ln for ln in lines}
    write = by_meter["cache_write_tokens"]
    assert (write.amount, write.input_list_cost, write.cache_savings) == (
        D("0.00375"),
        D("0.003"),
        D(0),
    )
    assert write.amount - write.input_list_cost == D("0.00075")  # the premium
    assert by_meter["cached_input_tokens"].input_list_cost == 0
    assert by_meter["input_tokens"].input_list_cost == 0
    # kept through the worker's JSON state
    assert PricedLine.from_dict(json.loads(json.dumps(write.to_dict()))) == write
    # no input price in the book: nothing to compare against, the whole write is premium
    eng = PricingEngine(config(rates[2:]))
    assert run(eng, [event(2, cache_write_tokens=1000)])[0].input_list_cost == 0


def test_event_priced_by_version_in_force_at_event_time() -> None:
    versions = [
        {"version": 1, "effective_from": "2026-01-01T00:00:00Z",
         "rates": [{"meter": "cpu_ms", "charge": "flat", "unit_price": "0.001"}]},
        {"version": 2, "effective_from": "2026-10-15T00:00:00Z",
         "rates": [{"meter": "cpu_ms", "charge": "flat", "unit_price": "0.002"}]},
    ]  # fmt: skip
    eng = PricingEngine(config([], versions=versions))
    # arrival order is the reverse of event time: the version still follows event time
    lines = run(eng, [event(1, t=T0 + timedelta(days=20), cpu_ms=10), event(2, t=T0, cpu_ms=10)])
    assert [(ln.price_book_version, ln.amount) for ln in lines] == [
        (2, D("0.020")),
        (1, D("0.010")),
    ]


def test_gpu_ms_priced_by_gpu_type() -> None:
    rates = [
        {"meter": "gpu_ms", "gpu_type": "H100", "charge": "flat", "unit_price": "0.000001"},
        {"meter": "gpu_ms", "charge": "flat", "unit_price": "0.0000005"},
    ]
    eng = PricingEngine(config(rates))
    g: dict[str, Any] = {"gpu_source": GpuSource.MEASURED}
    lines = run(
        eng,
        [event(1, gpu_ms=1000, gpu_type="H100", **g), event(2, gpu_ms=1000, gpu_type="L4", **g)],
    )
    assert [(ln.gpu_type, ln.amount) for ln in lines] == [("H100", D("0.001")), ("L4", D("0.0005"))]


def test_unpriced_meter_is_kept_at_zero() -> None:
    eng = PricingEngine(config([{"meter": "cpu_ms", "charge": "flat", "unit_price": "0.001"}]))
    lines = run(eng, [event(1, cpu_ms=5, api_calls=2)])
    assert {(ln.meter, ln.charge_model, ln.amount) for ln in lines} == {
        ("cpu_ms", "flat", D("0.005")),
        ("api_calls", "unpriced", D(0)),
    }


def test_non_billable_events_produce_no_lines() -> None:
    eng = PricingEngine(config([{"meter": "cpu_ms", "charge": "flat", "unit_price": "0.001"}]))
    ev = UsageEvent(
        event_id="warm", tenant="t1", request_id="r", node_id="n", span_id="s", event_time=T0,
        meters=Meters(cpu_ms=100), billable=False, non_billable_reason="warmup",
    )  # fmt: skip
    state, seen = fresh()
    assert eng.process(state, seen, ev).lines == []
    assert "t1|warm" in seen


def test_windows_follow_the_tenant_time_zone() -> None:
    eng = PricingEngine(
        config([{"meter": "cpu_ms", "charge": "flat", "unit_price": "1"}], tz="America/New_York")
    )
    # 03:00 UTC on Nov 1 is still October 31 in New York
    lines = run(eng, [event(1, t=datetime(2026, 11, 1, 3, tzinfo=UTC), cpu_ms=1)], close=False)
    assert lines[0].window_id == "2026-10"
    assert lines[0].window_start == datetime(2026, 10, 1, 4, tzinfo=UTC)


def test_window_closes_on_event_time_and_late_event_resettles() -> None:
    eng = PricingEngine(config([{"meter": "custom:pages", "charge": "volume", "tiers": TIERS}]))
    nov = datetime(2026, 11, 2, tzinfo=UTC)
    state, seen = fresh()
    out1 = eng.process(state, seen, event(1, custom={"pages": 800}))
    out2 = eng.process(state, seen, event(2, custom={"pages": 700}))
    out3 = eng.process(state, seen, event(3, t=nov, custom={"pages": 1}))  # closes October
    assert [ln.line_kind for ln in out3.lines] == ["usage", "settlement"]
    late = eng.process(state, seen, event(4, t=T0 + timedelta(days=3), custom={"pages": 4000}))
    # 5500 pages in October: all at 0.005
    october = [
        ln
        for ln in [*out1.lines, *out2.lines, *out3.lines, *late.lines]
        if ln.window_id == "2026-10"
    ]
    assert total(october) == D("5500") * D("0.005")
    assert [ln.line_kind for ln in late.lines] == ["usage", "settlement"]


def test_event_for_a_dropped_window_is_refused() -> None:
    eng = PricingEngine(config([{"meter": "cpu_ms", "charge": "flat", "unit_price": "1"}]),
                        retention=timedelta(days=10))  # fmt: skip
    state, seen = fresh()
    eng.process(state, seen, event(1, cpu_ms=1))
    eng.process(state, seen, event(2, t=datetime(2026, 12, 20, tzinfo=UTC), cpu_ms=1))
    assert "t1|ev-1" not in seen  # forgotten with its window
    with pytest.raises(PricingError) as err:
        eng.process(state, seen, event(3, cpu_ms=1))
    assert err.value.reason == "window_closed"


def test_redelivered_event_reemits_the_same_lines() -> None:
    eng = PricingEngine(config([{"meter": "custom:pages", "charge": "graduated", "tiers": TIERS}]))
    state, seen = fresh()
    first = eng.process(state, seen, event(1, custom={"pages": 1200}))
    again = eng.process(state, seen, event(1, custom={"pages": 1200}))
    assert again.duplicate
    assert again.lines == first.lines
    assert state["windows"]["2026-10"]["units"] == {"custom:pages|m||": 1200}


def test_without_kept_lines_a_duplicate_emits_nothing_and_is_not_priced() -> None:
    rates = [{"meter": "custom:pages", "charge": "graduated", "tiers": TIERS}]
    eng = PricingEngine(config(rates), keep_lines=False)
    state, seen = fresh()
    first = eng.process(state, seen, event(1, custom={"pages": 1200}))
    again = eng.process(state, seen, event(1, custom={"pages": 1200}))
    assert len(first.lines) == 2 and again.duplicate and again.lines == []
    assert seen["t1|ev-1"]["lines"] == []
    assert state["windows"]["2026-10"]["units"] == {"custom:pages|m||": 1200}


def test_crash_before_state_saved_reprices_identically() -> None:
    """At-least-once: the event is redelivered against the state from before it."""
    eng = PricingEngine(config([{"meter": "custom:pages", "charge": "graduated", "tiers": TIERS}]))
    state, seen = fresh()
    eng.process(state, seen, event(1, custom={"pages": 900}))
    saved = json.dumps([state, seen])
    lost = eng.process(state, seen, event(2, custom={"pages": 300})).lines
    state, seen = json.loads(saved)
    assert eng.process(state, seen, event(2, custom={"pages": 300})).lines == lost


# --- properties -----------------------------------------------------------------------

quantities = st.lists(st.integers(min_value=1, max_value=2500), min_size=1, max_size=25)


def split(qs: list[int], cuts: list[int]) -> list[int]:
    """The same usage in other batches: split each quantity at a cut point."""
    out: list[int] = []
    for q, c in zip(qs, cuts + [0] * len(qs), strict=False):
        c = c % q
        out += [c, q - c] if c else [q]
    return out


@settings(max_examples=60, deadline=None)
@given(quantities, st.randoms(use_true_random=False), st.lists(st.integers(0, 2500)))
def test_graduated_window_total_independent_of_order_and_batching(qs: list[int], rnd: Any, cuts: list[int]) -> None:  # fmt: skip
    eng = PricingEngine(config([{"meter": "custom:pages", "charge": "graduated", "tiers": TIERS}]))
    other = split(qs, cuts)
    rnd.shuffle(other)
    a = run(eng, [event(i, custom={"pages": q}) for i, q in enumerate(qs)])
    b = run(eng, [event(i, custom={"pages": q}) for i, q in enumerate(other)])
    assert total(a) == total(b)
    assert sum(ln.quantity for ln in a) == sum(ln.quantity for ln in b) == sum(qs)


@settings(max_examples=60, deadline=None)
@given(quantities, st.integers(0, 3000), st.randoms(use_true_random=False))
def test_volume_settlement_is_exact(qs: list[int], included: int, rnd: Any) -> None:
    rates = [
        {"meter": "custom:pages", "charge": "volume", "tiers": TIERS, "included_units": included}
    ]
    eng = PricingEngine(config(rates))
    rnd.shuffle(qs)
    lines = run(eng, [event(i, custom={"pages": q}) for i, q in enumerate(qs)])
    n = sum(qs)
    price = D("0.01") if n <= 1000 else D("0.008") if n <= 5000 else D("0.005")
    assert total(lines) == max(n - included, 0) * price
    for ln in lines:
        if ln.line_kind == "usage":
            assert ln.amount >= 0  # only settlement/credit/adjustment lines may be negative


@settings(max_examples=60, deadline=None)
@given(
    quantities,
    st.sampled_from(["0", "3.50", "20", "1000"]),
    st.lists(st.integers(0, 30), max_size=10),
)
def test_credits_never_consumed_twice(qs: list[int], grant: str, redeliver: list[int]) -> None:
    rates = [{"meter": "custom:pages", "charge": "volume", "tiers": TIERS}]
    eng = PricingEngine(config(rates, grant=grant))
    events = [event(i, custom={"pages": q}) for i, q in enumerate(qs)]
    # redeliveries of already-seen events interleaved (at-least-once input)
    stream = list(events)
    for r in redeliver:
        k = r % len(events)
        stream.insert(stream.index(events[k]) + 1, events[k])
    lines = unique(run(eng, stream))
    gross = total([ln for ln in lines if ln.line_kind != "credit"])
    credits = total([ln for ln in lines if ln.line_kind == "credit"])
    assert credits == -min(D(grant), gross)
    assert total(lines) == max(gross - D(grant), D(0))
    assert lines == unique(run(eng, events))  # same lines, same ids as without redelivery


@settings(max_examples=30, deadline=None)
@given(quantities)
def test_restart_between_every_event_changes_nothing(qs: list[int]) -> None:
    rates = [
        {"meter": "custom:pages", "charge": "volume", "tiers": TIERS},
        {"meter": "api_calls", "charge": "package", "package_size": 7, "package_price": "0.3", "included_units": 5},
    ]  # fmt: skip
    eng = PricingEngine(config(rates, grant="2"))
    evs = [
        event(i, t=T0 + timedelta(days=i), custom={"pages": q}, api_calls=q % 11 + 1)
        for i, q in enumerate(qs)
    ]
    assert run(eng, evs, restart_each=True) == run(eng, evs)


def test_window_totals_per_meter_match_an_independent_computation() -> None:
    rates = [
        {"meter": "custom:pages", "charge": "graduated", "tiers": TIERS},
        {"meter": "cpu_ms", "charge": "flat", "unit_price": "0.00000001"},
    ]
    eng = PricingEngine(config(rates))
    evs = [
        event(i, t=T0 + timedelta(hours=i), custom={"pages": 137}, cpu_ms=1234) for i in range(50)
    ]
    lines = run(eng, evs)
    per_meter: dict[str, Decimal] = defaultdict(Decimal)
    for ln in lines:
        per_meter[ln.meter] += ln.amount
    # 6850 pages: 1000 x 0.01 + 4000 x 0.008 + 1850 x 0.005
    assert per_meter["custom:pages"] == D("10") + D("32") + D("9.25")
    assert per_meter["cpu_ms"] == D("61700") * D("0.00000001")


# --- repricing --------------------------------------------------------------------------


def test_repricing_under_a_backdated_version_produces_adjustment_lines() -> None:
    from nodemeter_stream.pricing.reprice import price_all, reprice

    v1 = {"version": 1, "effective_from": "2026-01-01T00:00:00Z",
          "rates": [{"meter": "custom:pages", "charge": "graduated", "tiers": TIERS}]}  # fmt: skip
    fix = {"version": 2, "effective_from": "2026-10-01T00:00:00Z",
           "rates": [{"meter": "custom:pages", "charge": "volume", "tiers": TIERS}]}  # fmt: skip
    events = [event(i, t=T0 + timedelta(hours=i), custom={"pages": 700}) for i in range(4)]
    old = price_all(PricingEngine(config([], versions=[v1])), events)
    assert total(old) == D("10") + D("14.4")  # 2800 pages graduated: 1000 x 0.01 + 1800 x 0.008
    new_engine = PricingEngine(config([], versions=[v1, fix]))
    adj = reprice(new_engine, events, old, tag="default@v2")
    assert {ln.line_kind for ln in adj} == {"adjustment"}
    assert total(old) + total(adj) == D("2800") * D("0.008")  # volume: all at tier 2
    assert {ln.price_book_version for ln in adj} == {2}
    # the same repricing again: same ids (idempotent); after it, nothing left to adjust
    assert [ln.line_id for ln in reprice(new_engine, events, old, tag="default@v2")] == [
        ln.line_id for ln in adj
    ]
    assert reprice(new_engine, events, old + adj, tag="default@v2-again") == []


@settings(max_examples=40, deadline=None)
@given(quantities, st.sampled_from(["0.007", "0.02", "0.01"]))
def test_old_lines_plus_adjustments_equal_the_new_pricing(qs: list[int], price: str) -> None:
    from nodemeter_stream.pricing.reprice import price_all, reprice

    old_rates = [{"meter": "custom:pages", "charge": "graduated", "tiers": TIERS}]
    new_rates = [
        {"meter": "custom:pages", "charge": "flat", "unit_price": price, "included_units": 100}
    ]
    events = [event(i, t=T0 + timedelta(hours=i), custom={"pages": q}) for i, q in enumerate(qs)]
    old = price_all(PricingEngine(config(old_rates)), events)
    new_engine = PricingEngine(config(new_rates))
    adj = reprice(new_engine, events, old, tag="t")
    assert total(old) + total(adj) == total(price_all(new_engine, events))
    assert len({ln.line_id for ln in adj}) == len(adj)


def test_a_line_row_is_its_fields_in_column_order() -> None:
    from nodemeter_stream.pricing.lines import PRICED_LINE_COLUMNS

    rates = [
        {"meter": "input_tokens", "charge": "flat", "unit_price": "0.000003"},
        {"meter": "cache_write_tokens", "charge": "flat", "unit_price": "0.00000375"},
    ]
    lines = run(PricingEngine(config(rates)), [event(3, input_tokens=7, cache_write_tokens=9)])
    assert len(lines) == 2
    for ln in lines:
        row = ln.row()
        assert isinstance(row, list) and len(row) == len(PRICED_LINE_COLUMNS)
        assert row == [getattr(ln, c) for c in PRICED_LINE_COLUMNS]
        assert row[PRICED_LINE_COLUMNS.index("input_list_cost")] == ln.input_list_cost
