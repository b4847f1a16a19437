"""Batches of records for an agent, taken straight off its channel's queue.

faust-streaming's ``Stream.noack_take`` hands an agent its records one at a time through
the stream's iterator: an asyncio wait with a task per record, sensors and the
current-event context. ``bench/faust_ceiling.py`` on this project's 2-core machine:
11,900 records/s with ``noack_take``, 16,900 with these batches (Faust's transport), and
13,500 against 30,300 on the worker's transport (docs/worker.md). :func:`batches`
takes the same records from the same queue (the agent's channel, which Faust's
conductor fills as it reads the topic) in bulk: everything queued at once, then short
polls until the batch is full or its first record has waited ``within`` seconds.

What the stream's iterator did per record and this does not: the monitor's per-event
sensors (so :func:`ack_events` acks through the event, not through the stream, to keep
the monitor's in and out counts balanced) and the current-event context variable (no
agent of ours reads it). What it keeps: the queue's back-pressure (a full queue pauses
fetching from that partition, and draining it, including to empty, resumes it, as
``queue.get`` does), errors thrown into the channel (raised here; the
``StopAsyncIteration`` that stops an actor ends the batches), and acknowledgement
by reference count, so commits follow acks exactly as before.

``bench/bench_worker.py`` and ``bench/faust_ceiling.py --intake batches`` measure it
against the trivial ``noack_take`` agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import faust

# How long an incomplete batch sleeps before it looks at the queue again.
POLL_S = 0.005


async def batches(stream: Any, max_size: int, within: float) -> AsyncIterator[list[Any]]:
    """Lists of 1..``max_size`` events from ``stream``'s channel, in arrival order; a
    batch is handed over when full or ``within`` seconds after its first record."""
    if max_size < 1 or within <= 0:
        raise ValueError("max_size must be >= 1 and within > 0")
    queue = aiter(stream.channel).queue
    loop = asyncio.get_running_loop()
    try:
        while True:
            batch = [await queue.get()]  # waits, without a task, for the first record
            deadline = loop.time() + within
            while len(batch) < max_size:
                if queue.empty():
                    # An empty queue resumes the partitions its pressure paused (get()
                    # does this when it finds the queue empty; get_nowait() at size 1
                    # only for one of them).
                    queue.maybe_endorse_pressure_drop()
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    await asyncio.sleep(min(POLL_S, left))
                    continue
                batch.append(queue.get_nowait())
            yield batch
    except StopAsyncIteration:
        # Faust stops an agent's actor by throwing this into its channel (the stream's
        # iterator ends there too); a batch not handed over stays unacknowledged.
        return


def ack_events(events: Iterable[Any]) -> None:
    """Ack each event by its message's reference count (what ``Stream.ack`` does, less
    the monitor's per-event sensors that :func:`batches` never opened)."""
    for event in events:
        event.ack()


class RawSchema(faust.Schema):  # type: ignore[misc]
    """Keys and values as the bytes that arrived (the ``raw`` codec), decoded in one
    step: Faust's schema looks the codec up and calls it twice per record (13 % of the
    worker's GIL-holding samples in a py-spy profile at full speed); for bytes the
    ``raw`` codec returns them unchanged, so this builds the event from them directly.
    Sending through a topic with this schema encodes as ``raw`` does (inherited)."""

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def compile(self, app: Any, **_: Any) -> Callable[..., Any]:
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode


def raw_topic(app: Any, name: str) -> Any:
    """``app.topic(name)`` with keys and values as bytes (:class:`RawSchema`)."""
    return app.topic(name, schema=RawSchema())
