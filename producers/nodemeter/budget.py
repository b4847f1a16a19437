"""Quota before work: may this tenant start billable work now?

``meter.check_budget(tenant, workflow=None)`` answers from a local cache of the compacted
``nodemeter.budget-state.v1`` topic, which the pricing agent updates with every batch
that changes a budget's spend (Avro ``budget_state.v2``: spend, limit, window, status and
``hard_limit``). A background thread keeps the cache: it reads every partition from the
start (the topic is compacted: one record per tenant, budget and window) and then
follows it. The check itself never touches Kafka and never blocks the caller.

The answer is **blocked** when a ``hard_limit`` budget that applies (tenant-wide, or the
request's workflow's) has spend >= limit in a window holding now; otherwise allowed.

How stale it can be, and what it cannot promise:

* The spend lags real usage by the pipeline's latency: the SDK's linger, the worker's
  batch (``--batch-seconds``, 1 s), pricing's batch, the budget-state send, and this
  consumer's poll (0.5 s). A few seconds end to end on a healthy pipeline
  (``test_budget_check.py`` measures it); ``BudgetCheck.as_of`` says when the worker
  last updated the budget.
* Requests started concurrently all see the same answer. A hundred requests started in
  the same second after the last update are all allowed, and all of them may then spend
  (the race LiteLLM users report, litellm#40095). A hard limit is a limit on *starting*
  work once the overshoot is known, not a reservation: the overshoot is bounded by what
  a tenant can start within the staleness above. An exact reservation would need every
  start to go through one serialising service; nodemeter does not offer one.
* Before the cache has read the topic once (the first second or so after the first
  check), and whenever the broker cannot be reached, there is no data: the answer is
  allowed (``reason="no_data"``) unless the view was built with ``fail_closed=True``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from nodemeter.codec import decode_payload
from nodemeter.errors import BudgetExceededError, DecodeError
from nodemeter.kafkalog import with_logger

log = logging.getLogger("nodemeter.budget")

BUDGET_STATE_TOPIC = "nodemeter.budget-state.v1"


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """The answer of one check. ``reason``: ``ok``, ``exceeded`` or ``no_data``."""

    allowed: bool
    tenant: str
    workflow: str | None
    reason: str
    budget_id: str | None = None
    window_id: str | None = None
    limit_amount: Decimal | None = None
    spend_amount: Decimal | None = None
    currency: str | None = None
    as_of: datetime | None = None  # when the worker last updated that budget

    def message(self) -> str:
        if self.allowed:
            return f"tenant {self.tenant!r} may start work ({self.reason})"
        return (
            f"tenant {self.tenant!r} is over its hard limit: budget {self.budget_id!r} "
            f"window {self.window_id} spent {self.spend_amount} of {self.limit_amount} "
            f"{self.currency} (as of {self.as_of.isoformat() if self.as_of else '?'})"
        )

    def raise_if_blocked(self) -> None:
        if not self.allowed:
            raise BudgetExceededError(self.message())


def decide(
    records: Mapping[str, Mapping[str, Any]] | None,
    tenant: str,
    *,
    workflow: str | None = None,
    now: datetime,
    fail_closed: bool = False,
) -> BudgetCheck:
    """The check on one tenant's budget-state records (pure)."""
    if records is None:
        return BudgetCheck(not fail_closed, tenant, workflow, "no_data")
    for r in sorted(records.values(), key=lambda r: (str(r["budget_id"]), r["window_start"])):
        if not r.get("hard_limit") or r["spend_amount"] < r["limit_amount"]:
            continue
        if r.get("workflow") and r["workflow"] != workflow:
            continue
        if not r["window_start"] <= now < r["window_end"]:
            continue
        return BudgetCheck(
            False, tenant, workflow, "exceeded", budget_id=r["budget_id"],
            window_id=r.get("window_id") or None, limit_amount=r["limit_amount"],
            spend_amount=r["spend_amount"], currency=r.get("currency"),
            as_of=r.get("updated_at"),
        )  # fmt: skip
    return BudgetCheck(True, tenant, workflow, "ok")


ConsumerFactory = Callable[[Mapping[str, Any]], Any]


class BudgetView:
    """The local cache of the budget-state topic, kept by one daemon thread."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = BUDGET_STATE_TOPIC,
        *,
        consumer_factory: ConsumerFactory | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        fail_closed: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.fail_closed = fail_closed
        self.clock = clock
        self._factory = consumer_factory
        self._config = dict(consumer_config or {})
        self._lock = threading.Lock()
        self._by_tenant: dict[str, dict[str, Mapping[str, Any]]] = {}
        self.loaded = threading.Event()  # read up to the end of the topic once
        self._stop = threading.Event()
        self.records_read = 0
        self._thread = threading.Thread(target=self._run, name="nodemeter-budget", daemon=True)
        self._thread.start()

    def check(self, tenant: str, *, workflow: str | None = None) -> BudgetCheck:
        """Allowed or blocked, from the cache (never blocks on Kafka)."""
        with self._lock:
            records = dict(self._by_tenant.get(tenant, {})) if self.loaded.is_set() else None
        return decide(records, tenant, workflow=workflow, now=self.clock(),
                      fail_closed=self.fail_closed)  # fmt: skip

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    # --- the thread ---------------------------------------------------------------------

    def _consumer(self) -> Any:
        conf = {
            "bootstrap.servers": self.bootstrap,
            # assign(), not subscribe(): no group membership, nothing committed
            "group.id": "nodemeter-sdk-budget-view",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **self._config,
        }
        if self._factory is not None:
            return self._factory(conf)
        from confluent_kafka import Consumer

        return Consumer(with_logger(conf))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # keep the last answers; try again
                log.warning("budget view: %r; reconnecting in 1 s", exc)
                self._stop.wait(1.0)

    def _follow(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

        consumer = self._consumer()
        try:
            meta = consumer.list_topics(self.topic, timeout=5.0).topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                log.warning("budget view: topic %s not found yet; retrying", self.topic)
                self._stop.wait(1.0)
                return
            parts = sorted(meta.partitions)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
            at_end: set[int] = set()
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        if at_end >= set(parts) and not self.loaded.is_set():
                            self.loaded.set()
                    continue
                self._apply(msg.key(), msg.value())
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        self.records_read += 1
        k = (key or b"").decode(errors="replace")
        tenant = k.split("/", 1)[0]
        if value is None:  # a tombstone: the key is gone
            with self._lock:
                self._by_tenant.get(tenant, {}).pop(k, None)
            return
        try:
            name, record = decode_payload(value)
        except DecodeError as exc:
            log.warning("budget view: skipping an undecodable record %r: %s", k, exc)
            return
        if name != "budget_state":
            return
        with self._lock:
            self._by_tenant.setdefault(record["tenant"], {})[k] = record
