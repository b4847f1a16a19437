"""Pricing in a child process (agents/pricer.py): the same result as in the event loop.

Real child processes (``spawn``) run the real engine on the example price books; the
reference is ``price_batch`` called directly on the same items and states.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodemeter.codec import encode_record
from nodemeter.errors import ConfigError
from nodemeter.events import Meters, UsageEvent
from nodemeter_stream.agents.pricer import (
    InlinePricer,
    ProcessPricer,
    batch_tenants,
    pricer_from_env,
)
from nodemeter_stream.pricing import PricingEngine, load_config
from nodemeter_stream.pricing.batch import BatchResult, Item, price_batch
from nodemeter_stream.pricing.book import EXAMPLES_DIR

T0 = datetime(2026, 11, 3, 9, tzinfo=UTC)


def engine() -> PricingEngine:
    return PricingEngine(load_config(EXAMPLES_DIR), keep_lines=False)


def items(n: int, *, start: int = 0, key_of: Any = None) -> list[Item]:
    out = []
    for i in range(start, start + n):
        tenant = ("acme", "globex", "initech")[i % 3]
        ev = UsageEvent(
            event_id=f"e{i}", tenant=tenant, request_id=f"r{i // 4}", node_id="llm",
            span_id=f"s{i}", event_time=T0 + timedelta(minutes=7 * i), workflow="support",
            model="gpt-4o", meters=Meters(input_tokens=900 + i, output_tokens=250,
                                          cached_input_tokens=300, api_calls=1),
        )  # fmt: skip
        key = (key_of or (lambda t: t))(tenant).encode()
        out.append(Item("usage-by-tenant", i % 3, i, key, encode_record(ev),
                        ingest=("usage", 0, i)))  # fmt: skip
    return out


def summary(res: BatchResult) -> dict[str, Any]:
    return {
        "lines": sorted(ln.row() for ln in res.lines),
        "alerts": sorted(a.alert_id for a in res.alerts),
        "states": res.states,
        "budget_records": res.budget_records,
        "counts": (res.priced, res.duplicates, len(res.rejected)),
    }


def reference(batches: list[list[Item]]) -> list[dict[str, Any]]:
    """Each batch priced inline, the states carried from batch to batch as the agent does."""
    eng, states, out = engine(), {}, []
    for b in batches:
        res = price_batch(eng, b, get_state=states.get)
        states.update({t: st for t, (_, st) in res.states.items()})
        out.append(summary(res))
    return out


def run_pricer(pricer: Any, batches: list[list[Item]], between: Any = None) -> list[Any]:
    async def scenario() -> list[dict[str, Any]]:
        states: dict[str, Any] = {}
        out = []
        for i, b in enumerate(batches):
            if between is not None and i:
                between(pricer)
            held = copy.deepcopy(states)
            res = await pricer.price(b, states)
            assert states == held  # the worker's states are read, never modified
            states.update({t: st for t, (_, st) in res.states.items()})
            out.append(summary(res))
        return out

    try:
        return asyncio.run(scenario())
    finally:
        pricer.close()


BATCHES = [items(60), items(60, start=60), items(45, start=120)]


def test_a_child_process_prices_exactly_as_the_event_loop() -> None:
    want = reference(BATCHES)
    assert sum(len(w["lines"]) for w in want) > 300  # lines of several meters and tenants
    assert run_pricer(ProcessPricer(engine()), BATCHES) == want
    assert run_pricer(InlinePricer(engine()), BATCHES) == want


def test_a_record_under_another_tenants_key_is_priced_with_its_own_state() -> None:
    # the third batch's acme records come under globex's key: acme's state is not
    # handed over with the batch, the child asks for it and the batch is priced again
    odd = items(45, start=120, key_of=lambda t: "globex" if t == "acme" else t)
    assert "acme" not in batch_tenants(odd)
    want = reference([*BATCHES[:2], odd])
    pricer = ProcessPricer(engine())
    got = run_pricer(pricer, [*BATCHES[:2], odd])
    assert got == want
    assert pricer.calls == 4  # three batches, the third twice


def test_a_killed_pricing_process_is_replaced_and_the_batch_priced_again() -> None:
    def kill_child(pricer: Any) -> None:
        pool = pricer._pool
        assert pool is not None
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)

    want = reference(BATCHES)
    pricer = ProcessPricer(engine())
    assert run_pricer(pricer, BATCHES, between=kill_child) == want


@pytest.mark.parametrize(("raw", "kind"), [(None, InlinePricer), ("0", InlinePricer),
                                           ("1", ProcessPricer)])  # fmt: skip
def test_the_pricing_process_is_off_by_default_and_can_be_turned_on(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, kind: type
) -> None:
    if raw is None:
        monkeypatch.delenv("NODEMETER_PRICING_PROCESS", raising=False)
    else:
        monkeypatch.setenv("NODEMETER_PRICING_PROCESS", raw)
    assert isinstance(pricer_from_env(engine()), kind)


def test_a_bad_pricing_process_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEMETER_PRICING_PROCESS", "yes")
    with pytest.raises(ConfigError, match="NODEMETER_PRICING_PROCESS must be 0 or 1, not 'yes'"):
        pricer_from_env(engine())
