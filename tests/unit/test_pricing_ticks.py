"""Window ticks: a quiet tenant's windows close on the wall clock, through the log.

``PricingEngine.advance`` (a tick at ``as_of``), ``price_batch`` with WindowTick items,
and the timer's decision ``tenants_due`` (pure) and its sending (``Pricing.tick``,
without Faust: the tenant states in memory, a stub topic).
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from nodemeter.codec import decode_payload, encode_payload, encode_record
from nodemeter.events import Meters, UsageEvent
from nodemeter_stream.pricing import PricedLine, PricingEngine, new_state, parse_documents
from nodemeter_stream.pricing.batch import BatchResult, Item, price_batch, tenants_due
from nodemeter_stream.pricing.engine import seen_key
from nodemeter_stream.pricing.records import encode_tick

D = Decimal
T0 = datetime(2026, 10, 1, 12, tzinfo=UTC)
OCT_END = datetime(2026, 11, 1, tzinfo=UTC)
GRACE = timedelta(hours=1)
# Volume tiers whose price RISES: the settlement is positive, so it can cross a budget.
BOOKS = {
    "price_book": {
        "name": "default",
        "versions": [{
            "version": 1, "effective_from": "2026-01-01T00:00:00Z", "credit_grant": "0.50",
            "rates": [
                {"meter": "custom:pages", "charge": "volume",
                 "tiers": [{"up_to": 100, "unit_price": "0.01"}, {"unit_price": "0.02"}]},
                {"meter": "api_calls", "charge": "flat", "unit_price": "0.001"},
            ],
        }],
    },
    "defaults": {"budgets": [{"name": "m", "amount": "1.80", "thresholds": [50, 100]}]},
}  # fmt: skip


def engine(**kw: Any) -> PricingEngine:
    return PricingEngine(parse_documents([("t", BOOKS)]), grace=GRACE, **kw)


def event(i: int, *, t: datetime = T0, tenant: str = "a", **meters: Any) -> UsageEvent:
    return UsageEvent(
        event_id=f"ev-{i}", tenant=tenant, request_id=f"r{i}", node_id="n", span_id=f"s{i}",
        event_time=t, workflow="wf", meters=Meters(**meters),
    )  # fmt: skip


def priced_october(eng: PricingEngine) -> tuple[dict[str, Any], dict[str, Any], list[PricedLine]]:
    """Tenant a: 80 then 40 pages in October (provisional 0.80 + 0.80; exact 120 x 0.02)."""
    state: dict[str, Any] = new_state("a")
    seen: dict[str, Any] = {}
    lines: list[PricedLine] = []
    for i, pages in enumerate((80, 40)):
        out = eng.process(state, seen, event(i, custom={"pages": pages}), source=(0, i))
        lines += out.lines
    return state, seen, lines


def view(lines: list[PricedLine]) -> list[tuple[str, str, Decimal]]:
    return [(ln.line_id, ln.line_kind, ln.amount) for ln in lines]


def total(lines: list[PricedLine]) -> Decimal:
    return sum((ln.amount for ln in {x.line_id: x for x in lines}.values()), D(0))


# --- PricingEngine.advance / due ---------------------------------------------------


def test_advance_settles_exactly_what_close_all_would() -> None:
    eng = engine()
    state, seen, lines = priced_october(eng)
    assert total(lines) == D("1.10")  # 1.60 provisional - 0.50 credit
    closed = eng.close_all(copy.deepcopy(state))
    out = eng.advance(state, seen, OCT_END + GRACE, source=(0, 2))
    assert not out.duplicate and out.lines
    assert view(out.lines) == view(closed.lines)
    assert {ln.line_kind for ln in out.lines} == {"settlement"}
    assert total(lines + out.lines) == D("120") * D("0.02") - D("0.50")  # closed form: 1.90
    assert state["watermark"] == (OCT_END + GRACE).isoformat()
    assert state["applied"] == {"0": 2}
    assert state["windows"]["2026-10"]["closed"] is True


def test_advance_is_idempotent_at_the_same_source() -> None:
    eng = engine()
    state, seen, _ = priced_october(eng)
    first = eng.advance(state, seen, OCT_END + GRACE, source=(0, 2))
    snapshot = json.dumps(state, sort_keys=True)
    again = eng.advance(state, seen, OCT_END + GRACE, source=(0, 2))
    assert again.duplicate  # re-emitted with the same ids (collapse downstream), not re-priced
    assert view(again.lines) == view(first.lines)
    assert [a.alert_id for a in again.alerts] == [a.alert_id for a in first.alerts]  # re-emitted
    assert json.dumps(state, sort_keys=True) == snapshot
    older = eng.advance(state, seen, OCT_END + 5 * GRACE, source=(0, 1))  # below applied
    assert older.duplicate and not older.lines
    assert json.dumps(state, sort_keys=True) == snapshot


def test_advance_is_a_no_op_when_nothing_is_due() -> None:
    eng = engine()
    state, seen, _ = priced_october(eng)
    early = OCT_END + GRACE - timedelta(microseconds=1)
    assert not eng.due(state, early)
    out = eng.advance(state, seen, early, source=(0, 2))
    assert not out.lines and not out.alerts and not out.duplicate
    assert state["windows"]["2026-10"]["closed"] is False
    assert not [k for k in seen if "tick:" in k]  # no alerts, no seen record
    assert eng.due(state, OCT_END + GRACE)
    eng.advance(state, seen, OCT_END + GRACE, source=(0, 3))
    assert not eng.due(state, OCT_END + 10 * GRACE)  # settled: nothing due any more
    later = eng.advance(state, seen, OCT_END + 10 * GRACE, source=(0, 4))
    assert not later.lines and not later.alerts
    # a tick older than the watermark leaves the watermark alone
    eng.advance(state, seen, T0, source=(0, 5))
    assert state["watermark"] == (OCT_END + 10 * GRACE).isoformat()


def test_settlement_alerts_once() -> None:
    eng = engine(keep_lines=False)
    state, seen, _ = priced_october(eng)  # net 1.10 of 1.80: 50 % fired on ev-1
    out = eng.advance(state, seen, OCT_END + GRACE, source=(0, 2))
    assert [(a.threshold_percent, a.spent) for a in out.alerts] == [(100, D("1.90"))]
    record = seen[seen_key("a", "tick:0:2")]
    assert [d["alert_id"] for d in record["alerts"]] == [out.alerts[0].alert_id]
    assert record["lines"] == [] and record["window"] == "2026-10"
    # later ticks, and a late event settled again, do not fire it again
    assert not eng.advance(state, seen, OCT_END + 2 * GRACE, source=(0, 3)).alerts
    late = eng.process(state, seen, event(9, custom={"pages": 1}), source=(0, 4))
    assert late.lines and not late.alerts


def test_advance_of_an_unknown_tenant_only_sets_the_watermark() -> None:
    eng = engine()
    state: dict[str, Any] = new_state("z")
    out = eng.advance(state, {}, OCT_END, source=(3, 0))
    assert not out.lines and state["watermark"] == OCT_END.isoformat()
    with pytest.raises(ValueError):
        eng.advance(state, {}, OCT_END.replace(tzinfo=None), source=(3, 1))  # naive


def test_advance_drops_windows_past_retention() -> None:
    eng = engine(retention=timedelta(days=10))
    state, seen, _ = priced_october(eng)
    eng.advance(state, seen, OCT_END + GRACE, source=(0, 2))
    assert "2026-10" in state["windows"]
    eng.advance(state, seen, OCT_END + timedelta(days=10), source=(0, 3))
    assert state["windows"] == {} and not [k for k, v in seen.items() if v["window"] == "2026-10"]


# --- price_batch with WindowTick items ------------------------------------------------


def tick_item(tenant: str, as_of: datetime, partition: int, offset: int) -> Item:
    key, value = encode_tick(tenant, as_of)
    return Item("t", partition, offset, key, value)


def event_item(ev: UsageEvent, partition: int, offset: int) -> Item:
    # forwarded by the ingest agent: its position on the usage topic (partition 7)
    return Item("t", partition, offset, ev.tenant.encode(), encode_record(ev),
                ingest=("usage", 7, offset))  # fmt: skip


def doubtful(items: list[Item]) -> list[Item]:
    return [Item(i.topic, i.partition, i.offset, i.key, i.value, ingest=i.ingest, doubt=True)
            for i in items]  # fmt: skip


class States:
    """The agent's tenant states, stored (with the progress) after a batch, or not."""

    def __init__(self) -> None:
        self.tenants: dict[str, Any] = {}

    def price(self, eng: PricingEngine, items: list[Item]) -> BatchResult:
        return price_batch(eng, items, get_state=self.tenants.get)

    def store(self, res: BatchResult) -> None:
        self.tenants.update({t: copy.deepcopy(s) for t, (_, s) in res.states.items()})


def october_items() -> list[Item]:
    evs = [event(0, custom={"pages": 80}), event(1, custom={"pages": 40})]
    return [event_item(ev, 0, i) for i, ev in enumerate(evs)]


def test_price_batch_settles_on_a_tick() -> None:
    eng, states = engine(keep_lines=False), States()
    first = states.price(eng, october_items())
    states.store(first)
    assert [a.threshold_percent for a in first.alerts] == [50]
    assert "settlement" not in {ln.line_kind for ln in first.lines}  # quiet: nothing closes

    tick = tick_item("a", OCT_END + GRACE, 0, 2)
    res = states.price(eng, [tick])
    assert res.priced == 1 and not res.rejected and not res.duplicates
    assert [ln.line_kind for ln in res.lines] == ["settlement"]
    assert total(first.lines + res.lines) == D("1.90")
    assert [a.threshold_percent for a in res.alerts] == [100]
    assert res.states["a"][0] == 0 and res.budget_records  # budget state goes out too
    states.store(res)
    # redelivered once its state is stored: nothing is due any more
    again = states.price(eng, [tick])
    assert again.priced == 1 and not again.lines and not again.alerts
    later = states.price(eng, [tick_item("a", OCT_END + 3 * GRACE, 0, 3)])
    assert later.priced == 1 and not later.lines and not later.alerts


def test_price_batch_tick_replays_identically_when_its_state_was_not_stored() -> None:
    eng, states = engine(keep_lines=False), States()
    states.store(states.price(eng, october_items()))
    tick = tick_item("a", OCT_END + GRACE, 0, 2)
    res = states.price(eng, [tick])  # then the worker died before the state was stored
    replay = states.price(eng, doubtful([tick]))
    assert view(replay.lines) == view(res.lines) and res.lines
    assert [a.alert_id for a in replay.alerts] == [a.alert_id for a in res.alerts]
    assert replay.doubt_lines == {ln.line_id for ln in res.lines}  # looked up, not re-inserted
    assert replay.states == res.states


def test_price_batch_mixes_ticks_and_events_and_rejects_unknown_records() -> None:
    eng, states = engine(), States()
    bogus = Item("t", 0, 3, b"a", encode_payload("window_tick", {"tenant": "a", "as_of": T0})[:-1])
    alert = Item("t", 0, 4, b"a", _budget_alert_bytes())
    items = [*october_items(), tick_item("a", OCT_END + GRACE, 0, 2), bogus, alert]
    items.append(event_item(event(5, t=OCT_END + 2 * GRACE, api_calls=10), 0, 5))
    res = states.price(eng, items)
    assert res.priced == 4
    assert sorted(r.reason for r in res.rejected) == ["truncated", "unknown_schema"]
    kinds = [ln.line_kind for ln in res.lines]
    assert kinds == ["usage", "credit", "usage", "settlement", "usage", "credit"]
    assert res.states["a"][1]["ingested"] == {"7": 5}


def _budget_alert_bytes() -> bytes:
    return encode_payload(
        "budget_alert",
        {
            "alert_id": "x", "tenant": "a", "budget_id": "m", "window_start": T0,
            "window_end": OCT_END, "limit_amount": D(1), "spend_amount": D(1),
            "threshold_pct": 100, "event_time": T0,
        },
    )  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(1, 80)), min_size=2, max_size=20),
    st.integers(1, 5),
    st.sets(st.integers(0, 19), max_size=3),
)
def test_ticks_keep_a_crash_anywhere_harmless(
    steps: list[tuple[bool, int]], size: int, crash: set[int]
) -> None:
    """Events (a day apart, from October into November) and ticks (at the last event's
    time + 2 days) in one partition; a run that dies before a batch's state is stored
    and re-applies it (in doubt) gives the lines and alerts of a run without crashes, and
    the windows a close_all of that state would settle are already settled."""
    items: list[Item] = []
    t = T0
    for i, (is_tick, q) in enumerate(steps):
        if is_tick:
            items.append(tick_item("a", t + timedelta(days=2), 0, i))
        else:
            t = T0 + timedelta(days=i)
            items.append(event_item(event(i, t=t, custom={"pages": q}), 0, i))
    batches = [items[k : k + size] for k in range(0, len(items), size)]

    def run(crash: set[int]) -> tuple[dict[str, Decimal], set[str], States]:
        eng, states = engine(keep_lines=False), States()
        lines: dict[str, Decimal] = {}
        alerts: set[str] = set()
        i, crashed, in_doubt = 0, set(), False
        while i < len(batches):
            batch = doubtful(batches[i]) if in_doubt else batches[i]
            res = states.price(eng, batch)
            for ln in res.lines:
                assert lines.get(ln.line_id, ln.amount) == ln.amount  # same id, same amount
                lines[ln.line_id] = ln.amount
            alerts |= {a.alert_id for a in res.alerts}
            if i in crash and i not in crashed:
                crashed.add(i)
                in_doubt = True
                continue
            states.store(res)
            i, in_doubt = i + 1, False
        return lines, alerts, states

    clean_lines, clean_alerts, states = run(set())
    lines, alerts, _ = run(crash)
    assert lines == clean_lines and alerts == clean_alerts
    # whatever the ticks settled is what close_all would have settled by then
    state = copy.deepcopy(states.tenants["a"])
    wm = datetime.fromisoformat(state["watermark"])
    eng = engine()
    assert not eng.due(state, wm)
    due_now = [w for w, ws in state["windows"].items() if not ws["closed"]]
    assert all(datetime.fromisoformat(state["windows"][w]["end"]) + GRACE > wm for w in due_now)


# --- the timer: which tenants get a tick, and what is sent ---------------------------


def test_tenants_due_picks_tenants_with_a_window_past_end_plus_grace() -> None:
    eng = engine()
    quiet, _, _ = priced_october(eng)  # October open
    busy: dict[str, Any] = new_state("b")
    eng.process(busy, {}, event(1, tenant="b", t=OCT_END + timedelta(days=3), api_calls=1))
    settled = copy.deepcopy(quiet)
    settled["tenant"] = "c"
    eng.close_all(settled)
    states = [("a", quiet), ("b", busy), ("c", settled), ("d", None), ("e", new_state("e"))]
    assert tenants_due(eng, states, OCT_END + GRACE - timedelta(microseconds=1)) == []
    assert tenants_due(eng, states, OCT_END + GRACE) == ["a"]
    dec_end = datetime(2026, 12, 1, tzinfo=UTC)
    assert tenants_due(eng, states, dec_end + GRACE) == ["a", "b"]


class _Topic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, *, key: bytes, value: bytes) -> None:
        self.sent.append((key, value))


def test_pricing_tick_sends_one_window_tick_per_due_tenant_keyed_by_tenant() -> None:
    from nodemeter_stream.agents.pricing import Pricing

    eng = engine()
    quiet, _, _ = priced_october(eng)
    now = OCT_END + timedelta(days=1)
    pricing = Pricing.__new__(Pricing)  # no Faust app: only what tick() uses
    pricing.engine, pricing.clock = eng, lambda: now
    pricing.tenants = {"a": quiet, "b": new_state("b")}
    pricing.source = _Topic()  # type: ignore[assignment]
    pricing.m_ticks = Counter("ticks", "t", registry=CollectorRegistry())
    assert asyncio.run(pricing.tick()) == ["a"]
    assert [(k, decode_payload(v)) for k, v in pricing.source.sent] == [  # type: ignore[attr-defined]
        (b"a", ("window_tick", {"tenant": "a", "as_of": now}))
    ]
    assert quiet["windows"]["2026-10"]["closed"] is False  # the timer prices nothing


def test_tick_interval_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from nodemeter_stream.agents.pricing import tick_interval_from_env

    monkeypatch.delenv("NODEMETER_PRICING_TICK_S", raising=False)
    assert tick_interval_from_env() == 300.0
    monkeypatch.setenv("NODEMETER_PRICING_TICK_S", "0")
    assert tick_interval_from_env() == 0.0
