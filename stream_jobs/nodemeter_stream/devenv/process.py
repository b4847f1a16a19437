"""Process bookkeeping shared by the dev services (Kafka broker, Schema Registry): a pid
file, a check that the pid is still our process, and a graceful stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def read_pid(pid_file: Path, marker: bytes) -> int | None:
    """The pid in ``pid_file`` when that process runs and its command line holds
    ``marker`` (a zombie or an unrelated process reusing the pid is not ours)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid
    return pid if marker in cmdline else None


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(
    pid_file: Path, marker: bytes, *, grace_s: float, say: Callable[[str], None], what: str
) -> bool:
    """SIGTERM the process, SIGKILL it after ``grace_s``; True if one was running."""
    pid = read_pid(pid_file, marker)
    if pid is None:
        say("not running")
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and read_pid(pid_file, marker) is not None:
        reap(pid)
        time.sleep(0.1)
    if read_pid(pid_file, marker) is not None:
        say(f"no {what} after {grace_s:.0f}s; killing pid {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        reap(pid)
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()
    say(f"stopped (pid {pid})")
    return True
