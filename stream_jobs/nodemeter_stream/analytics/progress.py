"""Progress lines for long operations, on stderr so stdout stays machine-readable."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO


class Progress(Protocol):
    def __call__(self, task: str, done: int, total: int, detail: str = "") -> None: ...


class StderrProgress:
    """``[task] done/total detail (elapsed)``, one line per step."""

    def __init__(
        self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._t0 = clock()

    def __call__(self, task: str, done: int, total: int, detail: str = "") -> None:
        stream = self._stream or sys.stderr
        elapsed = self._clock() - self._t0
        sep = " " if detail else ""
        print(f"[{task}] {done}/{total}{sep}{detail} ({elapsed:.1f}s)", file=stream, flush=True)


def no_progress(task: str, done: int, total: int, detail: str = "") -> None:
    """A Progress that says nothing (library use, tests)."""
