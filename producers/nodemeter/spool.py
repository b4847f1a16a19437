"""A local, append-only, crash-safe spool for records that could not be sent.

When the broker is unreachable or a send fails for good, the SDK writes the
record's exact bytes here; a later replay sends the same bytes again, so the
event ids are the same and the pipeline's dedupe makes a resend harmless.

Layout: one directory (mode 0700; files 0600: records name tenants and usage), many
segment files, each owned by one process:

    <pid>-<token>-<n>.open        being appended to by the spool <token>
    <pid>-<token>-<n>.seg         closed, waiting for replay
    <name>.replaying-<token>      claimed for replay by the spool <token>
    quarantine/<name>.damaged     a replayed segment that had damaged bytes

Frame: ``NS`` + u32 length + u32 crc32(body) + body, where body is
u16 topic length + topic + i32 key length (-1: no key) + key + value.
Every record carries its own checksum: a damaged frame (a flipped bit, a torn
write) is skipped and reading resynchronises at the next intact frame, so the
records after the damage are kept. A segment that had damage is moved to
``quarantine/`` when its replay is done, never deleted, and the skipped bytes are
logged with their count.

Ownership is an exclusive ``flock`` on the segment, held by the writing process
while it appends and by the replaying one until it releases the segment; the
kernel drops it when the process dies. So a segment left by a crashed run is
claimable as soon as its owner is gone, whatever its pid (pid 1 in every
container run), and a live owner's is never taken. Claiming is also an atomic
rename, so processes sharing a directory never replay the same segment twice. A
segment is deleted only after every record in it was delivered or spooled again
(the caller's job: see ``Meter``), so a crash during replay at worst resends,
never loses. Where ``fcntl`` is missing (Windows), liveness falls back to pids.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from nodemeter.errors import ConfigError, DeliveryError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("nodemeter.spool")

FsyncPolicy = Literal["always", "batch", "never"]
FSYNC_POLICIES: tuple[str, ...] = ("always", "batch", "never")

MAGIC = b"NS"
_HEAD = struct.Struct(">2sII")  # magic, body length, crc32(body)
_MAX_BODY = 16 * 1024 * 1024
_NAME = re.compile(
    r"^(?P<pid>\d+)-(?P<token>[0-9a-f]+)-(?P<n>\d+)\.(?P<state>open|seg|replaying-[0-9a-f]+)$"
)
QUARANTINE = "quarantine"
_FILE_MODE = 0o600
_DIR_MODE = 0o700


def default_spool_dir() -> Path:
    """``$NODEMETER_SPOOL_DIR``, else the user's state directory:
    ``$XDG_STATE_HOME/nodemeter/spool`` (``~/.local/state/nodemeter/spool``), not the
    working directory. One spool directory serves one Kafka cluster: its records are
    replayed to the cluster of whichever meter claims them."""
    env = os.environ.get("NODEMETER_SPOOL_DIR")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "nodemeter" / "spool"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    topic: str
    key: bytes | None
    value: bytes


@dataclass
class ReadStats:
    records: int = 0
    torn_bytes: int = 0  # bytes skipped as damaged (torn tails, corrupted frames)
    damaged: int = 0  # damaged stretches skipped (resynchronised past, or at the tail)


def encode_frame(rec: SpoolRecord) -> bytes:
    topic = rec.topic.encode()
    key_len = -1 if rec.key is None else len(rec.key)
    body = b"".join(
        (
            struct.pack(">H", len(topic)),
            topic,
            struct.pack(">i", key_len),
            rec.key or b"",
            rec.value,
        )
    )
    return _HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> SpoolRecord:
    (tlen,) = struct.unpack_from(">H", body, 0)
    topic = body[2 : 2 + tlen].decode()
    (klen,) = struct.unpack_from(">i", body, 2 + tlen)
    pos = 6 + tlen
    key = None if klen < 0 else body[pos : pos + klen]
    pos += max(klen, 0)
    return SpoolRecord(topic, key, body[pos:])


def _frame_at(data: bytes, pos: int) -> tuple[SpoolRecord, int] | None:
    """The intact frame starting at ``pos`` and where it ends, or None."""
    if len(data) - pos < _HEAD.size + 6:
        return None
    magic, length, crc = _HEAD.unpack_from(data, pos)
    start = pos + _HEAD.size
    end = start + length
    if magic != MAGIC or length > _MAX_BODY or end > len(data) or length < 6:
        return None
    # cheap plausibility before the crc: a topic name is at most 249 bytes
    (tlen,) = struct.unpack_from(">H", data, start)
    if tlen > 249 or 6 + tlen > length:
        return None
    body = data[start:end]
    if zlib.crc32(body) != crc:
        return None
    try:
        return _decode_body(body), end
    except (struct.error, UnicodeDecodeError):
        return None


def _resync(data: bytes, start: int) -> int | None:
    """The start of the next intact frame at or after ``start``."""
    i = data.find(MAGIC, start)
    while i != -1:
        if _frame_at(data, i) is not None:
            return i
        i = data.find(MAGIC, i + 1)
    return None


def read_segment(path: Path, stats: ReadStats | None = None) -> Iterator[SpoolRecord]:
    """Every intact frame of a segment, in order. A damaged stretch (a torn tail, a
    corrupted frame) is skipped, counted and logged; reading resumes at the next
    intact frame."""
    stats = stats if stats is not None else ReadStats()
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        found = _frame_at(data, pos)
        if found is not None:
            rec, pos = found
            stats.records += 1
            yield rec
            continue
        nxt = _resync(data, pos + 1)
        skipped = (len(data) if nxt is None else nxt) - pos
        stats.torn_bytes += skipped
        stats.damaged += 1
        log.warning(
            "spool segment %s: %d damaged bytes at offset %d skipped (%s)",
            path.name,
            skipped,
            pos,
            "torn tail" if nxt is None else "resynchronised at the next intact record",
        )
        if nxt is None:
            break
        pos = nxt


def scan_segment(path: Path) -> ReadStats:
    """Read a segment through, for its counts."""
    stats = ReadStats()
    for _ in read_segment(path, stats):
        pass
    return stats


def _try_lock(fd: int) -> bool:
    """An exclusive, non-blocking flock on ``fd``; False when another holds one."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Spool:
    """Thread-safe append-only spool in ``directory`` (created if missing)."""

    def __init__(
        self,
        directory: Path | str,
        *,
        fsync: FsyncPolicy = "batch",
        fsync_interval_s: float = 0.2,
        segment_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ConfigError(f"spool fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if segment_bytes < 1024:
            raise ConfigError("spool segment_bytes must be at least 1024")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            if stat.S_IMODE(self.directory.stat().st_mode) & 0o077:
                self.directory.chmod(_DIR_MODE)  # an existing, wider one: ours only
        except OSError as exc:
            raise ConfigError(f"spool directory {self.directory} is not usable: {exc}") from exc
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._token = uuid.uuid4().hex[:8]
        self._n = 0
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._size = 0
        self._dirty = False
        self._last_sync = time.monotonic()
        self.appended = 0
        self.quarantined = 0
        self._held: dict[Path, int] = {}  # claimed segment -> the fd holding its lock

    # --- writing ------------------------------------------------------------------

    def append(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Durably (per the fsync policy) add one record; raises DeliveryError on I/O failure."""
        frame = encode_frame(SpoolRecord(topic, key, value))
        with self._lock:
            try:
                f = self._writable()
                f.write(frame)
                f.flush()  # into the OS: survives a process crash even without fsync
                self._size += len(frame)
                self._dirty = True
                self.appended += 1
                now = time.monotonic()
                if self.fsync == "always" or (
                    self.fsync == "batch" and now - self._last_sync >= self.fsync_interval_s
                ):
                    self._sync_locked(now)
                if self._size >= self.segment_bytes:
                    self._close_locked()
            except OSError as exc:
                raise DeliveryError(f"could not spool a record to {self.directory}: {exc}") from exc

    def _writable(self) -> BinaryIO:
        if self._file is None:
            self._n += 1
            self._path = self.directory / f"{os.getpid()}-{self._token}-{self._n}.open"
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _FILE_MODE)
            _try_lock(fd)  # new and ours: held until the segment is closed
            self._file = os.fdopen(fd, "ab")  # kept open across appends
            self._size = 0
            _fsync_dir(self.directory)
        return self._file

    def _sync_locked(self, now: float | None = None) -> None:
        if self._file is not None and self._dirty:
            os.fsync(self._file.fileno())
            self._dirty = False
        self._last_sync = time.monotonic() if now is None else now

    def _close_locked(self) -> None:
        if self._file is None or self._path is None:
            return
        self._sync_locked()
        self._path.rename(self._path.with_suffix(".seg"))  # still locked: then unlocked
        self._file.close()
        _fsync_dir(self.directory)
        self._file = None
        self._path = None

    def sync(self) -> None:
        """fsync what was appended (a no-op with fsync='never')."""
        if self.fsync == "never":
            return
        with self._lock:
            self._sync_locked()

    def close(self) -> None:
        """Close the open segment, making it replayable; let go of claimed ones (a
        later run replays what they still hold: at worst a resend)."""
        with self._lock:
            self._close_locked()
            for fd in self._held.values():
                os.close(fd)
            self._held.clear()

    # --- replay ----------------------------------------------------------------------

    def claim(self) -> list[Path]:
        """Claim every replayable segment for this process, oldest first.

        Closes this process's open segment first, so what it spooled so far is
        included. Segments of other live processes that are still open or being
        replayed are left alone.
        """
        with self._lock:
            self._close_locked()
            claimed: list[Path] = []
            for path in sorted(self.directory.iterdir(), key=_segment_order):
                m = _NAME.match(path.name)
                if not m or path in self._held:
                    continue
                if fcntl is None and not self._claimable_by_pid(m):  # pragma: no cover
                    continue
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue  # claimed or released meanwhile
                # a live writer or replayer holds the lock: theirs. The inode check
                # catches a segment renamed or deleted between our open and lock.
                try:
                    ours = _try_lock(fd) and os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    ours = False
                if not ours:
                    os.close(fd)
                    continue
                target = path.with_name(f"{m['pid']}-{m['token']}-{m['n']}.replaying-{self._token}")
                try:
                    path.rename(target)
                except FileNotFoundError:
                    os.close(fd)
                    continue
                self._held[target] = fd
                claimed.append(target)
        if claimed:
            _fsync_dir(self.directory)
        return claimed

    @staticmethod
    def _claimable_by_pid(m: re.Match[str]) -> bool:  # pragma: no cover - Windows
        state, pid = m["state"], int(m["pid"])
        if state == "open":
            return not _pid_alive(pid)
        return True

    def release(self, path: Path) -> None:
        """Done with a claimed segment (all its records delivered or spooled again):
        deleted, or moved to ``quarantine/`` when it had damaged bytes."""
        stats = scan_segment(path) if path.exists() else ReadStats()
        if stats.damaged:
            qdir = self.directory / QUARANTINE
            qdir.mkdir(mode=_DIR_MODE, exist_ok=True)
            target = qdir / f"{path.name}.damaged"
            path.rename(target)
            self.quarantined += 1
            log.error(
                "spool segment %s had %d damaged bytes (%d stretches; %d intact records "
                "replayed): kept as %s",
                path.name,
                stats.torn_bytes,
                stats.damaged,
                stats.records,
                target,
            )
        else:
            path.unlink(missing_ok=True)
        with self._lock:
            fd = self._held.pop(path, None)
        if fd is not None:
            os.close(fd)
        _fsync_dir(self.directory)

    def pending_segments(self) -> list[Path]:
        return sorted(
            (p for p in self.directory.iterdir() if _NAME.match(p.name)), key=_segment_order
        )

    def pending_records(self) -> int:
        """Records waiting in closed, open or claimed segments (reads the files)."""
        with self._lock:
            if self._file is not None:
                self._file.flush()
        return sum(sum(1 for _ in read_segment(p)) for p in self.pending_segments())


def _segment_order(path: Path) -> tuple[float, str]:
    try:
        return (path.stat().st_mtime, path.name)
    except FileNotFoundError:
        return (0.0, path.name)
