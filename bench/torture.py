"""Run every fault test (pytest marker ``fault``) K times while one CPU core is kept busy.

    .venv/bin/python bench/torture.py [--loops K] [--keep-all] [-- PYTEST_ARGS...]
    make torture K=3

Each loop runs pytest once: ``-m fault``, in file order (no pytest-randomly), without
the cache and without any rerun plugin, so a failed test is never retried. Its JUnit
report gives pass or fail per test. A busy-loop process keeps one core at 100% for the
whole run, so that timing races show up more often than on an idle machine; it is
killed at the end, also on failure or Ctrl-C, and ends by itself should this script
die. A failing loop keeps its pytest output and the tests' logs (workers, brokers; not
their data) under ``.nodemeter/torture/<loop>/``; a passing loop's directory is deleted.
The summary at the end lists each loop's wall time and failures and each test's passes
and failures; the exit status is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".nodemeter" / "torture"

# Spins until stopped, and stops by itself once its parent (this script) is gone.
BUSY_LOOP = """
import os, sys
parent = int(sys.argv[1])
i = 0
while True:
    i += 1
    if i % 5_000_000 == 0 and os.getppid() != parent:
        break
"""

# Kept from a failing loop: logs, not data (chDB stores, Kafka segments).
LOG_NAME = re.compile(r"\.log(\.\d+)?$")


@dataclass
class Loop:
    number: int
    wall_s: float
    returncode: int
    results: dict[str, str]  # test id -> passed | failed | skipped
    note: str = ""

    @property
    def failed(self) -> list[str]:
        return [t for t, r in self.results.items() if r == "failed"]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.failed and not self.note


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failed_in: list[int] = field(default_factory=list)


def parse_junit(path: Path) -> dict[str, str]:
    results: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        if module:
            name = f"{module}.py::{case.get('name', '')}"
        else:  # a module that failed to import
            name = f"{case.get('name', '').replace('.', '/')}.py (collection)"
        if case.find("failure") is not None or case.find("error") is not None:
            status = "failed"  # an error in setup or teardown fails the test as well
        elif case.find("skipped") is not None:
            status = "skipped"
        else:
            status = "passed"
        if results.get(name) != "failed":
            results[name] = status
    return results


def keep_logs_only(directory: Path) -> None:
    """Delete everything under ``directory`` but log files and the JUnit report."""
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink() or path.is_file():
            kafka_data = any((d / "meta.properties").exists() for d in path.parents)
            if path.name == "junit.xml" or (LOG_NAME.search(path.name) and not kafka_data):
                continue
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def run_loop(n: int, pytest_args: Sequence[str], procs: list[subprocess.Popen[bytes]]) -> Loop:
    d = OUT / str(n)
    d.mkdir(parents=True)
    junit = d / "junit.xml"
    cmd = [
        sys.executable, "-m", "pytest", "-m", "fault", "-q",
        "-p", "no:randomly", "-p", "no:rerunfailures", "-p", "no:cacheprovider",
        # a module that does not import fails the loop, but the fault tests still run
        "--continue-on-collection-errors",
        f"--junitxml={junit}", f"--basetemp={d / 'tmp'}", *pytest_args,
    ]  # fmt: skip
    t0 = time.monotonic()
    with (d / "pytest.log").open("wb") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        rc = proc.wait()
        procs.remove(proc)
    wall = time.monotonic() - t0
    note = ""
    results: dict[str, str] = {}
    if junit.exists():
        results = parse_junit(junit)
    if not results:
        note = f"pytest exited with {rc} and reported no tests; see {d / 'pytest.log'}"
    return Loop(number=n, wall_s=wall, returncode=rc, results=results, note=note)


def summary(loops: Sequence[Loop], busy_pid: int, total_s: float) -> str:
    lines = [
        "",
        f"torture: {len(loops)} loop(s) of `pytest -m fault`, one core kept busy "
        f"(pid {busy_pid}), {total_s:.0f} s in all",
        "",
        f"{'loop':>4}  {'wall_s':>7}  {'passed':>6}  {'failed':>6}  failing tests",
    ]
    tallies: dict[str, Tally] = {}
    for loop in loops:
        for test, status in loop.results.items():
            t = tallies.setdefault(test, Tally())
            if status == "failed":
                t.failed += 1
                t.failed_in.append(loop.number)
            elif status == "skipped":
                t.skipped += 1
            else:
                t.passed += 1
        passed = sum(1 for r in loop.results.values() if r == "passed")
        failing = (
            ", ".join(short(t) for t in loop.failed)
            or loop.note
            or (f"(pytest exited with {loop.returncode})" if loop.returncode else "")
        )
        lines.append(
            f"{loop.number:>4}  {loop.wall_s:>7.1f}  {passed:>6}  {len(loop.failed):>6}  {failing}"
        )
    width = max([len(t) for t in tallies] + [4])
    lines += ["", f"{'test':<{width}}  {'passed':>6}  {'failed':>6}  {'skipped':>7}  failed in"]
    for test in sorted(tallies):
        t = tallies[test]
        loops_failed = ",".join(map(str, t.failed_in))
        lines.append(
            f"{test:<{width}}  {t.passed:>6}  {t.failed:>6}  {t.skipped:>7}  {loops_failed}"
        )
    bad = [loop for loop in loops if not loop.ok]
    failures = sum(t.failed for t in tallies.values())
    lines.append("")
    if bad:
        where = ", ".join(str((OUT / str(loop.number)).relative_to(ROOT)) for loop in bad)
        lines.append(f"FAILED: {failures} test failure(s) in {len(bad)} of {len(loops)} loops")
        lines.append(f"logs of the failing loops: {where}")
    else:
        lines.append(f"OK: every fault test passed in all {len(loops)} loops")
    return "\n".join(lines)


def short(test: str) -> str:
    return test.rsplit("/", 1)[-1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", "-k", type=int, default=10, help="runs of the suite (10)")
    parser.add_argument("--keep-all", action="store_true", help="keep every loop's whole directory")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args(argv)
    if args.loops < 1:
        parser.error("--loops must be at least 1")

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    shutil.rmtree(OUT, ignore_errors=True)  # a previous run's loops would mislead
    OUT.mkdir(parents=True)
    procs: list[subprocess.Popen[bytes]] = []
    loops: list[Loop] = []
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.getpid())])
    t0 = time.monotonic()
    try:
        print(f"[torture] {args.loops} loop(s); busy-loop pid {busy.pid}; logs in {OUT}")
        for n in range(1, args.loops + 1):
            loop = run_loop(n, args.pytest_args, procs)
            loops.append(loop)
            verdict = (
                "ok"
                if loop.ok
                else "FAILED "
                + (", ".join(map(short, loop.failed)) or loop.note or f"exit {loop.returncode}")
            )
            print(
                f"[torture] loop {n}/{args.loops}: {loop.wall_s:.0f} s, "
                f"{len(loop.results)} tests, {verdict}",
                flush=True,
            )
            if loop.ok and not args.keep_all:
                shutil.rmtree(OUT / str(n), ignore_errors=True)
            elif not args.keep_all:
                keep_logs_only(OUT / str(n))
    finally:
        for proc in procs:  # a pytest still running (interrupted): SIGINT lets it
            proc.send_signal(signal.SIGINT)  # run its teardown (workers, broker)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        busy.kill()
        busy.wait()
        if loops:
            print(summary(loops, busy.pid, time.monotonic() - t0))
    return 0 if loops and all(loop.ok for loop in loops) else 1


if __name__ == "__main__":
    sys.exit(main())
