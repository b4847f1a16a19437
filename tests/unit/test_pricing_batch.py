"""Batch pricing against stored state, with crashes between the steps of a batch.

The worker writes lines to ClickHouse, then stores the tenant state and the per-event
records (two changelog tables: either may be stored without the other when it dies),
then acks. Whatever is lost, replaying from the last acked offset must give the same
lines as a run without a crash.
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
from nodemeter_stream.pricing import PricingEngine, parse_documents
from nodemeter_stream.pricing.batch import Item, price_batch
from nodemeter_stream.pricing.lines import PricedLine

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
    out = []
    for i, q in enumerate(qs):
        tenant = "a" if i % 3 else "b"
        ev = UsageEvent(
            event_id=f"e{i}", tenant=tenant, request_id=f"r{i}", node_id="n", span_id="s",
            event_time=T0 + timedelta(hours=5 * i), meters=Meters(api_calls=q, custom={"pages": 7 * q}),
        )  # fmt: skip
        # keyed by tenant: one partition per tenant, offsets in order
        out.append(Item("t", 0 if tenant == "a" else 1, i, tenant.encode(), encode_record(ev)))
    return out


class FakeClickHouse:
    """ReplacingMergeTree on line_id plus insert_deduplication_token, as the tables do."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.lines: dict[str, PricedLine] = {}
        self.alerts: dict[str, Any] = {}

    def insert(self, token: str, lines: list[PricedLine], alerts: list[Any]) -> None:
        if token in self.tokens:
            return
        self.tokens.add(token)
        self.lines.update({ln.line_id: ln for ln in lines})
        self.alerts.update({a.alert_id: a for a in alerts})


def run(batches: list[list[Item]], crash: dict[int, str]) -> FakeClickHouse:
    """Process batches; at a batch in ``crash`` die after the ClickHouse write, having
    stored 'state', 'seen', 'both' or 'none' of the tables, and replay from it."""
    eng, ch = engine(), FakeClickHouse()
    tenants: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    i = 0
    crashed: set[int] = set()
    while i < len(batches):
        batch = batches[i]
        res = price_batch(
            eng,
            batch,
            get_state=tenants.get,
            get_seen=seen.get,
            seen_items=lambda: list(seen.items()),
        )
        token = f"{batch[0].offset}-{batch[-1].offset}"
        ch.insert(token, res.lines, res.alerts)
        what = crash.get(i) if i not in crashed else None
        if what in ("state", "both", None):
            tenants.update({t: copy.deepcopy(s) for t, (_, s) in res.states.items()})
        if what in ("seen", "both", None):
            for k, (_, v) in res.seen.items():
                if v is None:
                    seen.pop(k, None)
                else:
                    seen[k] = copy.deepcopy(v)
        if what is not None:
            crashed.add(i)
            continue  # not acked: the same batch is delivered again
        i += 1
    return ch


def totals(ch: FakeClickHouse) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for ln in ch.lines.values():
        out[(ln.tenant, ln.window_id)] = out.get((ln.tenant, ln.window_id), Decimal(0)) + ln.amount
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 60), min_size=2, max_size=30),
    st.integers(1, 6),
    st.dictionaries(
        st.integers(0, 29), st.sampled_from(["state", "seen", "both", "none"]), max_size=4
    ),
)
def test_a_crash_anywhere_in_a_batch_changes_nothing(
    qs: list[int], size: int, crash: dict[int, str]
) -> None:
    its = items(qs)
    batches = [its[k : k + size] for k in range(0, len(its), size)]
    clean = run(batches, {})
    crashed = run(batches, crash)
    assert totals(crashed) == totals(clean)
    assert set(crashed.lines) == set(clean.lines)
    assert set(crashed.alerts) == set(clean.alerts)


def test_a_resend_at_a_new_offset_is_a_duplicate() -> None:
    its = items([10, 20, 30])
    resend = Item("t", its[1].partition, 99, its[1].key, its[1].value)
    once = run([its], {})
    twice = run([its, [resend]], {})
    assert totals(twice) == totals(once)
