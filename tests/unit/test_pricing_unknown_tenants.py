"""Unknown tenants: priced with the defaults, or refused with a reason (dead letter)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from nodemeter.codec import encode_record
from nodemeter.events import Meters, UsageEvent, event_id_for
from nodemeter_stream.pricing.batch import Item, price_batch
from nodemeter_stream.pricing.book import PriceBookError, parse_documents
from nodemeter_stream.pricing.engine import PricingEngine

BOOK = {
    "price_book": {
        "name": "default",
        "currency": "USD",
        "versions": [
            {
                "version": 1,
                "effective_from": "2026-01-01T00:00:00Z",
                "rates": [{"meter": "api_calls", "charge": "flat", "unit_price": "0.01"}],
            }
        ],
    }
}


def config(policy: str | None) -> Any:
    plans: dict[str, Any] = {"tenants": {"acme": {"price_book": "default"}}}
    if policy is not None:
        plans["unknown_tenants"] = policy
    return parse_documents([("book.yaml", BOOK), ("tenants.yaml", plans)])


def item(tenant: str, offset: int) -> Item:
    ev = UsageEvent(
        event_id=event_id_for(tenant, "r1", "s1", 0), tenant=tenant, request_id="r1",
        node_id="db.query", span_id="s1", event_time=datetime(2026, 11, 2, tzinfo=UTC),
        meters=Meters(api_calls=3),
    )  # fmt: skip
    # forwarded by the ingest agent from the usage topic (partition 2, offset 100 + n)
    return Item("usage-by-tenant", 0, offset, tenant.encode(), encode_record(ev),
                ingest=("usage", 2, 100 + offset))  # fmt: skip


def run(cfg: Any, items: list[Item]) -> Any:
    states: dict[str, Any] = {}
    return price_batch(PricingEngine(cfg), items, get_state=states.get)


def test_default_policy_prices_unlisted_tenants_with_the_defaults() -> None:
    cfg = config(None)
    assert cfg.unknown_tenants == "default" and cfg.knows("umbrella")
    res = run(cfg, [item("umbrella", 0)])
    assert not res.rejected
    assert [(ln.tenant, ln.meter, ln.amount) for ln in res.lines] == [
        ("umbrella", "api_calls", Decimal("0.03"))
    ]


def test_reject_policy_dead_letters_unlisted_tenants_and_prices_listed_ones() -> None:
    cfg = config("reject")
    assert cfg.knows("acme") and not cfg.knows("umbrella")
    res = run(cfg, [item("umbrella", 0), item("acme", 1)])
    assert [(r.reason, r.tenant) for r in res.rejected] == [("unknown_tenant", "umbrella")]
    assert "unknown_tenants: reject" in res.rejected[0].detail
    assert {ln.tenant for ln in res.lines} == {"acme"}
    assert res.priced == 1


def test_the_dead_letter_of_a_rejected_event_names_its_usage_topic_position() -> None:
    from nodemeter_stream.agents.pricing import Pricing

    res = run(config("reject"), [item("acme", 0), item("umbrella", 1)])
    (rejected,) = res.rejected
    pricing = Pricing.__new__(Pricing)  # no Faust app: only what dead_letter() uses
    dl = pricing.dead_letter(rejected)
    assert (dl.source.topic, dl.source.partition, dl.source.offset) == ("usage", 2, 101)
    assert (dl.reason, dl.tenant, dl.key) == ("unknown_tenant", "umbrella", b"umbrella")
    assert dl.payload == item("umbrella", 1).value and dl.event_id == rejected.event_id
    # its ingest offset counts as handled: forwarded again, it is a duplicate, not rejected
    again = price_batch(
        PricingEngine(config("reject")), [item("umbrella", 1)],
        get_state={t: s for t, (_, s) in res.states.items()}.get,
    )  # fmt: skip
    assert again.duplicates == 1 and not again.rejected


def test_a_bad_policy_is_a_clear_load_error() -> None:
    with pytest.raises(PriceBookError, match="unknown_tenants: must be 'default' or 'reject'"):
        config("ignore")
