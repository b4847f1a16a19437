"""The internal usage-by-tenant record: one per (tenant, batch), ours to format (pure).

The ingest agent forwards a batch's first-seen usage events of one tenant as a single
record keyed by the tenant, so the hot path sends a handful of records per batch, not
one per event. Each entry keeps the event's bytes unchanged and its position on the
usage topic, which the pricing agent uses to skip what it has priced (a batch that the
ingest agent re-applies after a crash forwards the same entries again)::

    b"NMF1" | varint n | n x (varint partition | varint offset | varint len | bytes)

Window ticks (Avro single-object records) share the topic; the magic tells them apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = b"NMF1"


@dataclass(frozen=True, slots=True)
class Entry:
    partition: int  # on the usage topic
    offset: int
    payload: bytes


class ForwardError(ValueError):
    """A usage-by-tenant record that is not a well-formed forward record."""


def _varint(n: int, out: bytearray) -> None:
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def encode(entries: Iterable[Entry]) -> bytes:
    items = list(entries)
    out = bytearray(MAGIC)
    _varint(len(items), out)
    for e in items:
        if e.partition < 0 or e.offset < 0:
            raise ValueError(f"negative position {e.partition}/{e.offset}")
        _varint(e.partition, out)
        _varint(e.offset, out)
        _varint(len(e.payload), out)
        out += e.payload
    return bytes(out)


def is_forward(value: bytes) -> bool:
    return value[:4] == MAGIC


def decode(value: bytes) -> list[Entry]:
    if not is_forward(value):
        raise ForwardError("not a forward record (magic)")
    pos = 4
    end = len(value)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= end:
                raise ForwardError("truncated forward record")
            b = value[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ForwardError("varint too long")

    out = []
    for _ in range(varint()):
        partition, offset, n = varint(), varint(), varint()
        if pos + n > end:
            raise ForwardError("truncated forward record")
        out.append(Entry(partition, offset, value[pos : pos + n]))
        pos += n
    if pos != end:
        raise ForwardError(f"{end - pos} trailing bytes in a forward record")
    return out
