"""The on-disk spool: framing, torn tails, damage and resync, quarantine, claiming by
lock, crash recovery, file modes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nodemeter.errors import ConfigError
from nodemeter.spool import (
    ReadStats,
    Spool,
    SpoolRecord,
    default_spool_dir,
    encode_frame,
    read_segment,
)


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


def test_a_corrupted_last_frame_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append("t", None, b"good")
    spool.append("t", None, b"bad!")
    spool.close()
    (seg,) = spool.pending_segments()
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # flip a bit in the last body: crc mismatch
    seg.write_bytes(bytes(data))
    assert [r.value for r in read_segment(seg)] == [b"good"]


def _spool_of(tmp_path: Path, n: int) -> tuple[Spool, Path, list[bytes]]:
    spool = Spool(tmp_path / "spool")
    values = [b"record-%03d-" % i + b"x" * (i % 7) for i in range(n)]
    for v in values:
        spool.append("nodemeter.usage.v1", b"acme/r", v)
    spool.close()
    (seg,) = spool.pending_segments()
    return spool, seg, values


@pytest.mark.parametrize("where", ["body", "length", "magic", "crc"])
def test_one_flipped_bit_mid_segment_loses_only_its_record(tmp_path: Path, where: str) -> None:
    _, seg, values = _spool_of(tmp_path, 81)
    frames = [len(encode_frame(SpoolRecord("nodemeter.usage.v1", b"acme/r", v))) for v in values]
    start = sum(frames[:40])  # record 40 of 81: 40 intact ones after it
    at = start + {"magic": 0, "length": 4, "crc": 7, "body": frames[40] - 3}[where]
    data = bytearray(seg.read_bytes())
    data[at] ^= 0x10
    seg.write_bytes(bytes(data))
    stats = ReadStats()
    got = [r.value for r in read_segment(seg, stats)]
    assert got == values[:40] + values[41:]
    assert stats.records == 80 and stats.damaged == 1 and stats.torn_bytes == frames[40]


def test_a_damaged_segment_is_quarantined_not_deleted(tmp_path: Path) -> None:
    spool, seg, _ = _spool_of(tmp_path, 10)
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))
    (claimed,) = spool.claim()
    assert len(list(read_segment(claimed))) == 9
    spool.release(claimed)
    assert spool.pending_segments() == [] and spool.quarantined == 1
    (kept,) = (tmp_path / "spool" / "quarantine").iterdir()
    assert kept.name.endswith(".damaged") and kept.read_bytes() == bytes(data)
    assert Spool(tmp_path / "spool").claim() == []  # never replayed again
    # an intact one is deleted as before
    spool.append("t", None, b"v")
    (ok,) = spool.claim()
    spool.release(ok)
    assert not ok.exists() and spool.quarantined == 1


def test_the_meter_replays_the_records_after_the_damage(tmp_path: Path) -> None:
    from test_sdk_fakes import delivered_records, fake_meter, set_mode
    from test_sdk_meter import event

    meter, producers = fake_meter(tmp_path, "fail")
    for i in range(30):
        meter.emit(event(i))
    meter.flush()  # every delivery fails: 30 records spooled
    (seg,) = meter._spool.pending_segments()
    frames = list(read_segment(seg))
    at = sum(len(encode_frame(f)) for f in frames[:12]) + 20  # inside record 12
    data = bytearray(seg.read_bytes())
    data[at] ^= 0x04
    seg.write_bytes(bytes(data))
    set_mode(producers, "ok")
    assert meter.replay() == 29
    meter.flush()
    assert delivered_records(producers) == [event(i) for i in range(30) if i != 12]
    assert meter.spooled_records() == 0
    assert len(list((tmp_path / "spool" / "quarantine").iterdir())) == 1
    meter.close()


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


def test_a_crashed_run_with_the_same_pid_is_replayed(tmp_path: Path) -> None:
    # pid 1 in every container run: the pid of the dead writer is ours now
    left = tmp_path / f"{os.getpid()}-abcd1234-1.open"
    left.write_bytes(encode_frame(SpoolRecord("t", None, b"x")))
    claimed_by_an_old_run = tmp_path / f"{os.getpid()}-abcd1234-2.replaying-{os.getpid()}"
    claimed_by_an_old_run.write_bytes(encode_frame(SpoolRecord("t", None, b"y")))
    claimed = Spool(tmp_path).claim()
    assert sorted(r.value for p in claimed for r in read_segment(p)) == [b"x", b"y"]


SPOOLER = """
import sys, time
from nodemeter.spool import Spool
s = Spool(sys.argv[1], fsync="never")
s.append("t", None, b"live")
print("ready", flush=True)
time.sleep(60)
"""


def test_a_live_writer_keeps_its_segment_until_it_dies(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SPOOLER, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        spool = Spool(tmp_path)
        assert spool.claim() == []  # held by its flock
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    (seg,) = spool.claim()  # the kernel let go of the lock with the process
    assert [r.value for r in read_segment(seg)] == [b"live"]


def test_a_claimed_segment_is_not_claimed_twice_while_held(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.append("t", None, b"v")
    (_seg,) = first.claim()
    assert Spool(tmp_path).claim() == [] and first.claim() == []
    first.close()  # gave up before releasing (a crash): another run replays it
    (again,) = Spool(tmp_path).claim()
    assert [r.value for r in read_segment(again)] == [b"v"]


def test_files_are_private_and_live_in_a_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "spool"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    spool = Spool(d)
    spool.append("t", None, b"secret usage")
    (seg,) = spool.pending_segments()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(seg.stat().st_mode) == 0o600
    spool.close()
    assert stat.S_IMODE(spool.pending_segments()[0].stat().st_mode) == 0o600
    monkeypatch.delenv("NODEMETER_SPOOL_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_spool_dir() == tmp_path / "state" / "nodemeter" / "spool"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_spool_dir() == Path.home() / ".local" / "state" / "nodemeter" / "spool"
    monkeypatch.setenv("NODEMETER_SPOOL_DIR", str(tmp_path / "mine"))
    assert default_spool_dir() == tmp_path / "mine"


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Spool(tmp_path, fsync="maybe")  # type: ignore[arg-type]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        Spool(tmp_path / "file" / "sub")
