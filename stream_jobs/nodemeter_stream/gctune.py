"""The worker's Python garbage collector: start-up objects frozen, fewer young collections.

With CPython's defaults (thresholds 700, 10, 10) the worker spent about a fifth of its
time in the collector under `bench/bench_worker.py` (docs/worker.md, *Garbage
collection*), holding the GIL throughout: every batch leaves some 100,000 objects alive
until it is stored (events, rows, lines), so they survive the young collections, reach the
oldest generation, and a full collection then walks every object of the process (about
400,000: the batch, the open state, and what start-up left) about once per batch.

:func:`tune_gc` freezes what exists once the app is built (``gc.freeze``: kept out of
every later collection; nearly all of it, modules and the app, lives as long as the
process) and raises the first generation's threshold (``DEFAULT_THRESHOLD``), so that a batch's objects mostly die by reference count
before a collection looks at them. Cycles are still collected, only later. The worker
calls it before Faust starts (``NODEMETER_WORKER_GC_THRESHOLD``; 0 keeps CPython's
defaults). :class:`GcTimer` adds up the time spent in collections, per generation, for
the ``nodemeter_gc_seconds_total`` metric.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

DEFAULT_THRESHOLD = 10_000


@dataclass(frozen=True)
class GcTuning:
    frozen: int  # objects moved to the permanent generation
    threshold: tuple[int, int, int]  # what gc.get_threshold() now says

    def describe(self) -> str:
        return f"froze {self.frozen} start-up objects; collection thresholds {self.threshold}"


def tune_gc(threshold0: int) -> GcTuning | None:
    """Collect once, freeze what survives, set the first generation's threshold to
    ``threshold0`` (the others unchanged). ``threshold0 <= 0``: change nothing, None."""
    if threshold0 <= 0:
        return None
    _, t1, t2 = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold0, t1, t2)
    return GcTuning(frozen=gc.get_freeze_count(), threshold=gc.get_threshold())


class GcTimer:
    """Seconds spent in garbage collections since :meth:`install`, per generation.

    The callback only adds floats: it may run on any thread, inside any allocation, so
    it takes no lock (a metric's would deadlock if the collection started inside it)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen = info["generation"]
        self.seconds[gen] += time.perf_counter() - self._started
        self.collections[gen] += 1

    def install(self) -> GcTimer:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
