"""Agent ``price_usage``: usage-by-tenant topic -> priced lines, budget alerts, budget state.

Per batch (``noack_take``, concurrency 1; the topic is keyed by tenant, so one agent
sees all of a tenant's events in order):

1. price the batch against the recovered state (``pricing.batch.price_batch``, pure);
2. write priced_lines and budget_alerts to ClickHouse (tokens from the offsets; ids
   are deterministic, so a replay collapses in the ReplacingMergeTree tables);
3. store tenant states and per-event records in changelog tables;
4. send new budget alerts (then mark them sent) and budget-state records; records the
   worker could not price go to the dead-letter topic and table;
5. ack the batch.

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
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter

from nodemeter.codec import encode_payload
from nodemeter_stream.agents.tables import ChangelogMap
from nodemeter_stream.app import Worker
from nodemeter_stream.commit_guard import in_order
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
from nodemeter_stream.sink.clickhouse import Block, ack_all
from nodemeter_stream.sink.tokens import offsets_token

log = logging.getLogger("nodemeter.pricing")


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
        self.source = app.topic(topics.usage_by_tenant, **raw)
        self.alerts_topic = app.topic(topics.budget_alerts, **raw)
        self.state_topic = app.topic(topics.budget_state, **raw)
        self.dlq = app.topic(topics.dlq, **raw)
        table = {"partitions": cfg.partitions}  # values: JSON (the app default)
        self.tenants = ChangelogMap(app.Table("pricing-tenant-state", **table))
        self.seen = ChangelogMap(app.Table("pricing-priced-events", **table))
        self.books_written = False
        r = worker.metrics.registry
        self.m_lines = Counter("nodemeter_priced_lines", "Priced lines written", registry=r)
        self.m_alerts = Counter("nodemeter_budget_alerts", "Budget alerts sent", registry=r)
        self.m_events = Counter(
            "nodemeter_priced_events", "Usage events priced", ["kind"], registry=r
        )
        self.m_ticks = Counter("nodemeter_window_ticks", "Window ticks sent", registry=r)

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

    async def process(self, events: list[Any]) -> BatchResult:
        if not self.books_written:
            # with the first batch, not in a task of its own: while ClickHouse is down
            # the agent waits in the sink like every other write, and stops cleanly
            await self.write_price_books()
            self.books_written = True
        items = [
            Item(
                e.message.topic, e.message.partition, e.message.offset, e.key or b"", e.value or b""
            )
            for e in events
        ]
        sources = [Source(topic=i.topic, partition=i.partition, offset=i.offset) for i in items]
        res = price_batch(
            self.engine,
            items,
            get_state=self.tenants.get,
            get_seen=self.seen.get,
            seen_items=self.seen.items,
        )
        dead = [self.dead_letter(r) for r in res.rejected]
        await self.sink.write(
            [
                Block(table="priced_lines", columns=PRICED_LINE_COLUMNS,
                      rows=[ln.row() for ln in res.lines], token=offsets_token("priced_lines", sources)),
                Block(table="budget_alerts", columns=BUDGET_ALERT_COLUMNS,
                      rows=[alert_row(a) for a in res.alerts], token=offsets_token("budget_alerts", sources)),
                Block(table="dead_letters", columns=DEAD_LETTER_COLUMNS,
                      rows=[dead_letter_row(d) for d in dead], token=offsets_token("pricing_dead_letters", sources)),
            ]
        )  # fmt: skip
        # Alerts go out before the state that records them is stored: the two state
        # tables are separate changelogs, and a crash that kept the tenant state (applied
        # offset) but lost the seen record would otherwise never send the alert. This way
        # a crash can only repeat an alert (same alert_id), never lose one.
        marked: dict[str, int] = {}
        for key, partition, alert in res.to_send:
            k, v = encode_alert(alert)
            # force=True: not attached to the current event (Faust would publish an attached
            # message only when the batch is acked, after this await: a deadlock)
            delivered = await self.alerts_topic.send(key=k, value=v, force=True)
            await delivered  # on the broker before we record it as sent
            marked[key] = partition
        stored = [durable_put(self.tenants, t, st, p) for t, (p, st) in res.states.items()]
        stored += [durable_put(self.seen, k, v, p) for k, (p, v) in res.seen.items()]
        # On the broker before the batch may be acked: Faust's pre-commit flush gives up
        # on its send buffer after 0.1 s, so a commit could otherwise overtake the state.
        await asyncio.gather(*stored)
        for d in dead:
            await self.send_dead_letter(d)
        for key, partition in marked.items():
            # sent: a redelivery of these events need not send them again
            rec = self.seen.get(key)
            if rec is not None:
                await durable_put(self.seen, key, {**rec, "alerts_sent": True}, partition)
        for record in res.budget_records:
            k, v = encode_budget_state(record)
            await self.state_topic.send(key=k, value=v)
        self.m_lines.inc(len(res.lines))
        self.m_alerts.inc(len(res.to_send))
        self.m_events.labels(kind="priced").inc(res.priced)
        self.m_events.labels(kind="duplicate").inc(res.duplicates)
        self.m_events.labels(kind="rejected").inc(len(res.rejected))
        log.info(
            "priced batch records=%d priced=%d duplicates=%d rejected=%d lines=%d alerts_sent=%d",
            len(events), res.priced, res.duplicates, len(res.rejected), len(res.lines), len(res.to_send),
        )  # fmt: skip
        return res

    async def tick(self) -> list[str]:
        """Send a WindowTick for every local tenant with a window due now; no pricing
        here (the tick is priced in order with the tenant's records)."""
        now = self.clock()
        due = tenants_due(self.engine, self.tenants.items(), now)
        for tenant in due:
            k, v = encode_tick(tenant, now)
            await self.source.send(key=k, value=v)
        if due:
            self.m_ticks.inc(len(due))
            log.info("window ticks sent tenants=%d as_of=%s", len(due), now.isoformat())
        return due

    def dead_letter(self, r: Rejected) -> DeadLetter:
        src = Source(topic=r.item.topic, partition=r.item.partition, offset=r.item.offset)
        return DeadLetter(
            reason=r.reason, detail=r.detail, source=src, key=r.item.key, payload=r.item.value,
            tenant=r.tenant, event_id=r.event_id,
        )  # fmt: skip

    async def send_dead_letter(self, d: DeadLetter) -> None:
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
        await self.dlq.send(key=d.key or None, value=value, headers=headers)


def durable_put(table: ChangelogMap, key: str, value: Any, partition: int) -> Any:
    """``ChangelogMap.put``/``delete`` (``value=None``) returning the changelog send's future."""
    if value is None:
        table.table.data.pop(key, None)
        return table.table.send_changelog(partition, key, None, value_serializer="raw")
    table.table.data[key] = value
    return table.table.send_changelog(partition, key, value)


def register(worker: Worker, engine: PricingEngine | None = None) -> Pricing:
    """Add the ``price_usage`` agent to the worker's app."""
    pricing = Pricing(worker, engine or engine_from_env())
    app, policy = worker.app, worker.config.batch_policy
    worker.extras["pricing"] = pricing

    order = worker.extras["pricing_order"] = in_order(app, "price_usage")

    @app.agent(pricing.source, concurrency=1, name="price_usage")
    async def price_usage(stream: Any) -> None:
        async for batch in stream.noack_take(policy.max_size, within=policy.max_wait_s):
            # in offset order only: a record delivered ahead of its turn is held back and
            # read again after the ones before it (the applied-offset watermark needs it)
            events = await order.admit(list(batch))
            if not events:
                continue
            # Shielded: a SIGTERM lets the batch in flight finish and be acknowledged.
            await asyncio.shield(pricing.process(events))
            await ack_all(stream, events)

    interval = tick_interval_from_env()
    if interval > 0:

        @app.timer(interval)
        async def window_ticks() -> None:
            if app.rebalancing or not app.tables.recovery.completed.is_set():
                return  # the tenant states are being recovered
            await pricing.tick()

        worker.extras["pricing_ticks"] = window_ticks

    worker.extras["pricing_agent"] = price_usage
    return pricing
