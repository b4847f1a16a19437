"""A local, append-only, crash-safe spool for records that could not be sent.

When the broker is unreachable or a send fails for good, the SDK writes the
record's exact bytes here; a later replay sends the same bytes again, so the
event ids are the same and the pipeline's dedupe makes a resend harmless.

Layout: one directory, many segment files, each owned by one process:

    <pid>-<token>-<n>.open        being appended to by process <pid>
    <pid>-<token>-<n>.seg         closed, waiting for replay
    <name>.replaying-<pid>        claimed by process <pid> for replay

Frame: ``NS`` + u32 length + u32 crc32(body) + body, where body is
u16 topic length + topic + i32 key length (-1: no key) + key + value.
A torn write at the tail (crash mid-append) fails the length or crc check and
is skipped with a count; every complete frame before it is kept.

Claiming is an atomic rename, so processes sharing a directory never replay
the same segment twice; segments of dead processes (``.open`` or
``.replaying-<pid>``) are claimable again. A segment is deleted only after
every record in it was delivered or spooled again (the caller's job: see
``Meter``), so a crash during replay at worst resends, never loses.
"""

from __future__ import annotations

import logging
import os
import re
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

log = logging.getLogger("nodemeter.spool")

FsyncPolicy = Literal["always", "batch", "never"]
FSYNC_POLICIES: tuple[str, ...] = ("always", "batch", "never")

MAGIC = b"NS"
_HEAD = struct.Struct(">2sII")  # magic, body length, crc32(body)
_MAX_BODY = 16 * 1024 * 1024
_NAME = re.compile(
    r"^(?P<pid>\d+)-(?P<token>[0-9a-f]+)-(?P<n>\d+)\.(?P<state>open|seg|replaying-\d+)$"
)


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    topic: str
    key: bytes | None
    value: bytes


@dataclass
class ReadStats:
    records: int = 0
    torn_bytes: int = 0  # bytes after the last good frame (a torn tail or corruption)


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


def read_segment(path: Path, stats: ReadStats | None = None) -> Iterator[SpoolRecord]:
    """Every complete, intact frame of a segment, in order; stops at a torn tail."""
    stats = stats if stats is not None else ReadStats()
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        if len(data) - pos < _HEAD.size:
            break
        magic, length, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if magic != MAGIC or length > _MAX_BODY or end > len(data):
            break
        body = data[pos + _HEAD.size : end]
        if zlib.crc32(body) != crc:
            break
        try:
            rec = _decode_body(body)
        except (struct.error, UnicodeDecodeError):
            break
        stats.records += 1
        yield rec
        pos = end
    if pos < len(data):
        stats.torn_bytes = len(data) - pos
        log.warning(
            "spool segment %s: %d bytes after the last intact record skipped (torn write)",
            path.name,
            stats.torn_bytes,
        )


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
            self.directory.mkdir(parents=True, exist_ok=True)
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
            self._file = open(self._path, "ab")  # noqa: SIM115 - kept open across appends
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
        self._file.close()
        self._path.rename(self._path.with_suffix(".seg"))
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
        """Close the open segment, making it replayable."""
        with self._lock:
            self._close_locked()

    # --- replay ----------------------------------------------------------------------

    def claim(self) -> list[Path]:
        """Claim every replayable segment for this process, oldest first.

        Closes this process's open segment first, so what it spooled so far is
        included. Segments of other live processes that are still open or being
        replayed are left alone.
        """
        me = os.getpid()
        with self._lock:
            self._close_locked()
        claimed: list[Path] = []
        for path in sorted(self.directory.iterdir(), key=_segment_order):
            m = _NAME.match(path.name)
            if not m:
                continue
            state, pid = m["state"], int(m["pid"])
            if state == "open" and _pid_alive(pid):
                continue
            if state.startswith("replaying-"):
                owner = int(state.split("-", 1)[1])
                if owner == me or _pid_alive(owner):
                    continue
            target = path.with_name(f"{m['pid']}-{m['token']}-{m['n']}.replaying-{me}")
            try:
                path.rename(target)
            except FileNotFoundError:
                continue  # another process claimed it first
            claimed.append(target)
        if claimed:
            _fsync_dir(self.directory)
        return claimed

    def release(self, path: Path) -> None:
        """Delete a claimed segment once all its records were delivered or spooled again."""
        path.unlink(missing_ok=True)
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
