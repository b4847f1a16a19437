"""Load on ``nodemeter ingest-http``, against the SDK's own emit rate, in one run.

    .venv/bin/python bench/bench_http_ingest.py [--clients 16] [--seconds 5] [--rounds 3]

Uses ``NODEMETER_KAFKA_BOOTSTRAP`` if set, else starts a private local broker (Kafka
4.4, KRaft) on free ports and stops it afterwards. The service runs as its own process
(``nodemeter ingest-http``, default settings but no rate limit); ``--clients`` threads
of this process each keep one HTTP/1.1 connection (``http.client``) and send requests
back to back, every body encoded beforehand. Prints, per round and as the median of
``--rounds`` interleaved rounds:

- single: one structured CloudEvent per request (``application/cloudevents+json``);
- batch100: 100 events per request (``application/cloudevents-batch+json``);
- sdk emit: ``Meter.emit`` of the same usage records in this process, then flush: the
  ceiling, since the service ends in the same producer.

Requests/s and events/s count answered requests only, each of which waited for the
broker's acknowledgement of all its records (every answer must be 202 with every
event "delivered"; anything else stops the run). Not pinned to a core: the service,
the clients and librdkafka's threads share what the machine has.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodemeter.events import Meters, UsageEvent, utcnow
from nodemeter.ingest_http.cloudevents import BATCH, STRUCTURED, USAGE_TYPE
from nodemeter.meter import Meter, MeterConfig

KEY = "bench-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event(run: str, i: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{run}-{i}",
        "source": "//bench/http",
        "type": USAGE_TYPE,
        "subject": f"acme/req-{run}-{i // 8}",
        "time": utcnow().isoformat(),
        "data": {"node_id": "llm.summarize", "span_id": f"span-{i % 8}", "parent_span_id": "root",
                 "branch_path": "1", "workflow": "rag", "model": "gpt-4o", "provider": "openai",
                 "input_tokens": 800 + i % 100, "output_tokens": 90, "cached_input_tokens": 512,
                 "attributes": {"region": "eu"}},
    }  # fmt: skip


def template(run: str, per: int) -> bytes:
    """A request body whose ids hold ``@@R@@``: replaced by the request's number, every
    event id is unique in the run (one bytes.replace per request, no JSON encoding)."""
    events = [event(f"{run}-@@R@@", j) for j in range(per)]
    return json.dumps(events[0] if per == 1 else events).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    url: str, clients: int, seconds: float, per: int, run: str
) -> tuple[float, float, list[float]]:
    """(requests/s, events/s, request latencies in ms) over ``seconds`` of load."""
    host, port = url.removeprefix("http://").split(":")
    ctype = STRUCTURED if per == 1 else BATCH
    templates = [template(f"{run}c{c}", per) for c in range(clients)]
    done = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(c: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Content-Type": ctype, "Authorization": f"Bearer {KEY}"}
        start.wait()
        body_of = templates[c].replace
        n = 0
        while time.perf_counter() < stop_at[0]:
            body = body_of(b"@@R@@", str(n).encode())
            n += 1
            t0 = time.perf_counter()
            conn.request("POST", "/v1/events", body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            latencies[c].append((time.perf_counter() - t0) * 1000)
            answer = json.loads(payload)
            outcomes = {a["outcome"] for a in answer.get("accepted", [])}
            if resp.status != 202 or outcomes != {"delivered"}:
                errors.append(f"{resp.status} {payload[:300]!r}")
                break
            done[c] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"bench: a request was not taken: {errors[0]}")
    requests = sum(done)
    return requests / elapsed, requests * per / elapsed, [x for c in latencies for x in c]


def sdk_emit(bootstrap: str, topic: str, n: int) -> float:
    """Meter.emit events/s of the same records, including the flush (the ceiling)."""
    now = utcnow()
    events = [
        UsageEvent(
            event_id=f"{uuid.uuid4().hex}", tenant="acme", request_id=f"req-{i // 8}",
            node_id="llm.summarize", span_id=f"span-{i % 8}", parent_span_id="root",
            branch_path="1", workflow="rag", model="gpt-4o", provider="openai",
            meters=Meters(input_tokens=800 + i % 100, output_tokens=90, cached_input_tokens=512),
            event_time=now, attributes={"region": "eu"},
        )
        for i in range(n)
    ]  # fmt: skip
    spool = Path(tempfile.mkdtemp(prefix="nodemeter-bench-spool-"))
    meter = Meter(MeterConfig(bootstrap_servers=bootstrap, topic=topic, spool_dir=spool))
    meter.emit(events[0])
    meter.flush(30)
    t0 = time.perf_counter()
    for e in events:
        meter.emit(e)
    assert meter.flush(60) == 0
    rate = n / (time.perf_counter() - t0)
    stats = meter.stats.as_dict()
    meter.close()
    assert stats["lost"] == 0 and stats["spooled"] == 0, stats
    return rate


def start_service(bootstrap: str, topic: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {**os.environ, "NODEMETER_INGEST_KEYS": f"acme={KEY}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodemeter.cli", "ingest-http", "--port", str(port),
         "--bootstrap", bootstrap, "--topic", topic, "--max-events", "100",
         "--rate", "1e9", "--burst", str(10**9), "--log-level", "WARNING",
         "--spool-dir", tempfile.mkdtemp(prefix="nodemeter-bench-http-spool-")],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(
        f"bench: the service did not become ready: {proc.stderr.read() if proc.stderr else ''}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=16, help="concurrent keep-alive connections")
    ap.add_argument("--seconds", type=float, default=5.0, help="load per mode and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--emit-events", type=int, default=100_000)
    args = ap.parse_args()

    cfg_broker = None
    bootstrap = os.environ.get("NODEMETER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        from nodemeter_stream.devenv import kafka

        cfg_broker = kafka.KafkaDevConfig(
            port=free_port(), controller_port=free_port(),
            home=Path(tempfile.mkdtemp(prefix="nodemeter-bench-")),
        )  # fmt: skip
        bootstrap = kafka.up(cfg_broker)
    try:
        run(bootstrap, args)
    finally:
        if cfg_broker is not None:
            from nodemeter_stream.devenv import kafka

            kafka.down(cfg_broker)
    return 0


def run(bootstrap: str, args: argparse.Namespace) -> None:
    from nodemeter_stream.topics import Topics, ensure_topics

    topics = Topics(prefix=f"bench{uuid.uuid4().hex[:6]}.")
    ensure_topics(bootstrap, topics)
    proc, url = start_service(bootstrap, topics.usage)
    print(
        f"broker {bootstrap}; service {url}; {args.clients} clients; {args.seconds:g} s per mode; "
        f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs (not pinned)"
    )
    modes: dict[str, Callable[[str], tuple[float, float, list[float]]]] = {
        "single": lambda tag: load(url, args.clients, args.seconds, 1, tag),
        "batch100": lambda tag: load(url, args.clients, args.seconds, 100, tag),
    }
    results: dict[str, list[tuple[float, float, list[float]]]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    ceiling: list[float] = []
    try:
        load(url, args.clients, 1.0, 1, "warmup")
        for r in range(args.rounds):
            for name, fn in modes.items():
                cpu0 = cpu_seconds(proc.pid)
                results[name].append(fn(f"r{r}{name}"))
                req_s, ev_s, _ = results[name][-1]
                # the service's own CPU per event (all its threads, librdkafka's too)
                cpu[name].append((cpu_seconds(proc.pid) - cpu0) / (ev_s * args.seconds) * 1e6)
                print(
                    f"round {r + 1} {name:<9} {req_s:>9,.0f} requests/s {ev_s:>10,.0f} events/s"
                    f"   service CPU {cpu[name][-1]:.0f} µs/event"
                )
            ceiling.append(sdk_emit(bootstrap, topics.usage, args.emit_events))
            print(f"round {r + 1} sdk emit  {ceiling[-1]:>31,.0f} events/s")
    finally:
        proc.terminate()
        proc.wait(60)
    print(
        f"--- median of {args.rounds} rounds; each request answered 202 after the broker's ack ---"
    )
    for name, rounds_ in results.items():
        req_s = statistics.median(x[0] for x in rounds_)
        ev_s = statistics.median(x[1] for x in rounds_)
        # ratio per round (a load change on a shared machine moves both), then the median
        ratio = statistics.median(x[1] / c for x, c in zip(rounds_, ceiling, strict=True))
        lat = sorted(v for x in rounds_ for v in x[2])
        p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
        print(
            f"{name:<9} {req_s:>9,.0f} requests/s {ev_s:>10,.0f} events/s   "
            f"{ratio:6.1%} of sdk emit   latency p50 {p50:.1f} ms, p99 {p99:.1f} ms   "
            f"service CPU {statistics.median(cpu[name]):.0f} µs/event"
        )
    print(
        f"sdk emit  {statistics.median(ceiling):>31,.0f} events/s (Meter.emit + flush, the ceiling)"
    )


if __name__ == "__main__":
    sys.exit(main())
