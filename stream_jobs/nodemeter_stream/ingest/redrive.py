"""What ``nodemeter dlq`` decides about each dead letter (pure: no Kafka here).

A dead letter on ``nodemeter.dlq.v1`` (:mod:`nodemeter_stream.ingest.dlq`) keeps the
source record's key and value. Redriving it sends those bytes, unchanged, to the
partition of the usage topic they came from: the worker then treats it as the record
it was, and its event-id dedupe makes a second redrive (or a redrive of a record that
was meanwhile resent) a duplicate, never a second charge.

:func:`decide` sorts each dead letter into one of:

- not matched: outside the filter (reason, tenant, time): neither sent nor counted as
  skipped;
- skipped, with why (:data:`SKIP_REASONS`): a truncated copy (the topic keeps at most
  512 KiB of a value, 1 KiB of a key: sending the cut bytes would be a different,
  broken record), a dead letter of the pricing stage (the event was stored and the
  usage topic's dedupe would drop it again), one from another topic than the usage
  topic, or a dead-letter record that cannot be read;
- redrive: key, value and partition to send.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nodemeter.codec import decode_payload
from nodemeter.errors import DecodeError

TRUNCATED = "truncated_copy"
PRICING_STAGE = "pricing_stage"
OTHER_TOPIC = "other_source_topic"
UNREADABLE = "unreadable_dead_letter"
SKIP_REASONS: dict[str, str] = {
    TRUNCATED: "the dead-letter topic kept only part of the record (over 512 KiB value or "
    "1 KiB key); the whole value is in ClickHouse table dead_letters",
    PRICING_STAGE: "dead-lettered by the pricing stage: the event was stored, so the usage "
    "topic's dedupe would drop it again",
    OTHER_TOPIC: "it came from another topic than the usage topic redriven to",
    UNREADABLE: "the dead-letter record itself cannot be decoded",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Letter:
    """One dead letter as read from the topic (``payload``/``key``: the stored copy)."""

    partition: int  # on the dead-letter topic
    offset: int
    reason: str
    detail: str
    tenant: str  # as the worker read it, else the key's tenant part ("" if neither)
    event_id: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    payload: bytes
    received_at: datetime
    attributes: Mapping[str, str]

    @property
    def truncated(self) -> bool:
        a = self.attributes
        return a.get("payload_truncated") == "true" or a.get("key_truncated") == "true"

    @property
    def stage(self) -> str:
        return self.attributes.get("stage", "ingest")


def parse(value: bytes | None, *, partition: int, offset: int) -> Letter | None:
    """The dead letter in ``value``, or None when it is not a readable dead letter."""
    try:
        name, d = decode_payload(bytes(value or b""))
    except DecodeError:
        return None
    if name != "dead_letter":
        return None
    key = d.get("record_key")
    tenant = d.get("tenant") or ""
    if not tenant and key:
        # the SDK's key is tenant/request_id: a record the worker could not decode
        # (registry_not_configured, bad_magic) still names its tenant there
        head, sep, _ = bytes(key).partition(b"/")
        tenant = head.decode("utf-8", "replace") if sep else ""
    return Letter(
        partition=partition,
        offset=offset,
        reason=d["reason"],
        detail=d.get("detail", ""),
        tenant=tenant,
        event_id=d.get("event_id") or "",
        source_topic=d["source_topic"],
        source_partition=int(d["source_partition"]),
        source_offset=int(d["source_offset"]),
        key=bytes(key) if key is not None else None,
        payload=bytes(d["payload"]),
        received_at=d["received_at"],
        attributes=dict(d.get("attributes") or {}),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """Which dead letters a command is about. Empty ``reasons``: every reason (list and
    stats only; redrive requires at least one). Times bound ``received_at``: [start, end)."""

    reasons: frozenset[str] = frozenset()
    tenant: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def matches(self, letter: Letter) -> bool:
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.tenant is not None and letter.tenant != self.tenant:
            return False
        if self.start is not None and letter.received_at < self.start:
            return False
        return not (self.end is not None and letter.received_at >= self.end)


@dataclass(frozen=True, slots=True)
class Redrive:
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Skip:
    why: str  # a key of SKIP_REASONS


Decision = Redrive | Skip | None  # None: not matched


def decide(letter: Letter | None, flt: Filter, *, usage_topic: str) -> Decision:
    """What to do with one dead letter (``None``: an unreadable record on the topic)."""
    if letter is None:
        return Skip(UNREADABLE)
    if not flt.matches(letter):
        return None
    if letter.truncated:
        return Skip(TRUNCATED)
    if letter.stage != "ingest":
        return Skip(PRICING_STAGE)
    if letter.source_topic != usage_topic:
        return Skip(OTHER_TOPIC)
    # a record without a value was dead-lettered as "empty": its copy is b"", it was None
    value = None if letter.reason == "empty" and not letter.payload else letter.payload
    return Redrive(usage_topic, letter.source_partition, letter.key, value)


@dataclass(slots=True)
class Summary:
    """Counts of a run: read, matched, redriven (sent / would be sent), skipped by why,
    failed deliveries, and matched letters by reason."""

    read: int = 0
    matched: int = 0
    redriven: int = 0
    delivered: int = 0
    failed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)

    def add(self, letter: Letter | None, decision: Decision) -> None:
        self.read += 1
        if decision is None:
            return
        if letter is not None:
            self.matched += 1
            self.by_reason[letter.reason] += 1
        if isinstance(decision, Skip):
            self.skipped[decision.why] += 1
        else:
            self.redriven += 1

    def lines(self, *, dry_run: bool) -> list[str]:
        verb = "would redrive" if dry_run else "redriven"
        out = [
            f"read {self.read}, matched {self.matched}, {verb} {self.redriven}, "
            f"skipped {sum(self.skipped.values())}"
            + ("" if dry_run else f", delivered {self.delivered}, failed {self.failed}")
        ]
        out += [f"  matched reason {r}: {n}" for r, n in sorted(self.by_reason.items())]
        out += [
            f"  skipped {why}: {n} ({SKIP_REASONS[why]})" for why, n in sorted(self.skipped.items())
        ]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "matched": self.matched,
            "redriven": self.redriven,
            "delivered": self.delivered,
            "failed": self.failed,
            "skipped": dict(sorted(self.skipped.items())),
            "by_reason": dict(sorted(self.by_reason.items())),
        }
