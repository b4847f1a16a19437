"""The on-disk spool: framing, torn tails, claiming, crash recovery."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodemeter.errors import ConfigError
from nodemeter.spool import ReadStats, Spool, SpoolRecord, encode_frame, read_segment


def test_append_claim_read_release(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync="always")
    recs = [SpoolRecord("topic", b"k%d" % i, b"\x00v" * i) for i in range(50)]
    recs.append(SpoolRecord("topic", None, b""))
    for r in recs:
        spool.append(r.topic, r.key, r.value)
    (seg,) = spool.claim()
    assert ".replaying-" in seg.name
    assert list(read_segment(seg)) == recs
    assert spool.claim() == []  # already claimed by this process
    spool.release(seg)
    assert spool.pending_segments() == []


def test_torn_tail_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append("t", None, b"value-%d" % i)
    spool.close()
    (seg,) = spool.pending_segments()
    frame = encode_frame(SpoolRecord("t", None, b"the-torn-one"))
    with open(seg, "ab") as f:
        f.write(frame[:-4])  # a crash mid-write
    stats = ReadStats()
    assert [r.value for r in read_segment(seg, stats)] == [b"value-0", b"value-1", b"value-2"]
    assert stats.records == 3 and stats.torn_bytes == len(frame) - 4


def test_corrupted_frame_stops_reading(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append("t", None, b"good")
    spool.append("t", None, b"bad!")
    spool.close()
    (seg,) = spool.pending_segments()
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # flip a bit in the last body: crc mismatch
    seg.write_bytes(bytes(data))
    assert [r.value for r in read_segment(seg)] == [b"good"]


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1024)
    for _ in range(40):
        spool.append("t", None, b"x" * 100)
    assert len(spool.pending_segments()) >= 4
    claimed = spool.claim()
    assert sum(len(list(read_segment(p))) for p in claimed) == 40


def test_segments_of_a_crashed_process_are_recovered(tmp_path: Path) -> None:
    code = (
        "import os, sys; from nodemeter.spool import Spool\n"
        "s = Spool(sys.argv[1], fsync='never')\n"
        "[s.append('t', b'k', b'v%d' % i) for i in range(7)]\n"
        "os._exit(9)  # crash: no close, the segment stays .open\n"
    )
    rc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False).returncode
    assert rc == 9
    (left,) = tmp_path.iterdir()
    assert left.suffix == ".open"
    spool = Spool(tmp_path)
    (seg,) = spool.claim()
    assert [r.value for r in read_segment(seg)] == [b"v%d" % i for i in range(7)]


def test_open_segment_of_a_live_process_is_left_alone(tmp_path: Path) -> None:
    other = tmp_path / f"{os.getppid()}-abcd1234-1.open"
    other.write_bytes(encode_frame(SpoolRecord("t", None, b"x")))
    assert Spool(tmp_path).claim() == []


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Spool(tmp_path, fsync="maybe")  # type: ignore[arg-type]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        Spool(tmp_path / "file" / "sub")
