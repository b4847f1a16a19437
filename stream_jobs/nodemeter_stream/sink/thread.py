"""The sink's one call thread: ClickHouse calls in order, never holding up an exit.

clickhouse-connect blocks and chDB wants one thread, so every call of the sink runs on
one dedicated thread. ``concurrent.futures.ThreadPoolExecutor`` would do that too, but
its threads are joined when the interpreter exits: a call that never returns (a server
that accepts connections and then stalls, a network black hole) would keep a stopped
worker alive until the client's read timeout (300 s by default). This thread is a
daemon, so the process exits at once; the call it abandons is no different from one a
SIGKILL cuts off, which the progress of record already covers (its batch is neither
acknowledged nor recorded, and the next worker applies it again under the same tokens).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class CallThread(Executor):
    """An executor with one daemon thread; calls run in the order submitted."""

    def __init__(self, name: str = "clickhouse") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._shutdown = False
        self._busy_since: float | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError(f"{self._name}: cannot run a call after shutdown")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            future: Future[Any] = Future()
            self._queue.put((future, fn, args, kwargs))
            return future

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            self._busy_since = time.monotonic()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._busy_since = None  # before the waiter wakes, so it reads idle
                future.set_exception(exc)
            else:
                self._busy_since = None
                future.set_result(result)

    def in_flight_s(self) -> float | None:
        """For how long the call now running has run; None when the thread is idle."""
        since = self._busy_since
        return None if since is None else time.monotonic() - since

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Run no new calls; with ``wait``, wait for those queued (``Executor``'s contract)."""
        with self._lock:
            self._shutdown = True
            thread = self._thread
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            self._queue.put(None)
        if wait and thread is not None:
            thread.join()
