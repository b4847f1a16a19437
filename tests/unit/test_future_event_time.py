"""One event from a broken clock must not close a tenant's windows (issue 11, item 3):
the SDK refuses usage dated more than ``max_future_skew_s`` ahead of its clock, and the
worker dead-letters it (``future_event_time``) against its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_sdk_fakes import fake_meter

from nodemeter.codec import encode_record
from nodemeter.errors import InvalidUsageError
from nodemeter.events import Meters, UsageEvent, event_id_for
from nodemeter_stream.ingest.decode import FUTURE, Accepted, DeadLetter, Source, classify

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def ev(at: datetime, span: str = "s") -> UsageEvent:
    return UsageEvent(
        event_id=event_id_for("acme", "r", span, 0), tenant="acme", request_id="r",
        node_id="llm", span_id=span, event_time=at, meters=Meters(input_tokens=5),
    )  # fmt: skip


def test_the_worker_dead_letters_usage_from_the_future() -> None:
    limit = NOW + timedelta(seconds=300)
    src = Source(topic="u", partition=0, offset=9)
    ok = classify(encode_record(ev(limit)), key=b"k", source=src, not_after=limit)
    assert isinstance(ok, Accepted)
    late = classify(encode_record(ev(datetime(2199, 1, 1, tzinfo=UTC))), key=b"k", source=src,
                    not_after=limit)  # fmt: skip
    assert isinstance(late, DeadLetter) and late.reason == FUTURE
    assert late.tenant == "acme" and "2199-01-01" in late.detail
    # without a bound (tests of pure decoding) nothing is refused for its time
    assert isinstance(classify(encode_record(ev(limit + timedelta(days=1))), key=b"k",
                               source=src), Accepted)  # fmt: skip


def test_the_sdk_refuses_usage_from_the_future(tmp_path: Path) -> None:
    meter, _ = fake_meter(tmp_path)
    now = meter.clock()
    meter.emit(ev(now + timedelta(seconds=60), "a"))  # within the skew
    with pytest.raises(InvalidUsageError, match="ahead of this host's clock") as err:
        meter.emit(ev(now + timedelta(days=1), "b"))
    assert err.value.reason == "future_event_time"
    # the bound follows the clock: much later, a current event is still fine
    clock = meter.clock
    meter.clock = lambda: clock() + timedelta(hours=2)  # type: ignore[method-assign]
    meter.emit(ev(now + timedelta(hours=2), "c"))
    assert meter.stats.produced == 2
    meter.close()
