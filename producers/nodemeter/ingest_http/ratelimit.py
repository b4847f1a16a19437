"""Token buckets, one per API key. Pure: the clock (monotonic seconds) is injected.

A bucket holds up to ``burst`` tokens and gains ``rate`` per second. A request costs
one token per event in it, so a batch of 100 costs what 100 single events cost. A
request the bucket cannot pay for takes nothing and is told how long to wait.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from nodemeter.errors import ConfigError


class TokenBucket:
    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic):
        if not rate > 0 or math.isinf(rate):
            raise ConfigError(f"rate must be a positive, finite number per second, got {rate!r}")
        if burst < 1:
            raise ConfigError(f"burst must be at least 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, cost: int) -> float:
        """Take ``cost`` tokens: 0.0 when taken, else the seconds until they would be
        there (nothing taken). A cost above ``burst`` can never be paid: ``math.inf``."""
        if cost > self.burst:
            return math.inf
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= cost:
                self._tokens -= cost
                return 0.0
            return (cost - self._tokens) / self.rate


def retry_after(wait_s: float) -> int:
    """The ``Retry-After`` header's whole seconds for a wait: rounded up, at least 1."""
    return max(1, math.ceil(wait_s))


class RateLimiter:
    """A bucket per key name, made on first use with that key's rate and burst."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, name: str, cost: int, *, rate: float, burst: int) -> float:
        bucket = self._buckets.get(name)
        if bucket is None:
            with self._lock:
                bucket = self._buckets.setdefault(name, TokenBucket(rate, burst, clock=self._clock))
        return bucket.take(cost)
