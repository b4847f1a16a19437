"""Agent ``ingest_usage``: usage topic -> validate -> dedupe -> merge -> ClickHouse.

One batch at a time (``intake.batches``, concurrency 1), behind the :class:`Gate`
(progress of record, skip what is applied, offset order):

1. classify every record (pure); look up in ClickHouse the events memory cannot vouch
   for (old event times, and every event of a batch in doubt); plan the batch (pure);
2. run its effects in order (``effects.apply_batch``): intent -> usage_events,
   dead_letters, request_records, request_nodes -> forwards to ``usage-by-tenant`` (one
   record per tenant) and dead letters to the DLQ -> request states + progress + the
   batch's tally (what became of each record, ``ingest/tally.py``), in one insert;
3. ack the batch, so Faust may commit its offsets.

The requests touched within ``request_retention_s`` live in memory (open ones and those
closed recently), bounded by rate x retention, not by history; a timer closes timed-out
requests and drops old ones. Nothing per event outlives its request in memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from nodemeter.errors import RegistryError, UnknownSchemaError
from nodemeter.events import UsageEvent
from nodemeter.registry import RegistryClient
from nodemeter_stream.agents.effects import Gate, apply_batch, spans_of
from nodemeter_stream.agents.intake import ack_events, batches, raw_topic
from nodemeter_stream.app import Worker
from nodemeter_stream.ingest import forward
from nodemeter_stream.ingest.confluent import SchemaCache
from nodemeter_stream.ingest.decode import Accepted, DeadLetter, Source, classify
from nodemeter_stream.ingest.dedupe import needs_lookup
from nodemeter_stream.ingest.dlq import dlq_record
from nodemeter_stream.ingest.merge import Emission, RequestState, state_key, to_us
from nodemeter_stream.ingest.plan import BatchPlan, plan_batch, plan_sweep
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
from nodemeter_stream.ingest.tally import tally_batch
from nodemeter_stream.sink.clickhouse import Block, SinkStopped
from nodemeter_stream.sink.progress import encode_state, state_row, tally_rows
from nodemeter_stream.sink.state import StateStore
from nodemeter_stream.sink.tokens import content_token, offsets_token

log = logging.getLogger("nodemeter.ingest")

SCOPE = "request"
# The clock skew the SDK tolerates on event times (its validation rejects more).
SKEW_S = 300.0


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
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.source = raw_topic(app, topics.usage)  # bytes in one step (agents/intake.py)
        self.dlq = app.topic(topics.dlq, **raw)
        self.by_tenant = app.topic(topics.usage_by_tenant, **raw)
        self.store = StateStore(self.sink, group=self.cfg.app_id)
        # requests touched within the retention: key -> state (open or closed); the open
        # ones also in ``open`` (the sweep's timeouts look at those only)
        self.states: dict[str, RequestState] = {}
        self.open: set[str] = set()
        # open requests by the time they opened (oldest first): the sweep looks only at
        # those whose timeout may have passed
        self.opened: collections.deque[tuple[int, str]] = collections.deque()
        self._next_purge_ms = 0
        # Batches and the sweep timer both read-modify-write the states.
        self.lock = asyncio.Lock()
        # Set while no batch is being processed; a graceful stop sets ``draining`` (no
        # new batch starts), waits for ``idle`` and commits.
        self.idle = asyncio.Event()
        self.idle.set()
        self.draining = False
        # records of batches given up on because the sink stopped (a ClickHouse outage
        # at shutdown): unacknowledged, for the next worker; the drain reports them
        self.unstored = 0
        self.lookups = 0
        # Confluent-framed records: writer schemas from the registry, resolved per batch
        # before classification (ingest/confluent.py)
        self.registry: RegistryClient | None = None
        self.schemas: SchemaCache | None = None
        if self.cfg.schema_registry_url:
            self.registry = RegistryClient(self.cfg.schema_registry_url)
            self.schemas = SchemaCache()
        self.gate = Gate(
            app,
            "ingest_usage",
            store=self.store,
            topic=topics.usage,
            scopes=(SCOPE,),
            on_recover=self.recovered,
            retention_s=self.cfg.request_retention_s,
        )

    # --- recovery ---------------------------------------------------------------------

    def recovered(self, partitions: list[int], rows: list[Any]) -> None:
        """The states of the assigned partitions, as of their progress of record."""
        self.states = {}
        self.open = set()
        self.opened = collections.deque()
        states = [(r.key, RequestState.from_json(json.loads(r.value))) for r in rows]
        for key, state in sorted(states, key=lambda ks: ks[1].opened_at_ms):
            self.remember(key, state)
        self.metrics.open_requests.set(len(self.open))

    def remember(self, key: str, state: RequestState) -> None:
        self.states[key] = state
        if state.closed:
            self.open.discard(key)
        elif key not in self.open:
            self.open.add(key)
            self.opened.append((state.opened_at_ms, key))

    # --- one batch -------------------------------------------------------------------

    def to_look_up(self, items: Sequence[Any], now_ms: int) -> list[tuple[str, datetime, str]]:
        window = self.cfg.request_retention_s
        out = []
        for item in items:
            if not isinstance(item, Accepted) or not isinstance(item.record, UsageEvent):
                continue
            rec = item.record
            state = self.states.get(state_key(rec.tenant, rec.request_id))
            if state is not None and state.has(rec.event_id):
                continue  # memory knows it
            if self.gate.in_doubt(item.source.partition, item.source.offset) or needs_lookup(
                to_us(rec.event_time) // 1000, now_ms=now_ms, window_s=window, skew_s=SKEW_S
            ):
                out.append((rec.tenant, rec.event_time, rec.event_id))
        return out

    async def process(self, events: Sequence[Any], *, redo: bool = False) -> BatchPlan:
        """Apply one batch; ``redo``: it is the batch in doubt re-formed whole, so the
        events a first attempt stored go into the same block again (the insert token
        drops them where they are stored, and feeds the views where they are not)."""
        t_start = time.perf_counter()
        now_ms = self.clock()
        self.metrics.events_in.inc(len(events))
        self.metrics.batch_size.observe(len(events))
        max_bytes = self.cfg.max_event_bytes
        try:
            not_after = datetime.fromtimestamp(now_ms / 1000 + self.cfg.max_future_skew_s, UTC)
        except (OverflowError, ValueError, OSError):  # a skew past the calendar's end
            not_after = datetime.max.replace(tzinfo=UTC)
        schemas = self.schemas
        if schemas is not None:
            await self.resolve_schemas(schemas.missing(e.value for e in events))
        items = []
        for e in events:
            m = e.message
            src = Source(topic=m.topic, partition=m.partition, offset=m.offset)
            items.append(
                classify(e.value, key=e.key, source=src, max_bytes=max_bytes,
                         not_after=not_after, schemas=schemas)
            )  # fmt: skip
        async with self.lock:
            wanted = self.to_look_up(items, now_ms)
            stored = await self.store.stored_events(wanted) if wanted else {}
            self.lookups += len(wanted)
            t_lookup = time.perf_counter()
            plan = plan_batch(
                items,
                get_state=self.states.get,
                stored=stored,
                now_ms=now_ms,
                timeout_s=self.cfg.request_timeout_s,
                max_request_events=self.cfg.max_request_events,
            )
            sources = [a.source for a in items]
            blocks = [
                Block(
                    table="usage_events",
                    columns=USAGE_EVENT_COLUMNS,
                    rows=[
                        usage_event_row(
                            rec,
                            topic=a.source.topic,
                            partition=a.source.partition,
                            offset=a.source.offset,
                        )
                        for rec, a in plan.usage_to_insert(again=redo)
                    ],
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
            group = self.cfg.app_id
            topic = self.cfg.topics.usage
            rows = [
                state_row(group, SCOPE, topic, st.partition, key, encode_state(st.to_json()),
                          open_=not st.closed)
                for key, st in plan.states.items()
            ]  # fmt: skip
            t_plan = time.perf_counter()
            spans = spans_of(events)
            # what became of each record, recorded with the progress (ingest/tally.py)
            rows += tally_rows(group, tally_batch(plan, spans))
            await apply_batch(
                sink=self.sink,
                store=self.store,
                spans=spans,
                blocks=blocks,
                send=lambda: self.send(plan, now_ms),
                states=rows,
                agent="ingest_usage",
                whole=self.gate.whole(spans, redo),
            )
            for key, st in plan.states.items():
                self.remember(key, st)
            self.gate.applied(spans)
        self.count(plan)
        log.info(
            "batch records=%d fresh=%d duplicates=%d dead_letters=%d request_records=%d "
            "looked_up=%d lookup_ms=%.1f plan_ms=%.1f effects_ms=%.1f total_ms=%.1f",
            len(events), len(plan.fresh), len(plan.duplicates), len(plan.dead_letters),
            len(plan.emissions), len(wanted), (t_lookup - t_start) * 1000,
            (t_plan - t_lookup) * 1000, (time.perf_counter() - t_plan) * 1000,
            (time.perf_counter() - t_start) * 1000,
        )  # fmt: skip
        return plan

    async def resolve_schemas(self, ids: set[int]) -> None:
        """Fetch these writer schemas from the registry, off the event loop. An id the
        registry does not know is remembered as absent (its records become dead
        letters); while the registry cannot be reached the batch waits and retries,
        with backoff, so nothing is dead-lettered for an outage."""
        registry, schemas = self.registry, self.schemas
        assert registry is not None and schemas is not None
        for sid in sorted(ids):
            delay = 0.1
            while True:
                try:
                    found = await asyncio.to_thread(registry.schema, sid)
                except UnknownSchemaError:
                    schemas.put(sid, None)
                    break
                except RegistryError as exc:
                    if self.draining or self.sink.stopping:
                        raise SinkStopped(
                            f"stopped while the registry was unreachable: {exc}"
                        ) from exc
                    log.warning("schema id %d: %s; retrying in %.1f s", sid, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                schemas.put(sid, found)
                break

    async def send(self, plan: BatchPlan, now_ms: int) -> None:
        """Forwards (one record per tenant) and dead letters, on the broker on return."""
        per_tenant: dict[str, list[forward.Entry]] = {}
        for a in plan.fresh:
            if isinstance(a.record, UsageEvent):
                per_tenant.setdefault(a.record.tenant, []).append(
                    forward.Entry(a.source.partition, a.source.offset, a.payload)
                )
        pending = [self.send_dead_letter(d, now_ms=now_ms) for d in plan.dead_letters]
        for tenant, entries in per_tenant.items():
            entries.sort(key=lambda e: (e.partition, e.offset))
            pending.append(
                self.by_tenant.send_soon(key=tenant.encode(), value=forward.encode(entries))
            )
        # On the broker before the progress is recorded and the batch acked.
        await asyncio.gather(*pending)

    def count(self, plan: BatchPlan) -> None:
        m = self.metrics
        m.events_stored.inc(len(plan.fresh))
        m.duplicates.inc(len(plan.duplicates))
        for d in plan.dead_letters:
            m.dead_letters.labels(reason=d.reason).inc()
        count_emissions(m, plan.emissions)

    def send_dead_letter(self, d: DeadLetter, *, now_ms: int) -> Any:
        key, value, headers = dlq_record(d, now_ms=now_ms)
        return self.dlq.send_soon(key=key, value=value, headers=headers)

    # --- timer -----------------------------------------------------------------------

    async def sweep(self) -> None:
        """Close timed-out requests; now and then drop closed ones past the retention."""
        now_ms = self.clock()
        retention = self.cfg.request_retention_s
        async with self.lock:
            purge = now_ms >= self._next_purge_ms
            if purge:  # a full scan, at a twentieth of the retention (at most 5 % late)
                self._next_purge_ms = now_ms + int(
                    max(self.cfg.sweep_interval_s, retention / 20) * 1000
                )
            timeout_ms = int(self.cfg.request_timeout_s * 1000)
            due_keys = []
            while self.opened and self.opened[0][0] + timeout_ms <= now_ms:
                _, key = self.opened.popleft()
                if key in self.open:
                    due_keys.append(key)
            candidates = self.states.values() if purge else [self.states[k] for k in due_keys]
            plan = plan_sweep(
                list(candidates), now_ms=now_ms, timeout_s=self.cfg.request_timeout_s,
                retention_s=retention,
            )  # fmt: skip
            if plan.emissions:
                group, topic = self.cfg.app_id, self.cfg.topics.usage
                await self.sink.write(request_blocks(plan.emissions))
                rows = [
                    state_row(group, SCOPE, topic, e.state.partition,
                              state_key(e.state.tenant, e.state.request_id),
                              encode_state(e.state.to_json()), open_=False)
                    for e in plan.emissions
                ]  # fmt: skip
                await self.sink.write([self.store.block(rows)])
                for e in plan.emissions:
                    self.remember(state_key(e.state.tenant, e.state.request_id), e.state)
            for st in plan.purge:
                key = state_key(st.tenant, st.request_id)
                self.states.pop(key, None)
                self.open.discard(key)
            self.metrics.open_requests.set(len(self.open))
        count_emissions(self.metrics, plan.emissions)

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
    worker.extras["ingest_order"] = ingest.gate.order

    @app.task
    async def connect_sink() -> None:
        with contextlib.suppress(SinkStopped):
            await worker.sink.start()

    @app.agent(ingest.source, concurrency=1, name="ingest_usage")
    async def ingest_usage(stream: Any) -> None:
        async for batch in batches(stream, policy.max_size, policy.max_wait_s):
            if ingest.draining:
                return  # stopping: leave these unacknowledged for the next worker
            ingest.idle.clear()
            try:
                # recovery on assignment, applied records skipped, offset order kept, the
                # batch in doubt re-formed whole
                for events, redo in await ingest.gate.admit(list(batch)):
                    # Shielded: a cancellation does not interrupt a ClickHouse write.
                    await asyncio.shield(ingest.process(events, redo=redo))
                    ack_events(events)
                    ingest.update_lag(events)
            except SinkStopped:
                # Shutdown during a ClickHouse outage: leave the batch unacknowledged and
                # unrecorded (the next worker applies it from the progress of record).
                log.warning("sink stopped; %d records left unacknowledged", len(batch))
                ingest.unstored += len(batch)
                return
            finally:
                ingest.idle.set()

    @app.on_partitions_revoked.connect
    async def finish_batch_before_revoke(app: Any, revoked: Any, **_: Any) -> None:
        # Let the batch in flight record its effects before another worker owns the
        # partitions (the app does not wait for unacked records, see app.py).
        async with ingest.lock:
            pass

    @app.timer(worker.config.sweep_interval_s)
    async def sweep_requests() -> None:
        if app.rebalancing or ingest.gate.generation != app.consumer_generation_id:
            return  # not recovered for this assignment yet: timeouts would be premature
        await ingest.sweep()

    worker.extras["ingest_agent"] = ingest_usage
    return ingest
