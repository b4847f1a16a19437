"""Where ``price_batch`` runs: in the worker's event loop, or in a process of its own.

Pricing is pure CPU work in Python (Decimal arithmetic, window and budget state), the
largest share of the worker's time per event, and CPython runs one thread of Python at
a time: in the event loop it competes with Faust's intake and the ingest agent for one
core. :class:`ProcessPricer` runs it in one child process (``spawn``: the child holds no
Kafka client, no chDB and no thread of the worker), on another core, while the loop
reads, ingests and writes. The loop keeps everything with an effect: the tenant
states of record, the writes, the sends, the acks. The child only computes, from
what each call hands it (the batch's items and the states of the tenants they name),
so it holds nothing that a crash could lose: a worker killed mid-batch leaves a child
that exits when its pipe closes, and the batch is priced again from the stored state,
identically (``price_batch`` is deterministic given the states and the order).

A tenant's state is handed to the child only if the batch names the tenant in a
record key (forwards and ticks are keyed by tenant). Should a record decode to another
tenant that this worker holds state for, the child says so (:class:`NeedsState`) and
the batch is priced again with that state: never from a fresh state by mistake.

``NODEMETER_PRICING_PROCESS=1`` turns it on; the default (0) keeps pricing in the event
loop (:class:`InlinePricer`), as do the tests that hand the agent an engine of their
own. ``bench/bench_worker.py`` measures both (docs/worker.md): on this project's 2-core
machine the child finds no free core, so it is off by default; it is for machines
where the worker has cores to spare.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from nodemeter.errors import ConfigError
from nodemeter_stream.pricing import PricingEngine
from nodemeter_stream.pricing.batch import BatchResult, Item, price_batch

log = logging.getLogger("nodemeter.pricing")

States = Mapping[str, dict[str, Any]]


class NeedsState(Exception):
    """The child met a tenant whose state it was not given (and the worker holds one)."""

    def __init__(self, tenant: str) -> None:
        super().__init__(tenant)
        self.tenant = tenant


class Pricer(Protocol):
    async def start(self) -> None: ...

    async def price(self, items: list[Item], states: States) -> BatchResult: ...

    def close(self) -> None: ...


def batch_tenants(items: list[Item]) -> set[str]:
    """The tenants the batch's record keys name (forwards and ticks are keyed by tenant)."""
    return {it.key.decode("utf-8", "replace") for it in items if it.key}


def price_with(
    engine: PricingEngine, items: list[Item], given: States, held: frozenset[str]
) -> BatchResult:
    """``price_batch`` on the ``given`` states; a tenant in ``held`` but not given raises
    :class:`NeedsState` (a tenant in neither starts from a new state, as inline)."""

    def get_state(tenant: str) -> Any:
        if tenant in given:
            return given[tenant]
        if tenant in held:
            raise NeedsState(tenant)
        return None

    return price_batch(engine, items, get_state=get_state)


class InlinePricer:
    """``price_batch`` in the event loop (the states are read, never modified)."""

    def __init__(self, engine: PricingEngine) -> None:
        self.engine = engine

    async def start(self) -> None:
        pass

    async def price(self, items: list[Item], states: States) -> BatchResult:
        return price_batch(self.engine, items, get_state=states.get)

    def close(self) -> None:
        pass


_ENGINE: PricingEngine | None = None  # the child's engine


def _child_init(engine: PricingEngine) -> None:
    global _ENGINE
    _ENGINE = engine
    # A signal to the worker's process group is the worker's to handle: it drains and
    # then shuts this process down (a child killed first would break the batch in flight)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _child_ready() -> bool:
    return _ENGINE is not None


def _child_price(items: list[Item], given: States, held: frozenset[str]) -> BatchResult:
    assert _ENGINE is not None, "the pricing process was started without an engine"
    return price_with(_ENGINE, items, given, held)


class ProcessPricer:
    """``price_batch`` in one child process (see the module docstring)."""

    def __init__(self, engine: PricingEngine) -> None:
        self.engine = engine
        self._pool: ProcessPoolExecutor | None = None
        self.calls = 0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init,
                initargs=(self.engine,),
            )
        return self._pool

    async def start(self) -> None:
        """Start the child now (a spawn takes a second or two), not with the first
        batch: records would queue up behind it."""
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(self._executor(), _child_ready)
        assert ready, "the pricing process has no engine"
        log.info("pricing process started")

    async def price(self, items: list[Item], states: States) -> BatchResult:
        loop = asyncio.get_running_loop()
        names = batch_tenants(items)
        held = frozenset(states)
        restarted = False
        while True:
            given = {t: states[t] for t in names if t in states}
            try:
                self.calls += 1
                return await loop.run_in_executor(
                    self._executor(), _child_price, items, given, held
                )
            except NeedsState as exc:
                log.warning("a record of tenant %r came under another key; pricing the "
                            "batch again with its state", exc.tenant)  # fmt: skip
                names.add(exc.tenant)
            except BrokenProcessPool as exc:
                # the child died (killed, out of memory): nothing of it was applied;
                # start another and price the batch again, once
                self.close()
                if restarted:
                    raise
                log.error("the pricing process died (%r); starting another", exc)
                restarted = True

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def pricer_from_env(engine: PricingEngine) -> Pricer:
    """``NODEMETER_PRICING_PROCESS``: 1, price in a child process; 0 (the default): in
    the event loop. On a 2-core machine the child found no free core (the broker and
    chDB's threads take it): no faster there, slower under load (docs/worker.md)."""
    raw = os.environ.get("NODEMETER_PRICING_PROCESS", "0").strip()
    if raw not in ("0", "1"):
        raise ConfigError(f"NODEMETER_PRICING_PROCESS must be 0 or 1, not {raw!r}")
    return ProcessPricer(engine) if raw == "1" else InlinePricer(engine)
