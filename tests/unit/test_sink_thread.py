"""The sink's call thread (``sink.thread.CallThread``): order, errors, and an exit that
a call which never returns does not hold up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from nodemeter_stream.sink.thread import CallThread


def test_calls_run_in_order_on_one_thread_and_errors_reach_the_caller() -> None:
    pool = CallThread("t")
    seen: list[tuple[int, str]] = []
    futures = [
        pool.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
        for i in range(50)
    ]
    for f in futures:
        f.result(5)
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"t"}
    boom = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        boom.result(5)
    assert pool.submit(lambda: 7).result(5) == 7  # the thread survives an error
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)


def test_in_flight_s_tells_how_long_the_running_call_has_run() -> None:
    pool = CallThread()
    assert pool.in_flight_s() is None
    release = threading.Event()
    f = pool.submit(release.wait, 5)
    time.sleep(0.2)
    busy = pool.in_flight_s()
    assert busy is not None and busy >= 0.15
    at_done: list[float | None] = []
    f.add_done_callback(lambda _: at_done.append(pool.in_flight_s()))
    release.set()
    f.result(5)
    # idle by the time its waiter wakes, so a gauge read then does not show a stall
    assert at_done == [None]
    assert pool.in_flight_s() is None
    gate = threading.Event()
    failing = pool.submit(lambda: gate.wait(5) and 1 / 0)
    failing.add_done_callback(lambda _: at_done.append(pool.in_flight_s()))
    gate.set()  # the callback is in place before the call ends
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    assert at_done == [None, None]
    pool.shutdown()


def test_shutdown_cancels_queued_calls_when_asked() -> None:
    pool = CallThread()
    release = threading.Event()
    running = pool.submit(release.wait, 5)
    queued = pool.submit(lambda: "never")
    time.sleep(0.1)
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert running.result(5) is True
    assert queued.cancelled()


def test_a_call_that_never_returns_does_not_hold_up_the_exit() -> None:
    """A ThreadPoolExecutor's thread is joined at exit: this process would live 60 s."""
    code = textwrap.dedent(
        """
        import time
        from nodemeter_stream.sink.thread import CallThread
        pool = CallThread()
        pool.submit(time.sleep, 60)
        time.sleep(0.1)
        print("exiting", flush=True)
        """
    )
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "exiting"
    assert time.monotonic() - t0 < 20  # a generous bound: the call would take 60 s
