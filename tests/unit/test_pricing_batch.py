"""Batch pricing against stored state, with crashes between the steps of a batch.

Per batch the agent writes its lines to ClickHouse, then stores the tenant states with
the progress of record in one insert, then acks (``agents.effects.apply_batch``). A
crash before that insert re-applies the batch from the old states, in doubt: lines
already stored are dropped by a lookup. The ingest agent, re-applying one of its own
batches, forwards the same events again (same ingest offsets, new usage-by-tenant
offsets): pricing skips them by the ingest offsets kept in the tenant state.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nodemeter.codec import encode_record
from nodemeter.events import Meters, UsageEvent
from nodemeter_stream.ingest import forward
from nodemeter_stream.pricing import PricingEngine, parse_documents
from nodemeter_stream.pricing.batch import INGESTED, Item, price_batch
from nodemeter_stream.pricing.lines import PricedLine
from nodemeter_stream.sink.progress import PartitionProgress

T0 = datetime(2026, 10, 1, tzinfo=UTC)
BOOKS = {
    "price_book": {
        "name": "default",
        "versions": [{
            "version": 1, "effective_from": "2026-01-01T00:00:00Z", "credit_grant": "3",
            "rates": [
                {"meter": "custom:pages", "charge": "graduated",
                 "tiers": [{"up_to": 500, "unit_price": "0.01"}, {"unit_price": "0.004"}]},
                {"meter": "api_calls", "charge": "volume", "included_units": 50,
                 "tiers": [{"up_to": 200, "unit_price": "0.02"}, {"unit_price": "0.01"}]},
            ],
        }],
    },
    "defaults": {"budgets": [{"name": "m", "amount": "8", "thresholds": [25, 50, 100]}]},
}  # fmt: skip


def engine() -> PricingEngine:
    return PricingEngine(parse_documents([("t", BOOKS)]), keep_lines=False)


def items(qs: list[int]) -> list[Item]:
    """Forwarded events of tenants a and b; usage-topic position (partition 3, i)."""
    out = []
    for i, q in enumerate(qs):
        tenant = "a" if i % 3 else "b"
        ev = UsageEvent(
            event_id=f"e{i}", tenant=tenant, request_id=f"r{i}", node_id="n", span_id="s",
            event_time=T0 + timedelta(hours=5 * i), meters=Meters(api_calls=q, custom={"pages": 7 * q}),
        )  # fmt: skip
        # keyed by tenant: one usage-by-tenant partition per tenant, offsets in order
        out.append(
            Item("t", 0 if tenant == "a" else 1, i, tenant.encode(), encode_record(ev),
                 ingest=("usage", 3, i))
        )  # fmt: skip
    return out


class FakeClickHouse:
    """priced_lines and budget_alerts with insert_deduplication_token, as the sink
    writes them; every row that reaches a table is kept (a rollup would count it)."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.lines: list[PricedLine] = []
        self.alerts: dict[str, Any] = {}

    def insert(self, token: str, lines: list[PricedLine], alerts: list[Any]) -> None:
        if token in self.tokens:
            return
        self.tokens.add(token)
        self.lines += lines
        self.alerts.update({a.alert_id: a for a in alerts})

    def stored_lines(self, ids: set[str]) -> set[str]:
        return ids & {ln.line_id for ln in self.lines}


def doubtful(batch: list[Item]) -> list[Item]:
    return [Item(i.topic, i.partition, i.offset, i.key, i.value, ingest=i.ingest, doubt=True)
            for i in batch]  # fmt: skip


def run(batches: list[list[Item]], crash: dict[int, str]) -> FakeClickHouse:
    """Process batches as the agent does; at a batch in ``crash`` die 'before' the lines
    are written or 'after' (lines stored, states + progress not). Its records come again
    from the stored states, in doubt, and in other batches (halves: other insert tokens,
    so only the lookup keeps a line from being stored twice)."""
    eng, ch = engine(), FakeClickHouse()
    tenants: dict[str, Any] = {}
    queue = [(b, crash.get(i)) for i, b in enumerate(batches)]
    while queue:
        batch, what = queue.pop(0)
        res = price_batch(eng, batch, get_state=tenants.get)
        stored = ch.stored_lines(res.doubt_lines)
        lines = [ln for ln in res.lines if ln.line_id not in stored]
        if what != "before":
            ch.insert(f"{batch[0].offset}-{batch[-1].offset}", lines, res.alerts)
        if what is not None:
            half = max(1, len(batch) // 2)
            again = [doubtful(batch[:half]), doubtful(batch[half:])]
            queue[:0] = [(b, None) for b in again if b]
            continue  # not recorded: applied again
        tenants.update({t: copy.deepcopy(s) for t, (_, s) in res.states.items()})
    return ch


def totals(ch: FakeClickHouse) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for ln in ch.lines:
        out[(ln.tenant, ln.window_id)] = out.get((ln.tenant, ln.window_id), Decimal(0)) + ln.amount
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 60), min_size=2, max_size=30),
    st.integers(1, 6),
    st.dictionaries(st.integers(0, 29), st.sampled_from(["before", "after"]), max_size=4),
)
def test_a_crash_anywhere_in_a_batch_changes_nothing(
    qs: list[int], size: int, crash: dict[int, str]
) -> None:
    its = items(qs)
    batches = [its[k : k + size] for k in range(0, len(its), size)]
    clean = run(batches, {})
    crashed = run(batches, crash)
    assert totals(crashed) == totals(clean)
    ids = [ln.line_id for ln in crashed.lines]
    assert len(ids) == len(set(ids)) and set(ids) == {ln.line_id for ln in clean.lines}
    assert set(crashed.alerts) == set(clean.alerts)


def test_a_crash_before_the_state_is_stored_reprices_identically() -> None:
    eng, batch = engine(), items([10, 20, 30, 40])
    tenants: dict[str, Any] = {}
    first = price_batch(eng, batch, get_state=tenants.get)
    assert tenants == {}  # the stored states are left as they were
    again = price_batch(eng, doubtful(batch), get_state=tenants.get)
    view = [(ln.line_id, ln.line_kind, ln.amount) for ln in first.lines]
    assert view and [(ln.line_id, ln.line_kind, ln.amount) for ln in again.lines] == view
    assert [a.alert_id for a in again.alerts] == [a.alert_id for a in first.alerts]
    assert first.doubt_lines == set() and again.doubt_lines == {ln.line_id for ln in again.lines}
    assert again.states == first.states


def test_a_forwarded_event_re_applied_is_a_duplicate() -> None:
    # the ingest agent re-applied its batch after a crash: the same events come again,
    # at new usage-by-tenant offsets but the same ingest offsets
    eng, its = engine(), items([10, 20, 30])
    tenants: dict[str, Any] = {}
    first = price_batch(eng, its, get_state=tenants.get)
    tenants.update({t: s for t, (_, s) in first.states.items()})
    assert tenants["a"][INGESTED] == {"3": 2} and tenants["b"][INGESTED] == {"3": 0}
    resent = [Item(i.topic, i.partition, 10 + i.offset, i.key, i.value, ingest=i.ingest)
              for i in its]  # fmt: skip
    res = price_batch(eng, resent, get_state=tenants.get)
    assert res.duplicates == 3 and res.priced == 0
    assert not res.lines and not res.alerts and not res.rejected
    # within one batch too
    both = price_batch(eng, [*its, *resent], get_state={}.get)
    assert both.priced == 3 and both.duplicates == 3
    assert {ln.line_id for ln in both.lines} == {ln.line_id for ln in first.lines}


def test_a_resend_at_a_new_ingest_offset_in_the_batch_is_a_duplicate() -> None:
    its = items([10, 20, 30])
    resend = Item("t", its[1].partition, 99, its[1].key, its[1].value, ingest=("usage", 3, 7))
    res = price_batch(engine(), [*its, resend], get_state={}.get)
    assert res.priced == 3 and res.duplicates == 1
    once = price_batch(engine(), its, get_state={}.get)
    assert {ln.line_id: ln.amount for ln in res.lines} == {
        ln.line_id: ln.amount for ln in once.lines
    }


# --- the agent's unpacking of forward records (no Faust: only what items() uses) -------


class _Gate:
    def __init__(self, doubt_until: int) -> None:
        self.pp = PartitionProgress(applied=-1, doubt_until=doubt_until)

    def in_doubt(self, partition: int, offset: int) -> bool:
        return self.pp.classify(offset) == "doubt"


class _Message:
    def __init__(self, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = "usage-by-tenant", partition, offset


class _Event:
    def __init__(self, key: bytes, value: bytes, partition: int, offset: int) -> None:
        self.key, self.value, self.message = key, value, _Message(partition, offset)


def test_forward_records_unpack_into_one_item_per_event() -> None:
    from nodemeter_stream.agents.pricing import Pricing

    its = items([10, 20])
    pricing = Pricing.__new__(Pricing)
    pricing.usage_topic = "usage"
    pricing.gate = _Gate(doubt_until=5)  # type: ignore[assignment]
    record = forward.encode([forward.Entry(3, 0, its[0].value), forward.Entry(3, 1, its[1].value)])
    out = pricing.items([_Event(b"a", record, 1, 5), _Event(b"a", b"NMF1\x05", 1, 6)])
    assert [(i.partition, i.offset, i.ingest, i.doubt, i.value) for i in out[:2]] == [
        (1, 5, ("usage", 3, 0), True, its[0].value),
        (1, 5, ("usage", 3, 1), True, its[1].value),
    ]
    # a malformed forward record becomes one item as it is (rejected by price_batch)
    assert [(i.offset, i.ingest, i.doubt) for i in out[2:]] == [(6, None, False)]
    res = price_batch(engine(), out, get_state={}.get)
    assert res.priced == 2 and [r.reason for r in res.rejected] == ["truncated"]
