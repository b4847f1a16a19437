"""``nodemeter ingest-http``: serve the CloudEvents ingest API until SIGTERM or SIGINT.

    NODEMETER_INGEST_KEYS=acme=$ACME_KEY nodemeter ingest-http --port 8080

Exit status: 0 after a clean drain; 2 bad arguments or configuration (the address in
use, no keys); 4 records lost at shutdown (neither delivered nor spooled).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from nodemeter.ingest_http.cloudevents import PRODUCER
from nodemeter.ingest_http.keys import ENV, KeyRing, hash_key

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_LOST = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (8080; 0: any free one)")
    parser.add_argument(
        "--keys-file", type=Path, help=f"JSON file of API key digests (and/or ${ENV})"
    )
    parser.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default: $NODEMETER_KAFKA_BOOTSTRAP)"
    )
    parser.add_argument(
        "--topic", help="usage topic (default: nodemeter.usage.v1 with $NODEMETER_TOPIC_PREFIX)"
    )
    parser.add_argument(
        "--spool-dir",
        type=Path,
        help="spool directory (default: $NODEMETER_SPOOL_DIR or ~/.local/state/nodemeter/spool)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=1024 * 1024)
    parser.add_argument("--max-events", type=int, default=1000, help="events per request")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s per key")
    parser.add_argument("--burst", type=int, default=2000, help="token bucket size per key")
    parser.add_argument(
        "--ack-timeout",
        type=float,
        help="seconds a request waits for Kafka or the spool (default: delivery timeout + 5)",
    )
    parser.add_argument("--delivery-timeout-ms", type=int, default=30_000)
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--hash-key",
        action="store_true",
        help="print the sha256 digest of a key read from stdin (for --keys-file), then exit",
    )


def run(args: argparse.Namespace) -> int:
    if args.hash_key:
        key = sys.stdin.readline().strip()
        if not key:
            print("nodemeter ingest-http: --hash-key reads a key on stdin", file=sys.stderr)
            return EXIT_USAGE
        print(hash_key(key))
        return EXIT_OK
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from nodemeter.errors import ConfigError
    from nodemeter.ingest_http.server import IngestConfig, IngestService
    from nodemeter.meter import Meter, MeterConfig

    kwargs: dict[str, Any] = {
        "producer_name": PRODUCER,
        "report_successes": True,
        "linger_ms": args.linger_ms,
        "delivery_timeout_ms": args.delivery_timeout_ms,
    }
    if args.bootstrap:
        kwargs["bootstrap_servers"] = args.bootstrap
    if args.topic:
        kwargs["topic"] = args.topic
    if args.spool_dir:
        kwargs["spool_dir"] = args.spool_dir
    try:
        config = IngestConfig(
            host=args.host,
            port=args.port,
            max_body_bytes=args.max_body_bytes,
            max_events=args.max_events,
            rate=args.rate,
            burst=args.burst,
            ack_timeout_s=args.ack_timeout,
            drain_timeout_s=args.drain_timeout,
        )
        keys = KeyRing.load(args.keys_file)
        meter = Meter(MeterConfig(**kwargs))
    except ConfigError as exc:
        print(f"nodemeter ingest-http: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        service = IngestService(config, keys, meter)
    except (ConfigError, OSError) as exc:  # OSError: the address is in use, not allowed...
        meter.close(timeout=1.0)
        print(f"nodemeter ingest-http: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service.start()
    print(
        f"nodemeter ingest-http: listening on {service.url} ({len(keys.keys)} keys, "
        f"topic {meter.config.topic})",
        file=sys.stderr,
        flush=True,
    )
    while not stop.wait(0.5):
        pass
    print("nodemeter ingest-http: draining", file=sys.stderr, flush=True)
    report = service.shutdown()
    print(
        f"nodemeter ingest-http: stopped; {report.cut_requests} requests cut at the drain "
        f"deadline, {report.undelivered} records undelivered at flush; spooled "
        f"{report.spooled}, lost {report.lost}",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_LOST if report.lost else EXIT_OK
