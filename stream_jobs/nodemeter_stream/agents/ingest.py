"""Agent ``ingest_usage``: usage topic -> validate -> dedupe -> merge -> ClickHouse.

One batch at a time (``noack_take``, concurrency 1), in this order:

1. classify every record (pure core); plan the batch against the stored state;
2. write usage_events, dead_letters, request_records, request_nodes to ClickHouse,
   each block with a deterministic ``insert_deduplication_token`` (retried until
   acknowledged: an outage pauses consumption);
3. only then store the request states (changelog) and, once they are on the broker,
   record the event ids as seen (a mark always has its event's state behind it);
4. send dead letters to the DLQ topic and first-seen usage events to
   ``usage-by-tenant`` (at-least-once);
5. ack the batch, so Faust commits its offsets.

A timer closes requests that timed out and expires old dedupe marks and request states.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from nodemeter.codec import encode_payload
from nodemeter.events import UsageEvent
from nodemeter_stream.agents.tables import ChangelogMap
from nodemeter_stream.app import Worker
from nodemeter_stream.commit_guard import in_order
from nodemeter_stream.ingest.decode import DeadLetter, Source, classify
from nodemeter_stream.ingest.dedupe import SeenMark, is_live
from nodemeter_stream.ingest.merge import Emission, RequestState, state_key
from nodemeter_stream.ingest.plan import (
    BatchPlan,
    plan_batch,
    plan_sweep,
)
from nodemeter_stream.ingest.rows import (
    DEAD_LETTER_COLUMNS,
    REQUEST_NODE_COLUMNS,
    REQUEST_RECORD_COLUMNS,
    USAGE_EVENT_COLUMNS,
    dead_letter_row,
    request_node_rows,
    request_record_row,
    usage_event_row,
)
from nodemeter_stream.sink.clickhouse import Block, SinkStopped, ack_all
from nodemeter_stream.sink.tokens import content_token, offsets_token

log = logging.getLogger("nodemeter.ingest")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Ingest:
    """The ingest pipeline's wiring; ``clock`` returns epoch milliseconds."""

    def __init__(self, worker: Worker, *, clock: Callable[[], int] = wall_ms) -> None:
        self.worker = worker
        self.cfg = worker.config
        self.sink = worker.sink
        self.metrics = worker.metrics
        self.clock = clock
        app = worker.app
        topics = self.cfg.topics
        self.source = app.topic(topics.usage, key_serializer="raw", value_serializer="raw")
        self.dlq = app.topic(topics.dlq, key_serializer="raw", value_serializer="raw")
        self.by_tenant = app.topic(
            topics.usage_by_tenant, key_serializer="raw", value_serializer="raw"
        )
        self.seen = ChangelogMap(app.Table("seen-events", partitions=self.cfg.partitions))
        self.requests = ChangelogMap(app.Table("request-state", partitions=self.cfg.partitions))
        # Batches and the sweep timer both read-modify-write the state tables.
        self.lock = asyncio.Lock()
        self._open: dict[str, int] | None = None
        self._next_housekeeping_ms = 0
        # Set while no batch is being processed; a graceful stop sets ``draining`` (no
        # new batch starts), waits for ``idle`` and commits.
        self.idle = asyncio.Event()
        self.idle.set()
        self.draining = False

    # --- lookups ---------------------------------------------------------------------

    def is_seen(self, event_id: str) -> bool:
        raw = self.seen.get(event_id)
        if raw is None:
            return False
        mark = SeenMark.from_json(raw)
        return is_live(mark, now_ms=self.clock(), ttl_s=self.cfg.dedupe_ttl_s)

    def get_state(self, key: str) -> RequestState | None:
        raw = self.requests.get(key)
        return None if raw is None else RequestState.from_json(raw)

    # --- one batch -------------------------------------------------------------------

    async def process(self, events: Sequence[Any]) -> BatchPlan:
        t_start = time.perf_counter()
        now_ms = self.clock()
        self.metrics.events_in.inc(len(events))
        self.metrics.batch_size.observe(len(events))
        sources = [
            Source(topic=e.message.topic, partition=e.message.partition, offset=e.message.offset)
            for e in events
        ]
        items = [
            classify(e.value, key=e.key, source=s, max_bytes=self.cfg.max_event_bytes)
            for e, s in zip(events, sources, strict=True)
        ]
        async with self.lock:
            plan = plan_batch(
                items,
                is_seen=self.is_seen,
                get_state=self.get_state,
                now_ms=now_ms,
                timeout_s=self.cfg.request_timeout_s,
            )
            usage_rows = [
                usage_event_row(
                    a.record,
                    topic=a.source.topic,
                    partition=a.source.partition,
                    offset=a.source.offset,
                )
                for a in plan.fresh
                if isinstance(a.record, UsageEvent)
            ]
            blocks = [
                Block(
                    table="usage_events",
                    columns=USAGE_EVENT_COLUMNS,
                    rows=usage_rows,
                    token=offsets_token("usage_events", sources),
                ),
                Block(
                    table="dead_letters",
                    columns=DEAD_LETTER_COLUMNS,
                    rows=[dead_letter_row(d) for d in plan.dead_letters],
                    token=offsets_token("dead_letters", sources),
                ),
                *request_blocks(plan.emissions),
            ]
            t_plan = time.perf_counter()
            await self.sink.write(blocks)
            t_sink = time.perf_counter()
            # Stored: from here on the state may say so. The request states go first and
            # the dedupe marks only once the states are on the broker: the two tables are
            # separate changelogs, and a crash that kept a mark but lost the state holding
            # its event would make the replayed event a "duplicate" never merged (seen in
            # the SIGKILL test: requests left without their record). In this order a crash
            # can only lose marks, and a replayed event is merged again, idempotently.
            await asyncio.gather(*(self.put_state(k, st) for k, st in plan.states.items()))
            pending: list[Any] = []
            for a in plan.fresh:
                mark = SeenMark(now_ms, a.source.partition)
                pending.append(
                    self.seen.put(a.record.event_id, mark.to_json(), partition=a.source.partition)
                )
        for d in plan.dead_letters:
            pending.append(self.send_dead_letter(d, now_ms=now_ms))
        for a in plan.fresh:
            if isinstance(a.record, UsageEvent):
                pending.append(
                    self.by_tenant.send_soon(key=a.record.tenant.encode(), value=a.payload)
                )
        # On the broker before the batch is acked: Faust's pre-commit flush gives up on
        # its send buffer after a short wait, so a commit could overtake these otherwise.
        await asyncio.gather(*pending)
        self.count(plan)
        log.info(
            "batch records=%d fresh=%d duplicates=%d dead_letters=%d request_records=%d "
            "plan_ms=%.1f sink_ms=%.1f total_ms=%.1f",
            len(events),
            len(plan.fresh),
            len(plan.duplicates),
            len(plan.dead_letters),
            len(plan.emissions),
            (t_plan - t_start) * 1000,
            (t_sink - t_plan) * 1000,
            (time.perf_counter() - t_start) * 1000,
        )
        return plan

    def count(self, plan: BatchPlan) -> None:
        m = self.metrics
        m.events_stored.inc(len(plan.fresh))
        m.duplicates.inc(len(plan.duplicates))
        for d in plan.dead_letters:
            m.dead_letters.labels(reason=d.reason).inc()
        count_emissions(m, plan.emissions)

    def send_dead_letter(self, d: DeadLetter, *, now_ms: int) -> Any:
        value = encode_payload(
            "dead_letter",
            {
                "source_topic": d.source.topic,
                "source_partition": d.source.partition,
                "source_offset": d.source.offset,
                "reason": d.reason,
                "detail": d.detail[:2000],
                "tenant": d.tenant,
                "event_id": d.event_id or None,
                "record_key": d.key or None,
                "payload": d.payload,
                "received_at": datetime.fromtimestamp(now_ms / 1000, tz=UTC),
                "attributes": {},
            },
        )
        headers = [
            ("reason", d.reason.encode()),
            ("source_topic", d.source.topic.encode()),
            ("source_partition", str(d.source.partition).encode()),
            ("source_offset", str(d.source.offset).encode()),
        ]
        return self.dlq.send_soon(key=d.key or None, value=value, headers=headers)

    # --- timer -----------------------------------------------------------------------

    def put_state(self, key: str, state: RequestState) -> Any:
        fut = self.requests.put(key, state.to_json(), partition=state.partition)
        if self._open is not None:
            if state.closed:
                self._open.pop(key, None)
            else:
                self._open[key] = state.opened_at_ms
        return fut

    def open_index(self) -> dict[str, int]:
        """Open requests -> opened_at_ms; built from the (recovered) table once, then kept."""
        if self._open is None:
            self._open = {}
            for key, raw in self.requests.items():
                state = RequestState.from_json(raw)
                if not state.closed:
                    self._open[key] = state.opened_at_ms
        return self._open

    async def sweep(self) -> None:
        """Close timed-out requests; now and then drop expired dedupe marks and old states."""
        now_ms = self.clock()
        timeout_ms = self.cfg.request_timeout_s * 1000
        async with self.lock:
            index = self.open_index()
            due_keys = [k for k, opened in index.items() if now_ms - opened >= timeout_ms]
            states = [RequestState.from_json(self.requests.get(k)) for k in due_keys]
            housekeeping = now_ms >= self._next_housekeeping_ms
            if housekeeping:
                self._next_housekeeping_ms = now_ms + self.housekeeping_interval_ms()
                states = [RequestState.from_json(v) for _, v in self.requests.items()]
            plan = plan_sweep(
                states,
                now_ms=now_ms,
                timeout_s=self.cfg.request_timeout_s,
                retention_s=self.cfg.request_retention_s,
            )
            await self.sink.write(request_blocks(plan.emissions))
            for e in plan.emissions:
                self.put_state(state_key(e.state.tenant, e.state.request_id), e.state)
            for st in plan.purge:
                self.requests.delete(state_key(st.tenant, st.request_id), partition=st.partition)
            if housekeeping:
                for eid, raw in self.seen.items():
                    mark = SeenMark.from_json(raw)
                    if not is_live(mark, now_ms=now_ms, ttl_s=self.cfg.dedupe_ttl_s):
                        self.seen.delete(eid, partition=mark.partition)
            self.metrics.open_requests.set(len(index))
        count_emissions(self.metrics, plan.emissions)

    def housekeeping_interval_ms(self) -> int:
        # Expiry runs at a twentieth of the shortest retention: marks and states live at
        # most 5% past their TTL, and the full scans stay rare.
        shortest = min(self.cfg.dedupe_ttl_s, self.cfg.request_retention_s)
        return int(max(self.cfg.sweep_interval_s, min(shortest / 20, 3600.0)) * 1000)

    def update_lag(self, events: Sequence[Any]) -> None:
        last: dict[Any, int] = {}
        for e in events:
            last[e.message.tp] = max(last.get(e.message.tp, -1), e.message.offset)
        consumer = self.worker.app.consumer
        for tp, off in last.items():
            try:
                hw = consumer.highwater(tp)
            except Exception:  # a metric must never stop the stream (e.g. no consumer in tests)
                return
            if hw is not None:
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, hw - off - 1)
                )


def request_blocks(emissions: Sequence[Emission]) -> list[Block]:
    records = [e.record for e in emissions]
    ids = [f"{r.tenant}/{r.request_id}@{r.revision}" for r in records]
    return [
        Block(
            table="request_records",
            columns=REQUEST_RECORD_COLUMNS,
            rows=[request_record_row(r) for r in records],
            token=content_token("request_records", ids),
        ),
        Block(
            table="request_nodes",
            columns=REQUEST_NODE_COLUMNS,
            rows=[row for r in records for row in request_node_rows(r)],
            token=content_token("request_nodes", ids),
        ),
    ]


def count_emissions(metrics: Any, emissions: Sequence[Emission]) -> None:
    for e in emissions:
        kind = (
            "correction"
            if e.record.is_correction
            else ("complete" if e.record.complete else "incomplete")
        )
        metrics.request_records.labels(kind=kind).inc()


def register(worker: Worker) -> Ingest:
    """Add the ``ingest_usage`` agent and the sweep timer to the worker's app."""
    ingest = Ingest(worker)
    app = worker.app
    policy = worker.config.batch_policy
    worker.extras["ingest"] = ingest

    @app.task
    async def connect_sink() -> None:
        with contextlib.suppress(SinkStopped):
            await worker.sink.start()

    order = worker.extras["ingest_order"] = in_order(app, "ingest_usage")

    @app.agent(ingest.source, concurrency=1, name="ingest_usage")
    async def ingest_usage(stream: Any) -> None:
        async for batch in stream.noack_take(policy.max_size, within=policy.max_wait_s):
            if ingest.draining:
                return  # stopping: leave these unacknowledged for the next worker
            # records delivered ahead of their turn are held back (never acknowledged)
            events = await order.admit(list(batch))
            if not events:
                continue
            ingest.idle.clear()
            try:
                # Shielded: a cancellation does not interrupt a ClickHouse write half-way.
                await asyncio.shield(ingest.process(events))
                await ack_all(stream, events)
                ingest.update_lag(events)
            except SinkStopped:
                # Shutdown during a ClickHouse outage: leave the batch unacknowledged (the
                # next worker reads it again) and end.
                log.warning("sink stopped; %d records left unacknowledged", len(events))
                return
            finally:
                ingest.idle.set()

    @app.on_partitions_revoked.connect
    async def finish_batch_before_revoke(app: Any, revoked: Any, **_: Any) -> None:
        # Let the batch in flight finish its state writes before another worker owns the
        # partitions (the app does not wait for unacked records, see app.py).
        async with ingest.lock:
            pass

    @app.timer(worker.config.sweep_interval_s)
    async def sweep_requests() -> None:
        if app.rebalancing or not app.tables.recovery.completed.is_set():
            return  # the state is being recovered: deciding timeouts now would be premature
        await ingest.sweep()

    worker.extras["ingest_agent"] = ingest_usage
    return ingest
