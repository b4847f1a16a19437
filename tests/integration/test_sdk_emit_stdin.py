"""``nodemeter emit`` as a process, on bad stdin: a bad byte loses nothing read before
it, a huge line does not take memory, and a broker that is down is an exit status,
not a success. The producer is the real confluent-kafka client (the broker part
points it at a port where nothing listens)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from nodemeter.events import event_id_for

CMD = [sys.executable, "-m", "nodemeter.cli", "emit"]
# `nodemeter emit --dry-run` that reports its own peak RSS on stderr at the end: the
# high-water mark of its address space (VmHWM starts afresh at exec; ru_maxrss would
# carry the forking parent's, a pytest process that may hold chDB)
MEASURED_EMIT = (
    "import re, sys\n"
    "from nodemeter.cli import main\n"
    "rc = main(['emit', '--dry-run'])\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
    "print(f'peak_kb={hwm}', file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def line(node: str, **over: object) -> bytes:
    obj = {"tenant": "acme", "request_id": "r", "node_id": node, "api_calls": 1, **over}
    return json.dumps(obj).encode() + b"\n"


def test_a_bad_utf8_byte_rejects_its_line_only() -> None:
    data = line("n1") + line("n2") + b'{"tenant": "acme\xc3("}\n' + line("n3")
    proc = subprocess.run([*CMD, "--dry-run"], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    ids = proc.stdout.decode().split()
    assert ids == [event_id_for("acme", "r", n, 0) for n in ("n1", "n2", "n3")]
    err = proc.stderr.decode()
    assert "line 3: invalid_utf8: not UTF-8 (byte 0xc3 at offset 16)" in err
    assert "Traceback" not in err and "3 valid, 1 rejected" in err


def test_a_huge_line_is_refused_in_bounded_memory() -> None:
    size = 64 * 1024 * 1024
    script = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        f"out.write({line('n1')!r})\n"
        "out.write(b'{\"tenant\": \"' + b'x' * (1 << 20))\n"
        f"for _ in range({size} >> 20): out.write(b'x' * (1 << 20))\n"
        f"out.write(b'\"}}\\n' + {line('n2')!r})\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    proc = subprocess.run(
        [sys.executable, "-c", MEASURED_EMIT], stdin=writer.stdout, capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert writer.wait(timeout=60) == 0
    peak_mb = int(proc.stderr.decode().rsplit("peak_kb=", 1)[1]) / 1024
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.decode().split() == [event_id_for("acme", "r", n, 0) for n in ("n1", "n2")]
    assert (
        "line 2: line_too_long: line is 68157454 bytes; the limit is 1048576"
        in proc.stderr.decode()
    )
    # the emit process's own peak: far below the line's 64 MiB, let alone the 4x a str
    # of it would take
    assert peak_mb < 150, peak_mb


def test_a_broker_that_is_down_is_exit_status_3_with_the_records_spooled(
    tmp_path: Path,
) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = line("n1") + line("n2") + b"not json\n"
    proc = subprocess.run(
        [*CMD, "--bootstrap", f"127.0.0.1:{port}", "--timeout", "2", "--spool-dir",
         str(tmp_path / "spool")],
        input=data, capture_output=True, timeout=120,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 3, err  # not 0 (nothing delivered), not 1 (a line rejected)
    assert "line 3: invalid_json" in err
    assert "delivered 0, spooled 2, lost 0" in err and "delivery failed: 2 records spooled" in err
    assert any((tmp_path / "spool").iterdir())
