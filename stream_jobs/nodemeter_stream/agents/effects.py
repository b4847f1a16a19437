"""The one place that runs a batch's effects in order, and the gate in front of it.

Per batch (:func:`apply_batch`), like a checkpoint's named steps:

1. **intent**: a worker_state row per source partition (``first..last`` being applied);
2. **write**: the effect blocks, each with an offset-derived insert token;
3. **send**: Kafka records (forwards, alerts, dead letters), awaited on the broker;
4. **record**: the agent's new states and the progress rows, in *one* insert;
5. then the caller acks the batch (Faust may commit; an optimisation only).

:class:`Gate` stands in front of an agent: on every new assignment it reads the
progress of record of the agent's partitions (and hands the stored states to the
agent), skips records already applied, marks those in doubt, and keeps each partition
in offset order (:class:`~nodemeter_stream.commit_guard.InOrder`, rewinding to the
first record not applied, whatever Faust committed).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.types import TP

from nodemeter_stream.agents.intake import ack_events
from nodemeter_stream.commit_guard import InOrder, in_order
from nodemeter_stream.sink.clickhouse import Block, ClickHouseSink
from nodemeter_stream.sink.progress import (
    INTENT,
    PROGRESS,
    PartitionProgress,
    StateRow,
    exact_redo,
    intent_rows,
    progress_rows,
    ranges,
    recover,
)
from nodemeter_stream.sink.state import StateStore

log = logging.getLogger("nodemeter.effects")

Spans = dict[tuple[str, int], tuple[int, int]]

# How long the Gate waits for the records of a batch in doubt to arrive whole, and how
# many later records it holds meanwhile (memory stays bounded if they never do).
REDO_WAIT_S = 60.0
HELD_MAX = 50_000


def spans_of(events: Sequence[Any]) -> Spans:
    return ranges((e.message.topic, e.message.partition, e.message.offset) for e in events)


class CrashPoint:
    """Fault injection (tests only): ``NODEMETER_FAULT_CRASH_AT=AGENT:STEP:N`` ends the
    process like a SIGKILL (``os._exit(137)``, nothing flushed) right after STEP
    (``intent``, ``write``, ``send`` or ``record``) of the agent's N-th batch."""

    def __init__(self, spec: str | None = None) -> None:
        spec = os.environ.get("NODEMETER_FAULT_CRASH_AT", "") if spec is None else spec
        self.agent, self.step, self.n = "", "", 0
        if spec:
            agent, step, n = spec.split(":")
            if step not in ("intent", "write", "send", "record"):
                raise ValueError(f"NODEMETER_FAULT_CRASH_AT step {step!r} is not a batch step")
            self.agent, self.step, self.n = agent, step, int(n)
        self.batches: dict[str, int] = {}

    def begin(self, agent: str) -> None:
        self.batches[agent] = self.batches.get(agent, 0) + 1

    def after(self, agent: str, step: str) -> None:
        if agent == self.agent and step == self.step and self.batches.get(agent) == self.n:
            log.warning("fault injection: crashing %s after %s of batch %d", agent, step, self.n)
            logging.shutdown()
            os._exit(137)


CRASH = CrashPoint()


async def apply_batch(
    *,
    sink: ClickHouseSink,
    store: StateStore,
    spans: Spans,
    blocks: Sequence[Block],
    send: Callable[[], Awaitable[None]] | None,
    states: Sequence[Sequence[object]],
    agent: str = "",
    whole: bool = True,
) -> None:
    """Steps 1-4 of a batch (see the module docstring); returns once all are stored.
    ``whole``: its blocks hold everything its records give (``Gate.whole``)."""
    CRASH.begin(agent)
    await sink.write([store.block(intent_rows(store.group, spans, whole=whole))])
    CRASH.after(agent, "intent")
    await sink.write(blocks)
    CRASH.after(agent, "write")
    if send is not None:
        await send()
    CRASH.after(agent, "send")
    await sink.write([store.block([*states, *progress_rows(store.group, spans)])])
    CRASH.after(agent, "record")


class Gate:
    """Recovery on assignment, skip-applied and in-order admission for one agent."""

    def __init__(
        self,
        app: Any,
        name: str,
        *,
        store: StateStore,
        topic: str,
        scopes: Sequence[str],
        on_recover: Callable[[list[int], list[StateRow]], None],
        retention_s: float = 0,
    ) -> None:
        self.app, self.name, self.store, self.topic = app, name, store, topic
        self.scopes = tuple(scopes)
        self.on_recover = on_recover
        self.retention_s = retention_s
        self.order: InOrder = in_order(app, name)
        self.progress: dict[int, PartitionProgress] = {}
        self.generation: Any = object()
        # the batch in doubt, re-formed whole before anything after it (exact_redo):
        # its records by (partition, offset), and the later records held meanwhile
        self.redo: tuple[tuple[int, int, int], ...] | None = None
        self._redo_records: dict[tuple[int, int], Any] = {}
        self._held: list[Any] = []
        self._redo_since = 0.0
        self.redo_wait_s = REDO_WAIT_S
        self.held_max = HELD_MAX

    def assigned(self) -> list[int]:
        return sorted(
            tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.topic
        )

    async def recover(self) -> None:
        t0 = time.perf_counter()
        parts = self.assigned()
        rows = await self.store.load(
            self.topic, parts, scopes=(PROGRESS, INTENT, *self.scopes), retention_s=self.retention_s
        )
        found = recover(rows)
        self.progress = {p: found.get((self.topic, p), PartitionProgress()) for p in parts}
        start: dict[Any, int] = {}
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic != self.topic:
                continue
            pp = self.progress[tp.partition]
            if pp.applied >= 0:
                start[tp] = pp.applied + 1
                continue
            # Nothing recorded as stored: start at the log start, whatever Faust committed
            # (a commit without a progress of record proves nothing: a worker stopped in
            # a ClickHouse outage was seen committing records it never stored). What the
            # group committed before is in doubt: re-applied with lookups, so a store
            # written by a worker without progress rows is not counted twice.
            try:
                start[tp] = (await consumer.earliest_offsets(tp)).get(tp) or 0
            except Exception as exc:  # no broker answer: take what comes, said loudly
                log.warning("%s[%d]: log start unknown (%r); starting at the first record "
                            "delivered", tp.topic, tp.partition, exc)  # fmt: skip
            committed = consumer._committed_offset.get(tp)
            if committed is not None and committed - 1 > pp.doubt_until:
                self.progress[tp.partition] = PartitionProgress(-1, committed - 1)
        self.order.start_at = start
        # where commits of never-committed partitions may start (commit_guard)
        starts = getattr(consumer, "start_offsets", None)
        if starts is None:
            starts = consumer.start_offsets = {}
        starts.update(start)
        self.order.expected.clear()
        self.redo = exact_redo(self.progress)
        self._redo_records, self._held = {}, []
        self._redo_since = time.monotonic()
        if self.redo is None and any(pp.doubt_until > pp.applied for pp in self.progress.values()):
            log.warning("%s: the batch in doubt cannot be re-formed whole here (%s); what "
                        "the lookups find stored is not written again", self.name,
                        {p: pp.batch for p, pp in self.progress.items() if pp.batch})  # fmt: skip
        self.on_recover(parts, [r for r in rows if r.scope in self.scopes])
        took = time.perf_counter() - t0
        log.info(
            "%s: recovered partitions %s from ClickHouse in %.3f s (%d state rows): %s",
            self.name, parts, took, len(rows),
            {p: (pp.applied, pp.doubt_until) for p, pp in self.progress.items()},
        )  # fmt: skip

    async def admit(self, events: list[Any]) -> list[tuple[list[Any], bool]]:
        """The batches to apply now, in order, each with ``redo``: True for the batch in
        doubt re-formed whole (apply it as it was first applied, nothing dropped as
        stored: :func:`~nodemeter_stream.sink.progress.exact_redo`). Applied records
        are acked; records of the batch in doubt and those after it wait until it is
        whole (or ``redo_wait_s`` passed, or over ``held_max`` later records came: then
        they go as ordinary batches)."""
        gen = self.app.consumer_generation_id
        if gen != self.generation or any(e.message.partition not in self.progress for e in events):
            await self.recover()
            self.generation = gen
        skip, keep = [], []
        for e in events:
            pp = self.progress.get(e.message.partition)
            if pp is not None and e.message.offset <= pp.applied:
                skip.append(e)
            else:
                keep.append(e)
        if skip:
            for e in skip:
                self.order.passed(e.message.tp, e.message.offset)
            ack_events(skip)
        keep = await self.order.admit(keep)
        if self.redo is None:
            return [(keep, False)] if keep else []
        return self._re_form(keep)

    def _re_form(self, events: list[Any]) -> list[tuple[list[Any], bool]]:
        assert self.redo is not None
        last = {p: b for p, _, b in self.redo}
        for e in events:
            m = e.message
            if m.partition in last and m.offset <= last[m.partition]:
                self._redo_records[(m.partition, m.offset)] = e  # a replay replaces it
            else:
                self._held.append(e)
        whole = len(self._redo_records) == sum(b - a + 1 for _, a, b in self.redo)
        if whole:
            batch = [self._redo_records[k] for k in sorted(self._redo_records)]
            out = [(batch, True)]
        elif (
            time.monotonic() - self._redo_since >= self.redo_wait_s
            or len(self._held) > self.held_max
        ):
            log.warning("%s: the batch in doubt %s did not arrive whole (%d of its "
                        "records within %.0f s, %d later ones held); applying what came, "
                        "dropping what is stored", self.name, self.redo,
                        len(self._redo_records), self.redo_wait_s, len(self._held))  # fmt: skip
            out = [([self._redo_records[k] for k in sorted(self._redo_records)], False)]
        else:
            return []
        if self._held:
            out.append((self._held, False))
        self.redo, self._redo_records, self._held = None, {}, []
        return [(b, r) for b, r in out if b]

    def whole(self, spans: Spans, redo: bool) -> bool:
        """The batch's blocks will hold everything its records give: it is the batch in
        doubt re-formed whole, or holds no record in doubt (nothing dropped as stored).
        Decided on its spans: records are in doubt from a partition's first offset on."""
        return redo or not any(
            (pp := self.progress.get(p)) is not None and pp.doubt_until >= first > pp.applied
            for (_, p), (first, _) in spans.items()
        )

    def in_doubt(self, partition: int, offset: int) -> bool:
        pp = self.progress.get(partition)
        return pp is not None and pp.classify(offset) == "doubt"

    def applied(self, spans: Spans) -> None:
        """Record (in memory) that these ranges are stored."""
        for (topic, p), (_, last) in spans.items():
            self.order.passed(TP(topic, p), last)
            pp = self.progress.get(p, PartitionProgress())
            doubt = pp.doubt_until if pp.doubt_until > last else -1
            self.progress[p] = PartitionProgress(applied=max(pp.applied, last), doubt_until=doubt)
