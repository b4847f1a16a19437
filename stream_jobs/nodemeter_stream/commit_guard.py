"""Offset commits that never pass a record nobody processed, on topics without gaps.

faust-streaming 0.15.3 can hand a stream a record *ahead* of the committed position
right after an assignment: a record prefetched before the seek to the committed offset
(upstream issues #216 and #221). Its consumer then takes the offsets it jumped over for
a "gap", which it expects only from transaction markers or compaction: it counts them as
acknowledged (``_add_gap``), drops the re-fetched records below its read position, and
its commit check lets a missing head record through (``_new_offset`` allows
``min(acked) == committed + 1``; upstream #606). The next commit then passes records
nobody processed. Seen here: a restarted worker got offset 3242 first where 3125 was
committed, and committed past 3125..3241 (its SIGKILL test lost events when the crashed
worker had not stored them; a passing run crawled one offset per commit for 2 minutes).

Since the progress of record lives in ClickHouse (``sink.progress``), a commit that runs
ahead can no longer lose anything: a restarted agent starts after what is stored. The
guard stays so that committed offsets (lag metrics, "caught up" checks) tell the truth.
Our source topics are written by non-transactional producers and never compacted, so an
offset jump on them means records were not delivered, never a real gap. For the topics
named with :func:`guard_topics`, :class:`GuardedConsumer` (one subclass of
faust-streaming's aiokafka consumer, registered as the ``nodemeter://`` transport):

* ``_add_gap`` logs the jump and counts nothing as acknowledged;
* ``_new_offset`` commits nothing while the committed record itself is unacknowledged,
  and nothing on a partition never committed before its agent said where it starts
  (a worker stopped during a ClickHouse outage was seen committing a record a stopping
  stream had acknowledged, with nothing stored);
* each agent processes its partitions strictly in offset order (:class:`InOrder`): a
  record ahead of its turn is held back and the partition rewound to the record that is
  due; a timer seeks again where a rewind brought nothing, and where records are behind
  the commit but none arrive (liveness). If the log start moved past the record that is
  due (retention deleted records before they were read), it says so loudly and goes on
  from the log start.

Its fetch loop (``_drain_messages``) is Faust's, except that a record the conductor can
deliver without waiting is handed over directly, not raced against ``suspend_flow`` in
an asyncio wait (two tasks per record; docs/worker.md, "Intake off the event
loop").

Other topics (tables' changelogs) keep Faust's behaviour for commits. The pure decisions are
:func:`head_missing` and :func:`admit`; the rest is wiring onto Faust's consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING as _FETCHING
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers.aiokafka import Consumer as _AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as _AIOKafkaTransport

log = logging.getLogger("nodemeter.commits")

_GAPLESS: set[str] = set()
# faust-streaming's URL scheme for the guarded transport (app.py builds broker URLs with it)
SCHEME = "nodemeter"


def head_missing(acked: Sequence[int], committed: int | None) -> bool:
    """Later records are acknowledged but the committed (next) record is not."""
    return committed is not None and len(acked) > 0 and min(acked) > committed


def guard_topics(*topics: str) -> None:
    """Guard the commits of these topics (idempotent); register the transport."""
    _GAPLESS.update(topics)
    register_transport()


def guarded(topic: str) -> bool:
    return topic in _GAPLESS


def producer_backlog(buffer: Any, *, threaded: bool) -> int:
    """The sends waiting in Faust's producer buffer: what ``ProducerBuffer.size`` returns
    in faust-streaming 0.15.3, less its lookup of ``app.conf.producer_threaded`` through
    the settings registry on every call (about 5 % of the worker's main-thread samples
    when asked once per record, py-spy at full speed). The setting does not change
    while the app runs, so the fetch loop reads it once."""
    queue = buffer.queue if threaded else buffer.pending
    return 0 if queue is None else int(queue.qsize())


class GuardedConsumer(_AIOKafkaConsumer):  # type: ignore[misc]
    """faust-streaming's aiokafka consumer, with gap-free commits on guarded topics.

    Written against faust-streaming 0.15.3 (pinned in pyproject.toml; upstream issues
    #216, #221, #606): the two methods below override private ones of that version, and
    tests/unit/test_commit_guard.py runs them on Faust's own bookkeeping."""

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        if not guarded(tp.topic):
            await _AIOKafkaConsumer._add_gap(self, tp, offset_from, offset_to)
            return
        log.warning(
            "offsets %d..%d of %s[%d] were not delivered in order (a record prefetched "
            "before a seek?); they are not counted as processed and will be read again",
            offset_from, offset_to, tp.topic, tp.partition,
        )  # fmt: skip

    def _new_offset(self, tp: Any) -> int | None:
        if guarded(tp.topic):
            committed = self._committed_offset[tp]
            if committed is None:
                # Never committed: Faust would commit from whatever was acknowledged
                # first. Commit only from where the agent started this partition (set
                # by agents.effects.Gate once it read the progress of record), and only
                # once that record itself is acknowledged.
                committed = getattr(self, "start_offsets", {}).get(tp)
                if committed is None:
                    return None
            if head_missing(self._acked[tp], committed):
                return None
        result: int | None = _AIOKafkaConsumer._new_offset(self, tp)
        return result

    def _delivers_now(self, tp: Any, *, threaded: bool) -> bool:
        """The conductor can hand a record of ``tp`` to its channels without waiting:
        flow control active, no subscription change under way, the producer buffer
        within its limit and no queue of ``tp``'s channels full. ``threaded``: the
        app's ``producer_threaded`` setting (read once per fetch loop, see
        :func:`producer_backlog`)."""
        app = self.app
        conductor: Any = app.topics  # faust.transport.conductor.Conductor (its private index)
        if not app.flow_control.is_active() or conductor._tp_to_callback_lock.locked():
            return False
        buffer = app.producer.buffer
        if producer_backlog(buffer, threaded=threaded) > buffer.max_messages:
            return False
        return not any(chan.queue.full() for chan in conductor._tp_index.get(tp, ()))

    async def _drain_messages(self, fetcher: Any) -> None:
        """faust-streaming 0.15.3's fetch loop (``Consumer._drain_messages``), but a
        record the conductor can deliver without waiting (:meth:`_delivers_now`) is
        handed over directly instead of raced against ``suspend_flow`` in an asyncio
        wait, which makes two tasks per record (``bench/faust_ceiling.py --transport
        nodemeter --intake batches``: 30,300 records/s against 16,900 on Faust's loop).
        A record whose delivery could wait keeps Faust's race, so a rebalance still
        abandons it."""
        callback = self.callback
        stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspended = self.suspend_flow.is_set
        threaded = bool(self.app.conf.producer_threaded)
        since_yield = 0
        self.diag.set_flag(_FETCHING)
        try:
            while not (stopped() or fetcher_stopped()):
                self.diag.set_flag(_FETCHING)
                records = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany may return at once, again and again
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset, last = message.offset, read_offset[tp]
                    if last is not None and offset < last:
                        continue  # below the read position: Faust drops it too
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last + 1, offset)
                    commit_every = self._commit_every
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if not suspended() and self._delivers_now(tp, threaded=threaded):
                        await callback(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
                self.diag.unset_flag(_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(_FETCHING)


class Transport(_AIOKafkaTransport):  # type: ignore[misc]
    """The ``nodemeter://`` broker transport: aiokafka with :class:`GuardedConsumer`."""

    Consumer = GuardedConsumer


def register_transport() -> None:
    """Make ``nodemeter://host:port`` broker URLs use :class:`Transport`."""
    TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")


async def seek(consumer: Any, tp: Any, offset: int) -> None:
    """Seek on the consumer's own thread and move Faust's read position with it.

    ``Consumer.seek`` calls aiokafka from the event loop's thread while the consumer
    thread may be inside ``fetched_records`` (a KeyError crash seen in a test run);
    ``seek_wait`` runs it on the consumer thread and sets the read offset too."""
    await consumer.seek_wait({tp: offset})


async def skip_ahead(consumer: Any, n: int) -> dict[Any, int]:
    """Fault injection (tests): jump the fetch position of each assigned guarded partition
    ``n`` records ahead, behind Faust's read bookkeeping, as a stale prefetched record
    does: the ``n`` records are never fetched. Returns the new positions."""
    moved = {}
    for tp in sorted(consumer.assignment()):
        if guarded(tp.topic):
            moved[tp] = await consumer.position(tp) + n
            # on the consumer's own thread (aiokafka is not thread-safe), without telling
            # Faust's read bookkeeping
            aio = consumer._thread._ensure_consumer()
            await consumer._thread.call_thread(aio.seek, tp, moved[tp])
    log.warning("fault injection: skipped %d records ahead on %s", n, moved)
    return moved


# --- in-order admission (per agent) ----------------------------------------------------


def admit(
    positions: Iterable[tuple[Any, int]],
    expected: dict[Any, int],
    start: Callable[[Any], int | None],
) -> tuple[list[bool], dict[Any, int]]:
    """Which records of a batch to process now, and where to rewind (pure).

    ``positions`` are the batch's (partition, offset) in delivery order; ``expected`` the
    next offset per partition (updated in place); ``start(tp)`` where a partition starts
    when ``expected`` has nothing yet (its committed offset, None: take what comes).
    A record ahead of the expected offset, and every later one of its partition in the
    batch, is held back (not processed, not acknowledged) and the partition is to be
    rewound to the expected offset; records at or below it are processed (a replay,
    which dedupe makes harmless).
    """
    keep: list[bool] = []
    rewind: dict[Any, int] = {}
    for tp, offset in positions:
        if tp in rewind:
            keep.append(False)
            continue
        want = expected.get(tp)
        if want is None:
            want = start(tp)
        if want is not None and offset > want:
            rewind[tp] = want
            keep.append(False)
            continue
        expected[tp] = max(want or 0, offset + 1)
        keep.append(True)
    return keep, rewind


@dataclass
class InOrder:
    """An agent's guard: its partitions' records are processed strictly in offset order.

    Faust may deliver a record ahead of the committed position after an assignment (see
    the module docstring). Processing it first would reorder a tenant's events (pricing
    keeps a per-partition watermark of applied offsets and event-time windows), so the
    agent holds such records back and rewinds the partition to the first record it has
    not seen; the records come again, in order. Positions start from the committed
    offsets of each new assignment (generation); while a rebalance is under way, records
    from the previous assignment pass unchecked (they are in order with what came before).
    """

    app: Any  # faust.App: consumer, rebalancing, tables.recovery, consumer_generation_id
    expected: dict[Any, int] = field(default_factory=dict)
    generation: Any = None
    rewinds: int = 0
    held_back: int = 0
    # one seek per partition and target a second: the records fetched before a rewind
    # keep arriving for a while and are held back without a new seek each time
    reseek_s: float = 1.0
    # a partition with records behind its commit and none delivered for this long is
    # sought to its committed offset (a stalled fetch; harmless if it was not)
    stall_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    # where a partition starts in the current assignment, if not at its commit: the
    # agents set it from the progress of record in ClickHouse (agents.effects.Gate)
    start_at: dict[Any, int] = field(default_factory=dict)
    _sought: dict[Any, tuple[int, float]] = field(default_factory=dict)
    _seen_at: dict[Any, float] = field(default_factory=dict)

    def passed(self, tp: Any, offset: int) -> None:
        """Record ``offset`` of ``tp`` as applied, whoever applied it: a batch processed
        while a rebalance was under way (unchecked), or a record the agent skipped as
        already stored. The partition's start and next record move past it, so a
        re-delivered applied record never leaves this guard waiting for it (a livelock
        seen after a broker restart: the start stayed at a record processed during the
        rebalance, which the agent then skipped on every rewind)."""
        if tp in self.start_at and self.start_at[tp] <= offset:
            self.start_at[tp] = offset + 1
        if tp in self.expected and self.expected[tp] <= offset:
            self.expected[tp] = offset + 1

    def settled(self) -> bool:
        """No rebalance under way: positions are those of the current assignment."""
        app = self.app
        return not app.rebalancing and bool(app.tables.recovery.completed.is_set())

    async def admit(self, events: list[Any]) -> list[Any]:
        if not self.settled():
            return events
        app = self.app
        if app.consumer_generation_id != self.generation:
            self.generation = app.consumer_generation_id
            self.expected.clear()
        consumer, now = app.consumer, self.clock()
        for tp in {e.message.tp for e in events}:
            self._seen_at[tp] = now
        # a partition not seen in this assignment starts at its commit (None: nothing
        # committed yet, the first record delivered is the start)
        keep, rewind = admit(
            ((e.message.tp, e.message.offset) for e in events),
            self.expected,
            lambda tp: self.start_at.get(tp, consumer._committed_offset[tp]),
        )
        for tp, offset in rewind.items():
            held = [e.message.offset for e, k in zip(events, keep, strict=True)
                    if not k and e.message.tp == tp]  # fmt: skip
            self.held_back += len(held)
            last = self._sought.get(tp)
            if last is not None and last[0] == offset and now - last[1] < self.reseek_s:
                continue  # sought there a moment ago: these were fetched before it
            log.warning(
                "%s[%d]: record %d arrived while %d was next; holding back %d records and "
                "rewinding to %d so they are processed in order",
                tp.topic, tp.partition, min(held), offset, len(held), offset,
            )  # fmt: skip
            await self.rewind(tp, offset, now)
        return [e for e, k in zip(events, keep, strict=True) if k]

    async def rewind(self, tp: Any, offset: int, now: float) -> None:
        """Seek ``tp`` to ``offset``, or to the log start if retention deleted it."""
        consumer = self.app.consumer
        earliest = (await consumer.earliest_offsets(tp)).get(tp)
        if earliest is not None and earliest > offset:
            log.error(
                "records %d..%d of %s[%d] were deleted (retention) before this group read "
                "them; going on from the log start %d",
                offset, earliest - 1, tp.topic, tp.partition, earliest,
            )  # fmt: skip
            offset = self.expected[tp] = earliest
            consumer._committed_offset[tp] = earliest  # or no commit would pass the hole
        await seek(consumer, tp, offset)
        self._sought[tp] = (offset, now)
        self.rewinds += 1

    async def retry(self) -> list[Any]:
        """Seek again where a rewind has not brought its record within ``reseek_s`` (the
        records fetched before a seek can push Faust's read position past the rewound
        ones, which it then drops; with nothing more to deliver, no batch would come to
        ask again), and where records are behind the commit but none arrived for
        ``stall_s``. A timer calls this."""
        again: list[Any] = []
        if not self.settled():
            return again
        consumer, now = self.app.consumer, self.clock()
        assigned = consumer.assignment()
        for tp, (offset, at) in list(self._sought.items()):
            if self.expected.get(tp, offset) > offset or tp not in assigned:
                del self._sought[tp]  # it came (or the partition went elsewhere)
            elif now - at >= self.reseek_s:
                log.warning("%s[%d]: record %d still not delivered; seeking to it again",
                            tp.topic, tp.partition, offset)  # fmt: skip
                await self.rewind(tp, offset, now)
                again.append(tp)
        for tp in assigned:
            if not guarded(tp.topic) or tp in again:
                continue
            committed, high = consumer._committed_offset[tp], consumer.highwater(tp)
            seen = self._seen_at.setdefault(tp, now)
            if committed is None or high is None or high <= committed:
                self._seen_at[tp] = now
            elif now - seen >= self.stall_s:
                log.warning(
                    "%s[%d]: %d records behind the commit and none delivered for %.0f s; "
                    "seeking to the committed offset %d",
                    tp.topic, tp.partition, high - committed, now - seen, committed,
                )  # fmt: skip
                await seek(consumer, tp, committed)
                self._seen_at[tp] = now
                again.append(tp)
        return again


def in_order(app: Any, name: str) -> InOrder:
    """An agent's :class:`InOrder`, with its retry timer registered on ``app``."""
    order = InOrder(app)

    async def retry() -> None:
        await order.retry()

    app.timer(1.0, name=f"{name}.in_order_retry")(retry)
    return order
