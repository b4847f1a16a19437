"""Prometheus metrics of the worker, on a registry of its own (tests build many workers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily

from nodemeter_stream.gctune import GcTimer

DEFAULT_HOST = "127.0.0.1"


class _GcCollector:
    """``nodemeter_gc_seconds_total{generation}``, read from a ``gctune.GcTimer`` at
    scrape time: the timer's callback takes no lock, so it cannot increment a metric."""

    def __init__(self, timer: GcTimer) -> None:
        self.timer = timer

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "nodemeter_gc_seconds",
            "Seconds this process spent in Python's garbage collector since start",
            labels=["generation"],
        )
        for gen, seconds in enumerate(self.timer.seconds):
            family.add_metric([str(gen)], float(seconds))
        yield family


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "nodemeter_events_in", "Records read from the usage topic", registry=r
        )
        self.events_stored = Counter(
            "nodemeter_events_stored", "First-seen valid usage records stored", registry=r
        )
        self.duplicates = Counter(
            "nodemeter_duplicates_dropped",
            "Records dropped as duplicates of stored ones",
            registry=r,
        )
        self.dead_letters = Counter(
            "nodemeter_dead_letters",
            "Records sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.request_records = Counter(
            "nodemeter_request_records",
            "Request records written",
            ["kind"],  # complete | incomplete | correction
            registry=r,
        )
        self.batch_size = Histogram(
            "nodemeter_batch_size",
            "Records per processed batch",
            buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        self.sink_latency = Histogram(
            "nodemeter_sink_latency_seconds",
            "Time for one acknowledged ClickHouse insert (retries included)",
            registry=r,
        )
        self.sink_retries = Counter(
            "nodemeter_sink_retries", "Failed ClickHouse insert attempts (retried)", registry=r
        )
        self.sink_call_seconds = Gauge(
            "nodemeter_sink_call_seconds",
            "How long the ClickHouse call now running has run (0 when none runs)",
            registry=r,
        )
        self.sink_rejected_rows = Counter(
            "nodemeter_sink_rejected_rows",
            "Rows ClickHouse refused for good (dead-lettered as store_rejected)",
            ["table"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "nodemeter_consumer_lag",
            "High-water mark minus the next offset to process",
            ["topic", "partition"],
            registry=r,
        )
        self.open_requests = Gauge(
            "nodemeter_open_requests", "Requests merged but not yet closed", registry=r
        )

    def watch_gc(self, timer: GcTimer) -> None:
        """Export ``nodemeter_gc_seconds_total{generation}`` from a ``gctune.GcTimer``."""
        self.registry.register(_GcCollector(timer))

    def serve(self, port: int, host: str = DEFAULT_HOST) -> Any:
        """Expose /metrics on ``host:port`` (port 0 = off); returns the HTTP server.

        Loopback by default: the metrics name topics and partitions and need no
        network; give ``host`` (``--metrics-host 0.0.0.0``) for a scraper elsewhere."""
        if not port:
            return None
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server
