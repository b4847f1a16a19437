"""Agent ``price_usage``: usage-by-tenant topic -> priced lines, budget alerts, budget state.

Per batch (``intake.batches``, concurrency 1; the topic is keyed by tenant, so one agent
sees all of a tenant's records in order), behind the :class:`~agents.effects.Gate`
(progress of record, skip what is applied, offset order):

1. unpack the forward records (one per tenant and ingest batch) and price them against
   the tenant states held in memory (``pricing.batch.price_batch``, pure);
2. run the effects in order (``effects.apply_batch``): intent -> priced_lines,
   budget_alerts, dead_letters -> alerts, budget-state records and dead letters to
   Kafka -> tenant states + progress of record, in one insert;
3. ack the batch.

A batch in doubt after a crash (its intent is newer than its progress) is priced again
from the recorded states; the lines it produced that are already stored are dropped by
a lookup, so no rollup counts a line twice. An alert can be sent again (same
``alert_id``), never lost.

Configuration (environment): ``NODEMETER_PRICEBOOKS`` (file or directory; default the
example set shipped in ``nodemeter_stream/pricing/examples``),
``NODEMETER_PRICING_GRACE_S`` (3600), ``NODEMETER_PRICING_RETENTION_S`` (40 days) and
``NODEMETER_PRICING_TICK_S`` (300; 0 disables the tick timer).

Tick timer: every ``NODEMETER_PRICING_TICK_S`` seconds, for each tenant in the local
tenant-state table with a billing window due to close (``end + grace`` passed on the
wall clock), it appends a WindowTick (``as_of`` = now) to the usage-by-tenant topic,
keyed by the tenant. The tick is priced in order by the agent like an event (it
settles the windows due); the timer itself prices nothing, so a replay of the log
settles at the same place. A tick that finds nothing due (a duplicate, or one sent
from a standby copy of the table) is a no-op.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter

from nodemeter.codec import encode_payload
from nodemeter_stream.agents.effects import Gate, apply_batch, spans_of
from nodemeter_stream.agents.intake import ack_events, batches, raw_topic
from nodemeter_stream.app import Worker
from nodemeter_stream.ingest import forward
from nodemeter_stream.ingest.decode import DeadLetter, Source
from nodemeter_stream.ingest.rows import DEAD_LETTER_COLUMNS, dead_letter_row
from nodemeter_stream.pricing import PricingEngine, load_config
from nodemeter_stream.pricing.batch import BatchResult, Item, Rejected, price_batch, tenants_due
from nodemeter_stream.pricing.book import EXAMPLES_DIR
from nodemeter_stream.pricing.lines import PRICED_LINE_COLUMNS
from nodemeter_stream.pricing.records import (
    BUDGET_ALERT_COLUMNS,
    PRICE_BOOK_COLUMNS,
    alert_row,
    encode_alert,
    encode_budget_state,
    encode_tick,
    price_book_rows,
    price_book_token,
)
from nodemeter_stream.sink.clickhouse import Block, SinkStopped
from nodemeter_stream.sink.progress import encode_state, state_row
from nodemeter_stream.sink.state import StateStore
from nodemeter_stream.sink.tokens import offsets_token

log = logging.getLogger("nodemeter.pricing")

SCOPE = "tenant"


def engine_from_env() -> PricingEngine:
    path = os.environ.get("NODEMETER_PRICEBOOKS") or str(EXAMPLES_DIR)
    if "NODEMETER_PRICEBOOKS" not in os.environ:
        log.warning(
            "NODEMETER_PRICEBOOKS not set: pricing with the example price books in %s", path
        )
    grace = float(os.environ.get("NODEMETER_PRICING_GRACE_S", "3600"))
    retention = float(os.environ.get("NODEMETER_PRICING_RETENTION_S", str(40 * 86400)))
    # keep_lines=False: the state is stored only after ClickHouse acknowledged the lines
    return PricingEngine(
        load_config(path),
        grace=timedelta(seconds=grace),
        retention=timedelta(seconds=retention),
        keep_lines=False,
    )


def tick_interval_from_env() -> float:
    """``NODEMETER_PRICING_TICK_S`` (default 300); 0 (or less) disables the tick timer."""
    return float(os.environ.get("NODEMETER_PRICING_TICK_S", "300"))


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Pricing:
    def __init__(
        self, worker: Worker, engine: PricingEngine, *, clock: Callable[[], datetime] = wall_clock
    ) -> None:
        self.worker, self.engine, self.sink = worker, engine, worker.sink
        self.clock = clock
        app, cfg, topics = worker.app, worker.config, worker.config.topics
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.source = raw_topic(app, topics.usage_by_tenant)
        self.alerts_topic = app.topic(topics.budget_alerts, **raw)
        self.state_topic = app.topic(topics.budget_state, **raw)
        self.dlq = app.topic(topics.dlq, **raw)
        self.usage_topic = topics.usage
        self.store = StateStore(self.sink, group=cfg.app_id)
        self.tenants: dict[str, dict[str, Any]] = {}  # tenant -> state (this worker's)
        self.books_written = False
        self.unstored = 0  # records given up on because the sink stopped (see ingest)
        self.gate = Gate(
            app, "price_usage", store=self.store, topic=topics.usage_by_tenant,
            scopes=(SCOPE,), on_recover=self.recovered,
        )  # fmt: skip
        r = worker.metrics.registry
        self.m_lines = Counter("nodemeter_priced_lines", "Priced lines written", registry=r)
        self.m_alerts = Counter("nodemeter_budget_alerts", "Budget alerts sent", registry=r)
        self.m_events = Counter(
            "nodemeter_priced_events", "Usage events priced", ["kind"], registry=r
        )
        self.m_ticks = Counter("nodemeter_window_ticks", "Window ticks sent", registry=r)
        self.m_fallback = Counter(
            "nodemeter_priced_lines_fallback",
            "Usage lines priced by a generic rate: the model or GPU type has no rate or alias",
            ["meter"],
            registry=r,
        )

    def recovered(self, partitions: list[int], rows: list[Any]) -> None:
        self.tenants = {r.key: json.loads(r.value) for r in rows}

    async def write_price_books(self) -> None:
        rows = price_book_rows(self.engine.config)
        await self.sink.write(
            [
                Block(
                    table="price_book_rates",
                    columns=PRICE_BOOK_COLUMNS,
                    rows=rows,
                    token=price_book_token(rows),
                )
            ]
        )

    def items(self, events: list[Any]) -> list[Item]:
        """Forward records unpacked into one item per event; ticks as they are."""
        out: list[Item] = []
        for e in events:
            m = e.message
            doubt = self.gate.in_doubt(m.partition, m.offset)
            value, key = e.value or b"", e.key or b""
            if forward.is_forward(value):
                try:
                    entries = forward.decode(value)
                except forward.ForwardError as exc:
                    log.error("%s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
                    out.append(Item(m.topic, m.partition, m.offset, key, value, doubt=doubt))
                    continue
                for en in entries:
                    out.append(Item(m.topic, m.partition, m.offset, key, en.payload,
                                    ingest=(self.usage_topic, en.partition, en.offset),
                                    doubt=doubt))  # fmt: skip
            else:
                out.append(Item(m.topic, m.partition, m.offset, key, value, doubt=doubt))
        return out

    async def process(self, events: list[Any], *, redo: bool = False) -> BatchResult:
        """Price and apply one batch; ``redo``: the batch in doubt re-formed whole,
        whose lines go out as first computed, stored or not (see ``Gate.admit``)."""
        if not self.books_written:
            # with the first batch, not in a task of its own: while ClickHouse is down
            # the agent waits in the sink like every other write, and stops cleanly
            await self.write_price_books()
            self.books_written = True
        items = self.items(events)
        sources = [Source(topic=e.message.topic, partition=e.message.partition,
                          offset=e.message.offset) for e in events]  # fmt: skip
        res = price_batch(self.engine, items, get_state=self.tenants.get)
        lines = res.lines
        if res.doubt_lines and not redo:
            by_window: dict[tuple[str, str], list[str]] = {}
            times: dict[tuple[str, str], tuple[datetime, datetime]] = {}
            for ln in lines:
                if ln.line_id in res.doubt_lines:
                    key = (ln.tenant, ln.window_id)
                    by_window.setdefault(key, []).append(ln.line_id)
                    lo, hi = times.get(key, (ln.event_time, ln.event_time))
                    times[key] = (min(lo, ln.event_time), max(hi, ln.event_time))
            stored = await self.store.stored_lines(by_window, times)
            if stored:
                log.warning("batch in doubt: %d of its lines were stored before a crash; "
                            "not inserting them again", len(stored))  # fmt: skip
                lines = [ln for ln in lines if ln.line_id not in stored]
        dead = [self.dead_letter(r) for r in res.rejected]
        blocks = [
            Block(table="priced_lines", columns=PRICED_LINE_COLUMNS,
                  rows=[ln.row() for ln in lines], token=offsets_token("priced_lines", sources)),
            Block(table="budget_alerts", columns=BUDGET_ALERT_COLUMNS,
                  rows=[alert_row(a) for a in res.alerts], token=offsets_token("budget_alerts", sources)),
            Block(table="dead_letters", columns=DEAD_LETTER_COLUMNS,
                  rows=[dead_letter_row(d) for d in dead], token=offsets_token("pricing_dead_letters", sources)),
        ]  # fmt: skip
        group, topic = self.store.group, self.source.get_topic_name()
        rows = [
            state_row(group, SCOPE, topic, p, tenant, encode_state(st), open_=True)
            for tenant, (p, st) in res.states.items()
        ]

        async def send() -> None:
            for alert in res.alerts:
                k, v = encode_alert(alert)
                # force=True: not attached to the current event (Faust would publish an
                # attached message only when the batch is acked, after this: a deadlock)
                fut = await self.alerts_topic.send(key=k, value=v, force=True)
                await fut  # on the broker before the batch is recorded as applied
            pending = [await self.send_dead_letter(d) for d in dead]
            for record in res.budget_records:
                k, v = encode_budget_state(record)
                pending.append(await self.state_topic.send(key=k, value=v, force=True))
            await asyncio.gather(*pending)

        spans = spans_of(events)
        await apply_batch(sink=self.sink, store=self.store, spans=spans, blocks=blocks,
                          send=send, states=rows, agent="price_usage",
                          whole=self.gate.whole(spans, redo))  # fmt: skip
        self.tenants.update({tenant: st for tenant, (_, st) in res.states.items()})
        self.gate.applied(spans)
        self.m_lines.inc(len(lines))
        generic = [ln for ln in lines if ln.rate_match == "generic"]
        for ln in generic:
            self.m_fallback.labels(meter=ln.meter).inc()
        if generic:
            names = sorted({(ln.tenant, ln.model, ln.gpu_type) for ln in generic})
            log.warning("%d line(s) priced by a generic rate (no rate or alias for the model "
                        "or GPU type): %s", len(generic), names[:10])  # fmt: skip
        self.m_alerts.inc(len(res.alerts))
        self.m_events.labels(kind="priced").inc(res.priced)
        self.m_events.labels(kind="duplicate").inc(res.duplicates)
        self.m_events.labels(kind="rejected").inc(len(res.rejected))
        log.info(
            "priced batch records=%d events=%d priced=%d duplicates=%d rejected=%d lines=%d "
            "alerts_sent=%d",
            len(events), len(items), res.priced, res.duplicates, len(res.rejected), len(lines),
            len(res.alerts),
        )  # fmt: skip
        return res

    async def tick(self) -> list[str]:
        """Send a WindowTick for every local tenant with a window due now; no pricing
        here (the tick is priced in order with the tenant's records)."""
        now = self.clock()
        due = tenants_due(self.engine, list(self.tenants.items()), now)
        for tenant in due:
            k, v = encode_tick(tenant, now)
            await self.source.send(key=k, value=v)
        if due:
            self.m_ticks.inc(len(due))
            log.info("window ticks sent tenants=%d as_of=%s", len(due), now.isoformat())
        return due

    def dead_letter(self, r: Rejected) -> DeadLetter:
        # a forwarded event's own position on the usage topic (one dead letter per record)
        t, p, o = r.item.ingest or (r.item.topic, r.item.partition, r.item.offset)
        src = Source(topic=t, partition=p, offset=o)
        return DeadLetter(
            reason=r.reason, detail=r.detail, source=src, key=r.item.key, payload=r.item.value,
            tenant=r.tenant, event_id=r.event_id,
        )  # fmt: skip

    async def send_dead_letter(self, d: DeadLetter) -> Any:
        value = encode_payload(
            "dead_letter",
            {
                "source_topic": d.source.topic, "source_partition": d.source.partition,
                "source_offset": d.source.offset, "reason": d.reason, "detail": d.detail[:2000],
                "tenant": d.tenant, "event_id": d.event_id or None, "record_key": d.key or None,
                "payload": d.payload, "received_at": datetime.now(UTC), "attributes": {"stage": "pricing"},
            },
        )  # fmt: skip
        headers = [("reason", d.reason.encode()), ("stage", b"pricing")]
        return await self.dlq.send(key=d.key or None, value=value, headers=headers, force=True)


def register(worker: Worker, engine: PricingEngine | None = None) -> Pricing:
    """Add the ``price_usage`` agent to the worker's app."""
    pricing = Pricing(worker, engine or engine_from_env())
    app, policy = worker.app, worker.config.batch_policy
    worker.extras["pricing"] = pricing

    worker.extras["pricing_order"] = pricing.gate.order

    @app.agent(pricing.source, concurrency=1, name="price_usage")
    async def price_usage(stream: Any) -> None:
        async for batch in batches(stream, policy.max_size, policy.max_wait_s):
            try:
                # recovery on assignment, applied records skipped, offset order kept
                # (the tenant states price a tenant's records in order)
                for events, redo in await pricing.gate.admit(list(batch)):
                    # Shielded: a SIGTERM lets the batch in flight finish and be acked.
                    await asyncio.shield(pricing.process(events, redo=redo))
                    ack_events(events)
            except SinkStopped:
                # Shutdown during a ClickHouse outage: leave the batch unacknowledged
                # (the next worker applies it from the progress of record).
                log.warning("sink stopped; %d pricing records left unacknowledged", len(batch))
                pricing.unstored += len(batch)
                return

    interval = tick_interval_from_env()
    if interval > 0:

        @app.timer(interval)
        async def window_ticks() -> None:
            if app.rebalancing or pricing.gate.generation != app.consumer_generation_id:
                return  # the tenant states are not recovered for this assignment yet
            await pricing.tick()

        worker.extras["pricing_ticks"] = window_ticks

    worker.extras["pricing_agent"] = price_usage
    return pricing
