"""``nodemeter worker``: run the stream worker (Faust) until SIGTERM/SIGINT.

ClickHouse is embedded chDB by default (``NODEMETER_CLICKHOUSE_URL`` or ``--url`` for a
server); Kafka is ``NODEMETER_KAFKA_BOOTSTRAP`` or ``--bootstrap`` (the local dev
broker is started when neither is given). Logs are JSON lines on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from typing import Any

from nodemeter.errors import ConfigError, NodemeterError
from nodemeter_stream.app import WorkerConfig, build_app, check_broker
from nodemeter_stream.gctune import GcTimer, tune_gc
from nodemeter_stream.metrics import DEFAULT_HOST as DEFAULT_METRICS_HOST
from nodemeter_stream.sink.store import ClickHouseConfig
from nodemeter_stream.topics import ensure_topics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--bootstrap", help="Kafka bootstrap servers (default NODEMETER_KAFKA_BOOTSTRAP)")
    a(
        "--dev-broker",
        action="store_true",
        help="with no bootstrap configured, start (or reuse) the local development broker",
    )
    a("--url", help="ClickHouse URL: chdb://PATH (default) or http(s)://...")
    a("--database", help="ClickHouse database (default NODEMETER_CLICKHOUSE_DATABASE)")
    a("--topic-prefix", help="prefix for every topic name (default NODEMETER_TOPIC_PREFIX)")
    a("--app-id", help="Faust app id = consumer group (default nodemeter-worker)")
    a("--partitions", type=int, help="partitions of the usage topic (default 4)")
    a("--batch-size", type=int, help="records per ClickHouse batch (default 2000)")
    a("--batch-seconds", type=float, help="max wait before a partial batch is written (1.0)")
    a("--request-timeout", type=float, dest="request_timeout_s", help="seconds (300)")
    a(
        "--request-retention",
        type=float,
        dest="request_retention_s",
        help="seconds a request stays in memory after its last record (600)",
    )
    a(
        "--max-request-events",
        type=int,
        help="usage events one request may merge; later ones are dead-lettered as "
        "request_too_large (10000)",
    )
    a(
        "--max-future-skew",
        type=float,
        dest="max_future_skew_s",
        help="seconds an event may be dated ahead of this clock; later ones are "
        "dead-lettered as future_event_time (300)",
    )
    a("--sweep-interval", type=float, dest="sweep_interval_s", help="seconds (5)")
    a("--metrics-port", type=int, help="Prometheus /metrics port (0 = off)")
    a(
        "--metrics-host",
        default=DEFAULT_METRICS_HOST,
        help=f"address /metrics listens on ({DEFAULT_METRICS_HOST}; 0.0.0.0: all interfaces)",
    )
    a("--session-timeout", type=float, dest="session_timeout_s", help="seconds (30)")
    a("--heartbeat-interval", type=float, dest="heartbeat_interval_s", help="seconds (3)")
    a("--commit-interval", type=float, dest="commit_interval_s", help="offset commit, seconds (1)")
    a(
        "--agents",
        help="comma-separated agent modules to run (default: all of AGENT_MODULES); "
        "short names like 'ingest' mean nodemeter_stream.agents.<name>",
    )
    a("--log-level", default="info", choices=["debug", "info", "warning", "error"])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.__stderr__)  # faust redirects sys.stderr to logging
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return handler


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    bootstrap = args.bootstrap or os.environ.get("NODEMETER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        if not getattr(args, "dev_broker", False):
            raise ConfigError(
                "no Kafka bootstrap servers: give --bootstrap or set NODEMETER_KAFKA_BOOTSTRAP"
                " (--dev-broker starts the local development broker instead)"
            )
        from nodemeter_stream.smoke import bootstrap_servers

        bootstrap = bootstrap_servers()
    ch_kw = {k: v for k, v in (("url", args.url), ("database", args.database)) if v}
    return WorkerConfig.from_env(
        bootstrap=bootstrap,
        clickhouse=ClickHouseConfig(**ch_kw),
        topic_prefix=args.topic_prefix,
        app_id=args.app_id,
        partitions=args.partitions,
        batch_size=args.batch_size,
        batch_seconds=args.batch_seconds,
        request_timeout_s=args.request_timeout_s,
        request_retention_s=args.request_retention_s,
        max_request_events=args.max_request_events,
        max_future_skew_s=args.max_future_skew_s,
        sweep_interval_s=args.sweep_interval_s,
        metrics_port=args.metrics_port,
        session_timeout_s=args.session_timeout_s,
        heartbeat_interval_s=args.heartbeat_interval_s,
        commit_interval_s=args.commit_interval_s,
        agent_modules=agent_modules(args.agents),
    )


def agent_modules(spec: str | None) -> tuple[str, ...] | None:
    if not spec:
        return None
    names = [n.strip() for n in spec.split(",") if n.strip()]
    return tuple(n if "." in n else f"nodemeter_stream.agents.{n}" for n in names)


def inject_faults(worker: Any) -> None:
    """``NODEMETER_FAULT_SKIP_AHEAD=N`` (tests only): once every usage partition has a
    committed offset, jump the fetch positions N records ahead behind Faust's back, as a
    stale prefetched record does (see commit_guard)."""
    n = int(os.environ.get("NODEMETER_FAULT_SKIP_AHEAD", "0") or 0)
    if n <= 0:
        return
    from nodemeter_stream.commit_guard import skip_ahead

    app = worker.app
    done: list[dict[Any, int]] = []

    @app.timer(0.2)
    async def fault_skip_ahead() -> None:
        if done or app.rebalancing or not app.tables.recovery.completed.is_set():
            return
        consumer = app.consumer
        usage = [tp for tp in consumer.assignment() if tp.topic == worker.config.topics.usage]
        if usage and all(consumer._committed_offset[tp] is not None for tp in usage):
            done.append(await skip_ahead(consumer, n))


def run(args: argparse.Namespace) -> int:
    import faust

    cfg = config_from_args(args)
    # both fail within seconds, naming the cause, on a wrong password or an untrusted
    # certificate: topic creation (librdkafka), then a connection as Faust makes it
    replication = ensure_topics(cfg.bootstrap, cfg.topics, security=cfg.kafka_security)
    check_broker(cfg)
    cfg = dataclasses.replace(cfg, replication=replication.factor)
    worker = build_app(cfg)
    inject_faults(worker)
    gc_timer = GcTimer().install()
    worker.metrics.watch_gc(gc_timer)
    worker.metrics.serve(cfg.metrics_port, args.metrics_host)
    log = logging.getLogger("nodemeter.worker")

    setup_logging(args.log_level)

    @worker.app.task
    async def json_logs() -> None:
        # mode's Worker installs its own text handler when it starts; replace it.
        setup_logging(args.log_level)

    class Worker(faust.Worker):  # type: ignore[misc]
        """Graceful stop: finish the batch in flight, commit its offsets, then stop Faust."""

        def _on_sigterm(self) -> None:
            self._drain_then(super()._on_sigterm)

        def _on_sigint(self) -> None:
            self._drain_then(super()._on_sigint)

        def _drain_then(self, stop: Any) -> None:
            # Retries through a ClickHouse outage give up at once (that batch stays
            # unacknowledged); a healthy write in flight completes.
            worker.sink.stop()
            self._drain_task = asyncio.ensure_future(drain(stop), loop=self.loop)

    async def drain(stop: Any) -> None:
        ingest = worker.extras.get("ingest")
        try:
            if ingest is not None:
                ingest.draining = True
                await asyncio.wait_for(ingest.idle.wait(), cfg.session_timeout_s)
            await worker.app.commit(None)
            level, said = drained_message(worker.extras)
            log.log(level, said)
        except TimeoutError:
            log.warning(
                "drain before stop incomplete: the batch in flight did not finish within"
                " %.0f s%s; it stays unacknowledged and the next worker applies it again",
                cfg.session_timeout_s,
                in_flight(),
            )
        except Exception as exc:  # best effort: anything not committed is read again
            log.warning("drain before stop incomplete: %r", exc)
        stop()

    def in_flight() -> str:
        busy = worker.sink.call_in_flight_s()
        return "" if busy is None else f" (a ClickHouse call unanswered for {busy:.0f} s)"

    fw = Worker(worker.app, loglevel=args.log_level.upper(), quiet=True)
    # last before Faust starts: everything built so far is frozen (gctune.py)
    tuning = tune_gc(cfg.gc_threshold)
    log.info("gc: %s", tuning.describe() if tuning else "CPython's defaults (gc_threshold 0)")
    log.info(
        "worker starting app_id=%s topics=%s kafka=%s (%s) clickhouse=%s",
        cfg.app_id,
        cfg.topics.usage,
        cfg.bootstrap,
        cfg.kafka_security.describe(),
        cfg.clickhouse.redacted(),
    )
    try:
        fw.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        worker.sink.stop()
        log.info(
            "gc: %.1f s in collections (generations 0/1/2: %s s; %s collections)",
            sum(gc_timer.seconds),
            "/".join(f"{s:.1f}" for s in gc_timer.seconds),
            "/".join(map(str, gc_timer.collections)),
        )
        busy = worker.sink.call_in_flight_s()
        if busy is not None:
            # the sink's thread is a daemon: the process exits without waiting for it
            log.warning(
                "exiting with a ClickHouse call unanswered for %.0f s; abandoned (its batch"
                " is unacknowledged)",
                busy,
            )
    return 0


def drained_message(extras: dict[str, Any]) -> tuple[int, str]:
    """The drain's last line and its log level: what it stored, and (a warning) what it
    left for the next worker."""
    left = {name: getattr(extras.get(name), "unstored", 0) for name in ("ingest", "pricing")}
    if not any(left.values()):
        return logging.INFO, "drained: the last batch is stored and its offsets committed"
    said = ", ".join(f"{n} {name}" for name, n in left.items() if n)
    return logging.WARNING, (
        f"drained: records left unstored and unacknowledged ({said}; the sink stopped"
        " during a ClickHouse outage): the next worker applies them from the progress of"
        " record; the offsets of what is stored are committed"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nodemeter worker")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except NodemeterError as exc:  # a configuration or connection problem: say it plainly
        print(f"nodemeter worker: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
