"""The worker end to end on the real broker and chDB: merges, volume, crash recovery.

The worker runs as a subprocess (``python -m nodemeter_stream.worker_cli``) with its own
chDB path; results are read back after it stopped (one process owns a chDB path).
"""

from __future__ import annotations

import random
import re
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from worker_harness import (
    T0,
    WorkerProcess,
    committed,
    consume_all,
    encoded,
    end,
    produce,
    query,
    usage,
    wait_caught_up,
)

from nodemeter.codec import decode_payload, encode_payload, usage_event_to_avro
from nodemeter.events import Record, UsageEvent

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


# These tests check the ingest agent; they run it alone so that other agents (pricing,
# tested on its own) neither slow them down nor make their timing vary.
INGEST_ONLY = ("--agents", "ingest")


def worker_for(bootstrap: str, topics: Any, tmp_path: Path, *extra: str) -> WorkerProcess:
    return WorkerProcess(
        bootstrap=bootstrap,
        topic_prefix=topics.prefix,
        chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "worker.log",
        extra=(*INGEST_ONLY, *extra),
    )


def requests_with_branches(
    n_requests: int, *, tenants: int = 3, rng: random.Random
) -> tuple[list[Record], dict[tuple[str, str, str], int]]:
    """Requests fanning out into 2-4 parallel branches; expected input tokens per node."""
    records: list[Record] = []
    expected: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in range(n_requests):
        tenant = f"tenant-{r % tenants}"
        rid = f"req-{r:05d}"
        spans = [usage(tenant, rid, "root", node="plan", input_tokens=10, at=T0)]
        for b in range(rng.randint(2, 4)):
            for step, node in enumerate(("search", "llm")):
                tokens = rng.randint(1, 500)
                spans.append(
                    usage(
                        tenant,
                        rid,
                        f"b{b}.{step}",
                        node=node,
                        branch=f"root/b{b}",
                        parent="root",
                        input_tokens=tokens,
                        output_tokens=tokens // 3,
                        at=T0 + timedelta(milliseconds=10 * b + step),
                    )
                )
        for s in spans:
            assert isinstance(s, UsageEvent)
            expected[(tenant, rid, s.node_id)] += s.meters.input_tokens
        records.extend(spans)
        records.append(end(tenant, rid, len(spans)))
    return records, dict(expected)


def test_parallel_branches_merge_into_one_record_each_and_late_spans_correct(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    rng = random.Random(7)
    records, expected = requests_with_branches(60, rng=rng)
    # Branches run in several processes: each producer sends its own share, in its own
    # order; some spans are sent twice (retries).
    shares: list[list[Record]] = [[], [], []]
    for rec in records:
        shares[rng.randrange(3)].append(rec)
    late = usage("tenant-0", "req-late", "b9", node="llm", input_tokens=70, branch="root/b9")
    early = [usage("tenant-0", "req-late", "root", node="plan", input_tokens=5)]
    for share in shares:
        rng.shuffle(share)
        produce(kafka_bootstrap, topics.usage, encoded(share + share[: len(share) // 10]))
    produce(kafka_bootstrap, topics.usage, encoded([*early, end("tenant-0", "req-late", 2)]))

    w = worker_for(kafka_bootstrap, topics, tmp_path, "--request-timeout", "2").start()
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w)
        time.sleep(4)  # req-late times out (2 s) as incomplete
        produce(kafka_bootstrap, topics.usage, encoded([late, late]))  # arrives after the close
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w)
        time.sleep(1.5)
    finally:
        assert w.stop() == 0, w.log()[-3000:]

    rows = query(
        w.url,
        w.database,
        "SELECT tenant, request_id, node_id, input_tokens, revision FROM request_nodes FINAL "
        "WHERE request_id != 'req-late'",
    )
    got = {(t, r, n): tokens for t, r, n, tokens, _ in rows}
    assert got == expected
    recs = query(
        w.url,
        w.database,
        "SELECT request_id, count(), any(complete), any(spans_seen), any(input_tokens) "
        "FROM request_records FINAL GROUP BY request_id",
    )
    assert len(recs) == 61
    by_req = {r[0]: r for r in recs}
    assert all(r[1] == 1 for r in recs)  # exactly one record per request
    assert all(r[2] for r in recs)  # every request complete (the late one after correction)
    totals: dict[str, int] = defaultdict(int)
    for (_, rid, _), tokens in expected.items():
        totals[rid] += tokens
    assert {rid: int(r[4]) for rid, r in by_req.items() if rid != "req-late"} == totals
    # the late span: first an incomplete record (revision 2), then a correction (revision 3)
    history = query(
        w.url,
        w.database,
        "SELECT revision, complete, is_correction, input_tokens FROM request_records "
        "WHERE request_id = 'req-late' ORDER BY revision",
    )
    assert [(int(r[0]), r[1], r[2], int(r[3])) for r in history] == [
        (2, False, False, 5),
        (3, True, True, 75),
    ]


def _malformed(rng: random.Random, i: int, valid: UsageEvent) -> bytes:
    kind = i % 6
    if kind == 0:
        return b"\xc3\x01" + rng.randbytes(5)  # truncated header
    if kind == 1:
        return b"{not avro}" + rng.randbytes(20)  # bad magic
    if kind == 2:
        return b"\xc3\x01" + rng.randbytes(8) + b"\x00\x00"  # unknown fingerprint
    d = usage_event_to_avro(valid)
    if kind == 3:
        d["meters"]["input_tokens"] = -5
    elif kind == 4:
        d["tenant"] = ""
    else:
        d["attributes"] = {f"k{j}": "x" * 2000 for j in range(40)}  # oversize
    return encode_payload("usage_event", d)


@pytest.mark.slow
def test_100k_events_with_duplicates_and_malformed_are_stored_exactly(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    rng = random.Random(100_000)
    n = 100_000
    tenants = [f"tenant-{i}" for i in range(7)]
    events: list[UsageEvent] = []
    messages: list[tuple[bytes | None, bytes]] = []
    for i in range(n):
        tenant = tenants[i % len(tenants)]
        ev = usage(
            tenant,
            f"req-{i // 10}",
            f"s{i % 10}",
            node=f"node-{i % 4}",
            input_tokens=rng.randint(0, 5000),
            output_tokens=rng.randint(0, 900),
            cpu_ms=rng.randint(1, 50),
        )
        events.append(ev)
    messages = encoded(events)
    dupes = rng.sample(messages, n * 5 // 100)
    bad = [(b"bad", _malformed(rng, i, events[i])) for i in range(n // 100)]
    mixed = messages + dupes + bad
    rng.shuffle(mixed)
    produce(kafka_bootstrap, topics.usage, mixed)

    w = worker_for(kafka_bootstrap, topics, tmp_path, "--batch-size", "5000").start()
    t0 = time.monotonic()
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w, timeout=400)
        elapsed = time.monotonic() - t0
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    rate = len(mixed) / elapsed
    print(f"\n[worker throughput] {len(mixed)} records in {elapsed:.1f}s = {rate:,.0f} events/s")

    want: dict[str, list[int]] = {t: [0, 0, 0, 0] for t in tenants}
    for ev in events:
        w_ = want[ev.tenant]
        w_[0] += 1
        w_[1] += ev.meters.input_tokens
        w_[2] += ev.meters.output_tokens
        w_[3] += ev.meters.cpu_ms
    got = query(
        w.url,
        w.database,
        "SELECT tenant, count(), sum(input_tokens), sum(output_tokens), sum(cpu_ms) "
        "FROM usage_events FINAL GROUP BY tenant",
    )
    assert {r[0]: [int(x) for x in r[1:]] for r in got} == want
    # the dedupe table kept duplicates out before ClickHouse had to collapse them
    (physical,) = query(w.url, w.database, "SELECT count() FROM usage_events")
    assert int(physical[0]) == n
    dl = query(w.url, w.database, "SELECT reason, count() FROM dead_letters FINAL GROUP BY reason")
    assert sum(int(c) for _, c in dl) == len(bad)
    assert {r for r, _ in dl} >= {"truncated", "bad_magic", "unknown_schema", "negative_quantity"}
    dlq = consume_all(kafka_bootstrap, topics.dlq, expect=len(bad), timeout=60)
    assert sorted(m.value() for m in dlq) == sorted(m.value() for m in dlq)  # readable
    assert len(dlq) == len(bad)

    payloads = sorted(decode_payload(m.value())[1]["payload"] for m in dlq)
    assert payloads == sorted(v for _, v in bad)
    headers = dict(dlq[0].headers())
    assert {"reason", "source_topic", "source_partition", "source_offset"} <= set(headers)


@pytest.mark.slow
@pytest.mark.fault
def test_sigkill_mid_batch_then_restart_loses_nothing_and_counts_nothing_twice(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    rng = random.Random(9)
    records, expected = requests_with_branches(3000, tenants=4, rng=rng)
    usage_events = [r for r in records if isinstance(r, UsageEvent)]
    msgs = encoded(records)
    produce(kafka_bootstrap, topics.usage, msgs)

    # Commits every 3 s: at the kill, batches are stored in ClickHouse (and maybe in the
    # changelog) but their offsets are not committed, so the restart replays them.
    w = worker_for(
        kafka_bootstrap, topics, tmp_path, "--batch-size", "500", "--commit-interval", "3"
    ).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once some, not all, offsets are committed
        done = sum(max(0, o) for o in committed(kafka_bootstrap, w.app_id, topics.usage).values())
        if done > 0:
            break
        time.sleep(0.05)
    time.sleep(1.0)  # into the next commit interval
    assert w.alive()
    w.kill()
    assert done < len(msgs), "the worker finished before it could be killed"

    # resends of already-processed events arrive while the worker is down
    produce(kafka_bootstrap, topics.usage, encoded(usage_events[:2000]))
    w2 = WorkerProcess(
        bootstrap=kafka_bootstrap,
        topic_prefix=topics.prefix,
        chdb_path=w.chdb_path,
        log_path=tmp_path / "worker2.log",
        app_id=w.app_id,
        extra=(*INGEST_ONLY, "--batch-size", "500"),
    ).start()
    try:
        wait_caught_up(kafka_bootstrap, w2.app_id, topics.usage, worker=w2, timeout=240)
    finally:
        assert w2.stop() == 0, w2.log()[-3000:]

    per_tenant: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for ev in usage_events:
        per_tenant[ev.tenant][0] += 1
        per_tenant[ev.tenant][1] += ev.meters.input_tokens
    stored = {r[0] for r in query(w.url, w.database, "SELECT event_id FROM usage_events")}
    missing = {ev.event_id for ev in usage_events} - stored
    if missing:  # say where the lost events sat in the topic, and what the workers logged
        where = sorted(
            (m.partition(), m.offset())
            for m in consume_all(kafka_bootstrap, topics.usage, expect=len(msgs) + 2000)
            if decode_payload(m.value())[1]["event_id"] in missing
        )
        committed_at_kill = done
        raise AssertionError(
            f"{len(missing)} events lost at (partition, offset) {where}; "
            f"{committed_at_kill} offsets were committed at the kill; logs: {tmp_path}"
        )
    got = query(
        w.url,
        w.database,
        "SELECT tenant, count(), sum(input_tokens) FROM usage_events FINAL GROUP BY tenant",
    )
    assert {r[0]: [int(r[1]), int(r[2])] for r in got} == dict(per_tenant)
    nodes = query(
        w.url,
        w.database,
        "SELECT tenant, request_id, node_id, input_tokens FROM request_nodes FINAL",
    )
    assert {(t, r, n): int(x) for t, r, n, x in nodes} == expected
    (recs,) = query(
        w.url, w.database, "SELECT count(), countIf(complete) FROM request_records FINAL"
    )
    assert [int(x) for x in recs] == [3000, 3000]
    (physical,) = query(w.url, w.database, "SELECT count() FROM usage_events")
    print(
        f"\n[sigkill] killed after {done}/{len(msgs)} committed; "
        f"{int(physical[0]) - len(usage_events)} rows physically duplicated (collapsed by FINAL)"
    )


@pytest.mark.slow
@pytest.mark.fault
def test_records_delivered_out_of_order_are_read_again_not_committed_past(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    # What faust-streaming does after an assignment (a record prefetched before the seek
    # reaches the stream first): the worker's fetch positions jump 400 records ahead
    # behind Faust's back. Faust alone counts the skipped records as done and commits past
    # them; the commit guard must hold the commit and rewind, so every event is stored.
    records, expected = requests_with_branches(5000, tenants=4, rng=random.Random(5))
    usage_events = [r for r in records if isinstance(r, UsageEvent)]
    produce(kafka_bootstrap, topics.usage, encoded(records))
    w = worker_for(kafka_bootstrap, topics, tmp_path, "--batch-size", "300")
    w.env = {"NODEMETER_FAULT_SKIP_AHEAD": "400"}
    w.start()
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w, timeout=180)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    log = w.log()
    assert "fault injection: skipped 400 records ahead" in log
    assert "not delivered in order" in log and "rewinding to" in log
    stored = {r[0] for r in query(w.url, w.database, "SELECT event_id FROM usage_events")}
    missing = {e.event_id for e in usage_events} - stored
    assert not missing, f"{len(missing)} of {len(usage_events)} events never stored"
    nodes = query(
        w.url,
        w.database,
        "SELECT tenant, request_id, node_id, input_tokens FROM request_nodes FINAL",
    )
    assert {(t, r, n): int(x) for t, r, n, x in nodes} == expected


@pytest.mark.fault
def test_clickhouse_outage_pauses_consumption_and_nothing_is_lost(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    rng = random.Random(3)
    records, expected = requests_with_branches(40, rng=rng)
    produce(kafka_bootstrap, topics.usage, encoded(records))
    import socket

    with socket.socket() as s:  # a port nobody listens on: ClickHouse is "down"
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    down = WorkerProcess(
        bootstrap=kafka_bootstrap,
        topic_prefix=topics.prefix,
        chdb_path=tmp_path / "unused",
        log_path=tmp_path / "down.log",
        extra=(*INGEST_ONLY, "--url", f"http://127.0.0.1:{dead_port}"),  # the later --url wins
    ).start()
    try:
        time.sleep(8)
        assert down.alive(), down.log()[-3000:]
        # back-pressure: nothing was acknowledged, so nothing was committed
        assert all(o < 0 for o in committed(kafka_bootstrap, down.app_id, topics.usage).values())
    finally:
        assert down.stop() == 0, down.log()[-3000:]
    assert "retrying" in down.log()

    # ClickHouse is back: the same consumer group picks up every record
    up = WorkerProcess(
        bootstrap=kafka_bootstrap,
        topic_prefix=topics.prefix,
        chdb_path=tmp_path / "chdb",
        log_path=tmp_path / "up.log",
        app_id=down.app_id,
        extra=INGEST_ONLY,
    ).start()
    try:
        wait_caught_up(kafka_bootstrap, up.app_id, topics.usage, worker=up)
    finally:
        assert up.stop() == 0, up.log()[-3000:]
    nodes = query(
        up.url,
        up.database,
        "SELECT tenant, request_id, node_id, input_tokens FROM request_nodes FINAL",
    )
    assert {(t, r, n): int(x) for t, r, n, x in nodes} == expected


@pytest.mark.fault
def test_sigterm_mid_stream_stores_and_commits_the_batch_in_flight(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    events = [
        usage(f"t{i % 3}", f"r{i // 5}", f"s{i % 5}", input_tokens=i % 97) for i in range(30_000)
    ]
    produce(kafka_bootstrap, topics.usage, encoded(events))
    w = worker_for(kafka_bootstrap, topics, tmp_path, "--batch-size", "1000").start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = sum(max(0, o) for o in committed(kafka_bootstrap, w.app_id, topics.usage).values())
        if done > 0:
            break
        time.sleep(0.05)
    assert w.stop() == 0, w.log()[-3000:]
    log = w.log()
    assert "drained" in log
    # the collector was tuned before Faust started (gctune), and its time is reported
    assert re.search(r"gc: froze \d+ start-up objects; collection thresholds \(10000, ", log)
    assert re.search(r"gc: [\d.]+ s in collections \(generations 0/1/2: ", log), log[-3000:]
    offsets = committed(kafka_bootstrap, w.app_id, topics.usage)
    total = sum(max(0, o) for o in offsets.values())
    assert 0 < total < len(events), "stopped mid-stream"
    rows = query(
        w.url,
        w.database,
        "SELECT source_partition, count(), min(source_offset), max(source_offset) "
        "FROM usage_events GROUP BY source_partition",
    )
    stored = {int(p): (int(n), int(lo), int(hi)) for p, n, lo, hi in rows}
    # what was stored is exactly what was committed: offsets 0..committed-1, once each
    for p, off in offsets.items():
        if off > 0:
            assert stored[p] == (off, 0, off - 1)
        else:
            assert p not in stored


def test_a_runaway_request_and_a_huge_bad_record_do_not_stop_the_stream(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    """Valid input that used to stop every tenant's metering (issue 12, item 4): one
    request past ``--max-request-events`` (its sums could pass UInt64, and its state
    grew without bound), and a malformed record near Kafka's message limit, whose
    dead-letter copy had to fit the DLQ. Both become dead letters; the rest is stored."""
    cap = 50
    runaway = [usage("acme", "runaway", f"s{i}", input_tokens=1) for i in range(cap + 20)]
    others = [usage("globex", f"r{i}", "s0", input_tokens=i + 1) for i in range(30)]
    huge = b"\x00" * 990_000
    produce(kafka_bootstrap, topics.usage, [*encoded(runaway), (b"huge", huge), *encoded(others)])

    w = worker_for(kafka_bootstrap, topics, tmp_path, "--max-request-events", str(cap)).start()
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w, timeout=120)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    got = query(w.url, w.database, "SELECT tenant, count() FROM usage_events FINAL GROUP BY tenant")
    assert {r[0]: int(r[1]) for r in got} == {"acme": cap, "globex": 30}
    dl = query(w.url, w.database, "SELECT reason, count() FROM dead_letters FINAL GROUP BY reason")
    assert {r[0]: int(r[1]) for r in dl} == {"request_too_large": 20, "oversize": 1}
    # the table keeps the whole record; the topic's copy is cut to fit, and says so
    (row,) = query(w.url, w.database,
                   "SELECT length(payload) FROM dead_letters FINAL WHERE reason = 'oversize'")  # fmt: skip
    assert int(row[0]) == len(huge)
    dlq = consume_all(kafka_bootstrap, topics.dlq, expect=21, timeout=60)
    big = [decode_payload(m.value())[1] for m in dlq if dict(m.headers())["reason"] == b"oversize"]
    assert len(big) == 1 and big[0]["attributes"]["payload_truncated"] == "true"
    assert big[0]["attributes"]["payload_bytes"] == str(len(huge))
    assert len(big[0]["payload"]) < len(huge)


def test_one_event_from_a_broken_clock_is_a_dead_letter_and_billing_goes_on(
    kafka_bootstrap: str, topics: Any, tmp_path: Path
) -> None:
    """Issue 11, item 3: an event dated 2199 used to move its tenant's pricing watermark
    and have every later event dead-lettered ``window_closed``. It is refused at intake
    (``future_event_time``, against the worker's clock); the tenant's other events are
    stored as usual."""
    now = datetime.now(UTC)
    future = usage("acme", "r-future", "s", input_tokens=7, at=datetime(2199, 1, 1, tzinfo=UTC))
    normal = [usage("acme", f"r{i}", "s", input_tokens=i + 1, at=now) for i in range(20)]
    produce(kafka_bootstrap, topics.usage, encoded([future, *normal]))
    w = worker_for(kafka_bootstrap, topics, tmp_path).start()
    try:
        wait_caught_up(kafka_bootstrap, w.app_id, topics.usage, worker=w, timeout=120)
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    (stored,) = query(
        w.url, w.database, "SELECT count(), sum(input_tokens) FROM usage_events FINAL"
    )
    assert [int(x) for x in stored] == [20, sum(range(1, 21))]
    dl = query(w.url, w.database, "SELECT reason, tenant FROM dead_letters FINAL")
    assert [tuple(r) for r in dl] == [("future_event_time", "acme")]
