"""Faults around the worker, end to end on a real broker and chDB: a graceful stop during
a ClickHouse outage, a broker killed with SIGKILL under load, workers killed while they
rebuild their state on assignment.

Each test ends with one worker that ran to caught-up and compares what ClickHouse holds
with totals computed here: usage_events (with FINAL and without: a stored event is
stored once, ``count() = uniqExact(event_id)``), request_nodes per request and node,
request_records, and the input tokens the pricing agent priced. Ingest and pricing both
run (pricing with the example price books: every tenant here gets the default plan).
Every mismatch is listed in one assertion, with the logs' directory.

``make torture`` runs these with the other ``fault`` tests K times under CPU load.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_worker_pipeline import requests_with_branches
from worker_harness import (
    WorkerProcess,
    committed,
    encoded,
    produce,
    query,
    wait_caught_up,
)

from nodemeter.events import Record, UsageEvent

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow, pytest.mark.fault]

BOTH_AGENTS = ("--agents", "ingest,pricing")

Key = tuple[str, str, str]  # (tenant, request_id, node_id)


# --- traffic and what ClickHouse must hold afterwards ---------------------------------


@dataclass(frozen=True)
class Expected:
    events: list[UsageEvent]  # unique usage events
    nodes: dict[Key, int]  # input tokens per (tenant, request, node)
    requests: int

    def per_tenant(self) -> dict[str, tuple[int, int]]:
        """tenant -> (events, input tokens)."""
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for ev in self.events:
            out[ev.tenant][0] += 1
            out[ev.tenant][1] += ev.meters.input_tokens
        return {t: (n, tokens) for t, (n, tokens) in out.items()}


def traffic(n_requests: int, *, seed: int) -> tuple[list[Record], Expected]:
    """Requests fanning out into parallel branches (see ``requests_with_branches``)."""
    records, nodes = requests_with_branches(n_requests, tenants=4, rng=random.Random(seed))
    events = [r for r in records if isinstance(r, UsageEvent)]
    assert len({e.event_id for e in events}) == len(events)
    return records, Expected(events=events, nodes=nodes, requests=n_requests)


def split_requests(records: Sequence[Record], n: int) -> tuple[list[Record], list[Record]]:
    """The records of the first ``n`` requests, and the rest (order kept)."""
    first: set[str] = set()
    head: list[Record] = []
    tail: list[Record] = []
    for r in records:
        if r.request_id not in first and len(first) < n:
            first.add(r.request_id)
        (head if r.request_id in first else tail).append(r)
    return head, tail


def resends(expected: Expected, n: int, *, seed: int) -> list[Record]:
    """``n`` already-sent usage events sent again (same ids): must not count twice."""
    return list(random.Random(seed).sample(expected.events, n))


# --- workers ------------------------------------------------------------------------


def worker(
    bootstrap: str,
    prefix: str,
    tmp_path: Path,
    name: str,
    *extra: str,
    app_id: str | None = None,
) -> WorkerProcess:
    """A worker running ingest and pricing on ``tmp_path/chdb``, logging to ``name.log``."""
    w = WorkerProcess(
        bootstrap=bootstrap,
        topic_prefix=prefix,
        chdb_path=tmp_path / "chdb",
        log_path=tmp_path / f"{name}.log",
        extra=(*BOTH_AGENTS, *extra),
    )
    if app_id is not None:
        w.app_id = app_id
    return w


# Faust's last start-up line: the worker's signal handlers are in place by then.
READY = "[^Worker]: Ready"


def drain(bootstrap: str, topics: Any, w: WorkerProcess, *, timeout: float = 180.0) -> None:
    """Wait until ``w`` is running and the group committed the usage topic, then what
    ingest forwarded to pricing.

    ``w`` must be seen ready first: when earlier (killed) workers of the group already
    committed everything, the offsets alone are caught up at once, and a ``stop()`` that
    followed would SIGTERM a process still importing, which dies of the signal (-15)
    and says nothing of what a last worker does (seen once in ``make torture``)."""
    assert wait_log(w, READY, timeout), f"worker never ready:\n{w.log()[-3000:]}"
    wait_caught_up(bootstrap, w.app_id, topics.usage, worker=w, timeout=timeout)
    # ingest acknowledges a batch once its forwards are on the broker: the forward
    # topic's end offsets are final for what was committed above
    wait_caught_up(bootstrap, w.app_id, topics.usage_by_tenant, worker=w, timeout=timeout)


def stop_all(*workers: WorkerProcess | None) -> None:
    for w in workers:
        if w is not None and w.alive():
            w.kill()


def wait_assigned(bootstrap: str, group: str, topic: str, w: WorkerProcess, timeout: float) -> None:
    """Wait until a member of ``group`` holds partitions of ``topic``."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert w.alive(), w.log()[-3000:]
        with contextlib.suppress(Exception):  # the group may not exist yet
            desc = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
            for m in desc.members:
                if any(tp.topic == topic for tp in m.assignment.topic_partitions):
                    return
        time.sleep(0.2)
    raise AssertionError(f"no member of {group} was assigned {topic} in {timeout:.0f}s")


def wait_log(w: WorkerProcess, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in w.log():
            return True
        if not w.alive():
            return False
        time.sleep(0.05)
    return False


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    return sum(max(0, o) for o in committed(bootstrap, group, topic).values())


# --- the check ----------------------------------------------------------------------


def reconcile_problems(w: WorkerProcess) -> list[str]:
    """``nodemeter reconcile``'s BAD lines for ``w``'s store and group (the worker's
    tallies must equal the topic's offsets after any crash); empty when all are OK."""
    res = subprocess.run(
        [sys.executable, "-m", "nodemeter.cli", "reconcile", "--bootstrap", w.bootstrap,
         "--url", w.url, "--database", w.database, "--topic-prefix", w.topic_prefix,
         "--app-id", w.app_id],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if res.returncode == 0:
        return []
    return [f"nodemeter reconcile exited {res.returncode}:\n{res.stdout}{res.stderr}"]


def problems_in_store(w: WorkerProcess, exp: Expected) -> list[str]:
    """Every way in which ClickHouse differs from ``exp``; empty when exact."""
    out: list[str] = reconcile_problems(w)
    want_events = {e.event_id: e for e in exp.events}
    rows = query(w.url, w.database, "SELECT event_id, count() FROM usage_events GROUP BY event_id")
    copies = {eid: int(n) for eid, n in rows}
    missing = sorted(set(want_events) - set(copies))
    unknown = sorted(set(copies) - set(want_events))
    twice = {eid: n for eid, n in copies.items() if n > 1}
    if missing:
        out.append(f"{len(missing)} of {len(want_events)} events never stored, e.g. {missing[:3]}")
    if unknown:
        out.append(f"{len(unknown)} unknown event ids stored, e.g. {unknown[:3]}")

    want_tenants = exp.per_tenant()
    totals = query(
        w.url,
        w.database,
        "SELECT 'final', tenant, count(), sum(input_tokens) FROM usage_events FINAL GROUP BY tenant "
        "UNION ALL "
        "SELECT 'raw', tenant, count(), sum(input_tokens) FROM usage_events GROUP BY tenant",
    )
    final = {t: (int(n), int(s)) for k, t, n, s in totals if k == "final"}
    raw = {t: (int(n), int(s)) for k, t, n, s in totals if k == "raw"}
    if final != want_tenants:
        out.append(
            f"usage_events FINAL (events, input_tokens) per tenant {final} != {want_tenants}"
        )
    if twice or raw != final:
        out.append(
            f"usage_events without FINAL: {sum(n - 1 for n in twice.values())} extra copies of "
            f"{len(twice)} events (count() != uniqExact(event_id)); per tenant {raw}"
        )

    nodes = query(
        w.url,
        w.database,
        "SELECT tenant, request_id, node_id, input_tokens, events FROM request_nodes FINAL",
    )
    got_nodes = {(t, r, n): int(x) for t, r, n, x, _ in nodes}
    node_tenants: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t, _, _, x, n_events in nodes:
        node_tenants[t][0] += int(n_events)
        node_tenants[t][1] += int(x)
    got_node_tenants = {t: (n, x) for t, (n, x) in node_tenants.items()}
    if got_node_tenants != want_tenants:
        out.append(
            f"request_nodes FINAL (events, input_tokens) per tenant {got_node_tenants} "
            f"!= {want_tenants}"
        )
    if got_nodes != exp.nodes:
        absent = sorted(set(exp.nodes) - set(got_nodes))
        wrong = sorted(k for k in set(exp.nodes) & set(got_nodes) if exp.nodes[k] != got_nodes[k])
        extra = sorted(set(got_nodes) - set(exp.nodes))
        out.append(
            f"request_nodes: {len(absent)} nodes missing (e.g. {absent[:2]}), {len(wrong)} with "
            f"wrong input_tokens (e.g. {[(k, got_nodes[k], exp.nodes[k]) for k in wrong[:2]]}), "
            f"{len(extra)} unexpected"
        )

    ((n_records, n_complete),) = query(
        w.url, w.database, "SELECT count(), countIf(complete) FROM request_records FINAL"
    )
    if (int(n_records), int(n_complete)) != (exp.requests, exp.requests):
        out.append(
            f"request_records FINAL: {n_records} records, {n_complete} complete; "
            f"want {exp.requests} complete"
        )

    priced = query(
        w.url,
        w.database,
        "SELECT tenant, uniqExact(event_id), toString(sum(quantity)) FROM priced_lines FINAL "
        "WHERE line_kind = 'usage' AND meter = 'input_tokens' GROUP BY tenant",
    )
    got_priced = {t: (int(n), int(q)) for t, n, q in priced}
    if got_priced != want_tenants:
        out.append(
            f"priced_lines FINAL input_tokens (events, quantity) per tenant {got_priced} "
            f"!= {want_tenants}"
        )
    return out


# --- a) SIGTERM during a ClickHouse outage ---------------------------------------------


@pytest.mark.parametrize(
    ("n_requests", "outage"),
    [(40, "refused"), (600, "refused"), (40, "hung")],
    ids=["40-requests", "600-requests", "40-requests-hung"],
)
def test_sigterm_during_clickhouse_outage_then_the_next_worker_stores_every_record(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, n_requests: int, outage: str
) -> None:
    """The first worker never reaches ClickHouse, is stopped with SIGTERM while its batch
    is retrying and more are fetched; it must exit 0 within the stop timeout, and a
    second worker in the same group, with ClickHouse back, must read and store every
    record. ``refused``: a port nobody listens on (each try fails at once). ``hung``: a
    port that accepts connections and never answers (a stalled server, a black hole),
    so the SIGTERM lands while a call is in flight."""
    records, exp = traffic(n_requests, seed=n_requests)
    produce(kafka_bootstrap, topics.usage, encoded(records))
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    dead_port = hole.getsockname()[1]
    if outage == "hung":
        hole.listen(64)  # the kernel completes the handshakes; nobody ever reads
    else:
        hole.close()
    # the later --url wins: ClickHouse is "down"
    down = worker(
        kafka_bootstrap, topics.prefix, tmp_path, "down", "--batch-size", "500",
        "--url", f"http://127.0.0.1:{dead_port}",
    )  # fmt: skip
    up: WorkerProcess | None = None
    try:
        down.start()
        wait_assigned(kafka_bootstrap, down.app_id, topics.usage, down, timeout=90)
        time.sleep(3)  # records fetched, the first batch retrying against the dead port
        assert down.alive(), down.log()[-3000:]
        rc_down: int | str
        try:
            rc_down = down.stop()
        except subprocess.TimeoutExpired:
            rc_down = "no exit within 60 s of SIGTERM"
            down.kill()
        committed_down = committed(kafka_bootstrap, down.app_id, topics.usage)

        up = worker(kafka_bootstrap, topics.prefix, tmp_path, "up", app_id=down.app_id).start()
        drain(kafka_bootstrap, topics, up)
        assert up.stop() == 0, up.log()[-3000:]
    finally:
        stop_all(down, up)
        hole.close()

    context = []
    if rc_down != 0:
        context.append(f"the worker stopped during the outage exited with {rc_down}")
    if any(o >= 0 for o in committed_down.values()):
        context.append(f"offsets committed although nothing was stored: {committed_down}")
    left = [ln for ln in down.log().splitlines() if "left unacknowledged" in ln]
    if left and "drained: the last batch is stored" in down.log():
        context.append("the drain said the last batch is stored after leaving records unstored")
    print(f"\n[outage] {len(records)} records; first worker: rc={rc_down}, {left[-1:]}")
    problems = [*context, *problems_in_store(up, exp)]
    assert not problems, "\n".join([*problems, f"logs: {tmp_path}"])


# --- b) the broker killed with SIGKILL under load --------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BackgroundProducer(threading.Thread):
    """Sends ``messages`` in chunks, pausing between them, across a broker outage; a
    message whose delivery failed is sent again (a resend: same event id)."""

    def __init__(
        self, bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes]], *,
        chunk: int, pause_s: float,
    ) -> None:  # fmt: skip
        super().__init__(name="background-producer", daemon=True)
        self.bootstrap, self.topic, self.messages = bootstrap, topic, list(messages)
        self.chunk, self.pause_s = chunk, pause_s
        self.sent = 0
        self.failed_deliveries = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        from confluent_kafka import Producer

        # Not idempotent: a retry after the broker's restart may write a record twice,
        # which the worker must drop as a duplicate (same event id).
        p = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "acks": "all",
                "enable.idempotence": False,
                "linger.ms": 20,
                "message.timeout.ms": 120_000,
                "reconnect.backoff.max.ms": 500,
                "queue.buffering.max.messages": 500_000,
            },
            logger=logging.getLogger("test.background-producer"),  # not stderr: refusals
        )
        failed: list[tuple[bytes, bytes]] = []

        def report(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append((msg.key(), msg.value()))

        todo = self.messages
        for _ in range(5):
            for i in range(0, len(todo), self.chunk):
                if self.stopping.is_set():
                    return
                for key, value in todo[i : i + self.chunk]:
                    while True:
                        try:
                            p.produce(self.topic, value=value, key=key, on_delivery=report)
                            break
                        except BufferError:
                            p.poll(0.1)
                self.sent += min(self.chunk, len(todo) - i)
                p.poll(0)
                time.sleep(self.pause_s)
            left = p.flush(150)
            assert left == 0, f"{left} messages not delivered"
            if not failed:
                return
            self.failed_deliveries += len(failed)
            todo, failed = failed, []
        raise AssertionError(f"{len(todo)} messages failed five times")


def kill_broker(cfg: Any) -> int:
    """SIGKILL the broker's java process; return its pid once it is gone."""
    from nodemeter_stream.devenv import kafka

    pid = kafka.read_pid(cfg)
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # our child (kafka.up started it): reap it
    deadline = time.monotonic() + 30
    while kafka.read_pid(cfg) is not None:
        assert time.monotonic() < deadline, f"broker pid {pid} survived SIGKILL"
        time.sleep(0.1)
    return pid


def test_broker_sigkill_and_restart_under_load_stores_every_event_once(tmp_path: Path) -> None:
    """The worker consumes while more records arrive; the broker is killed with SIGKILL,
    stays down a few seconds, and comes back on the same port and data dir. The same
    worker carries on: every unique event is stored once, every request exact."""
    from nodemeter_stream.devenv import kafka
    from nodemeter_stream.topics import Topics, ensure_topics

    cfg = kafka.KafkaDevConfig(
        port=_free_port(), controller_port=_free_port(), home=tmp_path / "kafka"
    )
    bootstrap = kafka.up(cfg)
    w: WorkerProcess | None = None
    producer: BackgroundProducer | None = None
    try:
        topics = Topics(prefix=f"k{uuid.uuid4().hex[:8]}.")
        ensure_topics(bootstrap, topics)
        records, exp = traffic(1200, seed=11)
        first, rest = split_requests(records, 300)
        later = encoded([*rest, *resends(exp, 600, seed=12)])
        produce(bootstrap, topics.usage, encoded(first))

        w = worker(bootstrap, topics.prefix, tmp_path, "worker", "--batch-size", "500").start()
        deadline = time.monotonic() + 120
        while committed_total(bootstrap, w.app_id, topics.usage) == 0:  # consuming
            assert w.alive() and time.monotonic() < deadline, w.log()[-3000:]
            time.sleep(0.1)
        producer = BackgroundProducer(bootstrap, topics.usage, later, chunk=250, pause_s=0.1)
        producer.start()
        time.sleep(1.5)  # under load: records arriving, batches in flight
        at_kill = committed_total(bootstrap, w.app_id, topics.usage)
        sent_at_kill = producer.sent
        pid = kill_broker(cfg)
        time.sleep(4)
        kafka.up(cfg)
        producer.join(240)
        assert not producer.is_alive(), "the producer did not finish"
        assert producer.error is None, repr(producer.error)
        drain(bootstrap, topics, w, timeout=240)
        assert w.stop() == 0, w.log()[-3000:]
        # while this test's own broker still runs: reconcile reads the topics' offsets
        problems = problems_in_store(w, exp)
    finally:
        if producer is not None:
            producer.stopping.set()
        stop_all(w)
        kafka.down(cfg)

    print(
        f"\n[broker kill] pid {pid} killed with {at_kill} records committed and "
        f"{sent_at_kill}/{len(later)} of the later records sent; "
        f"{producer.failed_deliveries} deliveries failed and were sent again"
    )
    assert not problems, "\n".join([*problems, f"logs: {tmp_path}"])


# --- c) SIGKILL while the worker rebuilds its state on assignment ----------------------


def test_sigkill_while_rebuilding_state_on_assignment_then_exact(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    """A store with history (a worker ran through ~20k records and stopped); more records
    and resends arrive; three workers in turn are killed with SIGKILL early in their life:
    the first 0-2 s after its start (before it loads state), the others 0-2 s after their
    partitions were assigned, while they load state (one delay from each third of 0-2 s,
    shuffled by a seeded rng). A last worker runs to caught-up: nothing lost, nothing
    counted twice."""
    records, exp = traffic(2800, seed=21)
    history, later = split_requests(records, 2500)
    produce(kafka_bootstrap, topics.usage, encoded(history))
    first = worker(kafka_bootstrap, topics.prefix, tmp_path, "history").start()
    group = first.app_id
    killed: list[WorkerProcess] = []
    final: WorkerProcess | None = None
    kills: list[str] = []
    try:
        drain(kafka_bootstrap, topics, first)
        assert first.stop() == 0, first.log()[-3000:]
        produce(kafka_bootstrap, topics.usage, encoded([*later, *resends(exp, 800, seed=22)]))

        # one delay from each third of 0-2 s, in a seeded order
        rng = random.Random(23)
        delays = [rng.uniform(2 * j / 3, 2 * (j + 1) / 3) for j in range(3)]
        rng.shuffle(delays)
        for i, delay in enumerate(delays):
            before = committed_total(kafka_bootstrap, group, topics.usage)
            k = worker(kafka_bootstrap, topics.prefix, tmp_path, f"killed-{i}", app_id=group)
            killed.append(k)
            k.start()
            t0 = time.monotonic()
            origin = "start"
            if i > 0:  # aiokafka's line: the worker loads its state right after it
                if wait_log(k, "Setting newly assigned partitions", timeout=90):
                    origin = "assignment"
                    t0 = time.monotonic()
                else:
                    origin = "start (no assignment logged within 90 s)"
            time.sleep(max(0.0, t0 + delay - time.monotonic()))
            assert k.alive(), k.log()[-3000:]
            batches = k.log().count('"batch records=')
            k.kill()
            after = committed_total(kafka_bootstrap, group, topics.usage)
            kills.append(
                f"kill {i}: {delay:.2f}s after {origin}; {batches} batches logged; "
                f"committed {before} -> {after}"
            )

        final = worker(kafka_bootstrap, topics.prefix, tmp_path, "final", app_id=group).start()
        drain(kafka_bootstrap, topics, final)
        assert final.stop() == 0, final.log()[-3000:]
    finally:
        stop_all(first, *killed, final)

    print("\n[rebuild kills] " + "\n[rebuild kills] ".join(kills))
    problems = problems_in_store(final, exp)
    assert not problems, "\n".join([*kills, *problems, f"logs: {tmp_path}"])
