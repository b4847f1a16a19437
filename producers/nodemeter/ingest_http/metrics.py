"""The service's counters, rendered in the Prometheus text format (version 0.0.4).

Written by hand: ``prometheus_client`` belongs to the worker extra, and the base SDK
install must run ``nodemeter ingest-http``. Label values are status codes, outcomes
and reason codes: bounded sets, never tenants or keys.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping

PREFIX = "nodemeter_ingest_http_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class IngestMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # by status code
        self.events: Counter[str] = Counter()  # by outcome: delivered, spooled, refused, ...
        self.refused: Counter[str] = Counter()  # by reason
        self.seconds_sum = 0.0
        self.seconds_count = 0
        self.in_flight = 0

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[str(status)] += 1
            self.seconds_sum += seconds
            self.seconds_count += 1

    def count_events(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.events[outcome] += n

    def count_refused(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] += 1
            self.events["refused"] += 1

    def render(
        self, gauges: Mapping[str, tuple[str, float]], meter: Callable[[], Mapping[str, int]]
    ) -> str:
        """The exposition text; ``gauges``: name -> (help, value); ``meter``: the SDK's
        counters (``MeterStats.as_dict``)."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> str:
            full = PREFIX + name
            lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} {kind}")
            return full

        with self._lock:
            name = family("requests_total", "counter", "HTTP requests answered, by status code")
            for code, n in sorted(self.requests.items()):
                lines.append(f'{name}{{code="{code}"}} {n}')
            name = family("events_total", "counter", "CloudEvents received, by outcome")
            for outcome, n in sorted(self.events.items()):
                lines.append(f'{name}{{outcome="{outcome}"}} {n}')
            name = family("refused_events_total", "counter", "events refused, by reason code")
            for reason, n in sorted(self.refused.items()):
                lines.append(f'{name}{{reason="{reason}"}} {n}')
            name = family("request_seconds", "summary", "time to answer a request")
            lines.append(f"{name}_sum {self.seconds_sum:.6f}")
            lines.append(f"{name}_count {self.seconds_count}")
            name = family("in_flight_requests", "gauge", "requests being handled")
            lines.append(f"{name} {self.in_flight}")
        for gauge, (help_text, value) in gauges.items():
            name = family(gauge, "gauge", help_text)
            lines.append(f"{name} {value:g}")
        for stat, n in meter().items():
            name = family(f"meter_{stat}", "gauge", f"the SDK producer's {stat} records")
            lines.append(f"{name} {n}")
        return "\n".join(lines) + "\n"
