"""What ``nodemeter dlq redrive`` does with each dead letter (pure), and its summary and
exit status with a fake producer that fails a delivery (no broker: the end-to-end test
with the real broker and worker is tests/integration/test_dlq_redrive.py)."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from nodemeter.codec import encode_payload, encode_record, record_key
from nodemeter.events import Meters, UsageEvent, event_id_for
from nodemeter_stream.dlq_cli import redrive
from nodemeter_stream.ingest.decode import DeadLetter, Source
from nodemeter_stream.ingest.dlq import dlq_record
from nodemeter_stream.ingest.redrive import (
    OTHER_TOPIC,
    PRICING_STAGE,
    TRUNCATED,
    UNREADABLE,
    Filter,
    Letter,
    Redrive,
    Skip,
    Summary,
    decide,
    parse,
)

USAGE = "p.nodemeter.usage.v1"
T = datetime(2026, 11, 5, 10, tzinfo=UTC)


def original(i: int = 0, tenant: str = "acme") -> tuple[bytes, bytes]:
    ev = UsageEvent(
        event_id=event_id_for(tenant, f"r{i}", "s", 0), tenant=tenant, request_id=f"r{i}",
        node_id="n", span_id="s", event_time=T, meters=Meters(input_tokens=5),
    )  # fmt: skip
    return record_key(ev), encode_record(ev)


def letter(
    reason: str = "future_event_time",
    *,
    key: bytes | None = None,
    payload: bytes | None = None,
    tenant: str = "acme",
    at: datetime = T,
    topic: str = USAGE,
    max_payload: int = 512 * 1024,
) -> Letter | None:
    k, v = original()
    d = DeadLetter(
        reason=reason, detail="d", source=Source(topic=topic, partition=2, offset=41),
        key=k if key is None else key, payload=v if payload is None else payload, tenant=tenant,
    )  # fmt: skip
    _, value, _ = dlq_record(d, now_ms=int(at.timestamp() * 1000), max_payload=max_payload)
    return parse(value, partition=0, offset=7)


def test_a_redrive_is_the_original_record_to_its_partition() -> None:
    k, v = original()
    got = decide(letter(), Filter(reasons=frozenset({"future_event_time"})), usage_topic=USAGE)
    assert got == Redrive(USAGE, 2, k, v)  # byte-identical key and value, source partition


def test_filters_reason_tenant_and_time() -> None:
    lt = letter()
    assert lt is not None
    only = frozenset({"future_event_time"})
    assert decide(lt, Filter(reasons=frozenset({"bad_magic"})), usage_topic=USAGE) is None
    assert decide(lt, Filter(reasons=only, tenant="globex"), usage_topic=USAGE) is None
    assert isinstance(decide(lt, Filter(reasons=only, tenant="acme"), usage_topic=USAGE), Redrive)
    hour = timedelta(hours=1)
    assert decide(lt, Filter(reasons=only, start=T + hour), usage_topic=USAGE) is None
    assert decide(lt, Filter(reasons=only, end=T), usage_topic=USAGE) is None  # [start, end)
    in_time = Filter(reasons=only, start=T, end=T + hour)
    assert isinstance(decide(lt, in_time, usage_topic=USAGE), Redrive)


def test_tenant_from_the_key_when_the_worker_could_not_decode_the_record() -> None:
    lt = letter("registry_not_configured", tenant="", key=b"initech/r1")
    assert lt is not None and lt.tenant == "initech"
    other = letter("bad_magic", tenant="", key=b"no-slash")
    assert other is not None and other.tenant == ""


def test_what_is_never_sent() -> None:
    every = Filter()
    cut = letter(payload=b"x" * 300, max_payload=100)
    assert cut is not None and cut.truncated and len(cut.payload) == 100
    assert decide(cut, every, usage_topic=USAGE) == Skip(TRUNCATED)
    assert decide(letter(topic="elsewhere"), every, usage_topic=USAGE) == Skip(OTHER_TOPIC)
    assert decide(None, every, usage_topic=USAGE) == Skip(UNREADABLE)
    assert parse(b"not a dead letter", partition=0, offset=0) is None
    # a pricing-stage dead letter: the event was stored; the ingest dedupe would drop it
    k, v = original()
    pricing = encode_payload(
        "dead_letter",
        {"source_topic": USAGE, "source_partition": 1, "source_offset": 3,
         "reason": "window_closed", "detail": "", "tenant": "acme", "event_id": None,
         "record_key": k, "payload": v, "received_at": T, "attributes": {"stage": "pricing"}},
    )  # fmt: skip
    lt = parse(pricing, partition=0, offset=1)
    assert decide(lt, every, usage_topic=USAGE) == Skip(PRICING_STAGE)


class FakeProducer:
    """Stands in for confluent_kafka.Producer: records produce() calls and fails the
    delivery of the values in ``fail``."""

    def __init__(self, fail: set[bytes]) -> None:
        self.fail = fail
        self.sent: list[tuple[str, bytes | None, bytes | None, int]] = []
        self.pending: list[tuple[Callable[[Any, Any], None], bytes | None]] = []

    def produce(self, topic: str, *, value: bytes | None, key: bytes | None, partition: int,
                on_delivery: Callable[[Any, Any], None]) -> None:  # fmt: skip
        self.sent.append((topic, key, value, partition))
        self.pending.append((on_delivery, value))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        for cb, value in self.pending:
            cb("MSG_TIMED_OUT" if value in self.fail else None, None)
        self.pending.clear()
        return 0


def test_summary_and_exit_status() -> None:
    (_, v0), (_, v1) = original(0), original(1)
    letters = [
        letter(payload=v0),
        letter(payload=v1),
        letter(payload=b"y" * 300, max_payload=100),
        letter("bad_magic"),
        None,
    ]
    flt = Filter(reasons=frozenset({"future_event_time"}))
    out, err = io.StringIO(), io.StringIO()
    fake = FakeProducer(fail={v1})
    rc = redrive(iter(letters), flt, bootstrap="b", usage_topic=USAGE, out=out, err=err,
                 producer_factory=lambda _b: fake)  # fmt: skip
    assert rc == 1  # one delivery failed
    assert [s[2] for s in fake.sent] == [v0, v1]
    text = out.getvalue()
    assert "read 5, matched 3, redriven 2, skipped 2, delivered 1, failed 1" in text
    assert f"skipped {TRUNCATED}: 1" in text and f"skipped {UNREADABLE}: 1" in text
    assert "MSG_TIMED_OUT" in err.getvalue()

    fake = FakeProducer(fail=set())
    rc = redrive(iter(letters), flt, bootstrap="b", usage_topic=USAGE, dry_run=True, out=out,
                 err=err, producer_factory=lambda _b: fake)  # fmt: skip
    assert rc == 0 and fake.sent == []  # a dry run sends nothing


def test_summary_counts() -> None:
    s = Summary()
    s.add(None, Skip(UNREADABLE))
    s.add(letter(), None)
    s.add(letter(), Redrive(USAGE, 0, None, b""))
    assert (s.read, s.matched, s.redriven, dict(s.skipped)) == (3, 1, 1, {UNREADABLE: 1})
