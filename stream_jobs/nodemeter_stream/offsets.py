"""Consumer-group progress on Kafka: end offsets, committed offsets, lag, "caught up".

Used by the demo, the tests and operators to know when the worker has processed
(and committed, i.e. written to ClickHouse) everything produced so far.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from nodemeter.errors import NodemeterError
from nodemeter.kafkalog import with_logger


class NotCaughtUpError(NodemeterError, TimeoutError):
    pass


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """High watermark per partition of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        with_logger({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    )
    try:
        md = c.list_topics(topic, timeout=10)
        out = {}
        for p in md.topics[topic].partitions:
            _, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            out[p] = hi
        return out
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets (-1001 = none yet); retries while the coordinator moves.

    Reading committed offsets with the group id does not join the group.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer(with_logger({"bootstrap.servers": bootstrap, "group.id": group}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        for attempt in range(50):
            try:
                tps = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
                return {tp.partition: tp.offset for tp in tps}
            except KafkaException:  # NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS
                if attempt == 49:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")
    finally:
        c.close()


def lag(bootstrap: str, group: str, topic: str) -> int:
    """Messages of ``topic`` not yet committed by ``group`` (all partitions)."""
    ends = end_offsets(bootstrap, topic)
    got = committed(bootstrap, group, topic)
    return sum(max(0, hi - max(got.get(p, 0), 0)) for p, hi in ends.items())


def wait_caught_up(
    bootstrap: str,
    group: str,
    topics: Sequence[str],
    *,
    timeout: float = 120.0,
    alive: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> float:
    """Wait until ``group`` committed up to the end of every topic; return seconds waited.

    Topics are checked in order, so a pipeline of topics (usage, then the
    tenant-keyed forward topic) is waited for stage by stage.
    """
    t0 = time.monotonic()
    for topic in topics:
        want = end_offsets(bootstrap, topic)
        while True:
            if alive is not None and not alive():
                raise NotCaughtUpError(f"the consumer of {topic} exited before catching up")
            got = committed(bootstrap, group, topic)
            remaining = sum(max(0, hi - max(got.get(p, 0), 0)) for p, hi in want.items())
            if progress is not None:
                progress(remaining)
            if remaining == 0:
                break
            if time.monotonic() - t0 > timeout:
                raise NotCaughtUpError(
                    f"group {group} not caught up on {topic} after {timeout:.0f}s: "
                    f"committed {got}, end {want}"
                )
            time.sleep(0.25)
    return time.monotonic() - t0
