"""IngestService.ingest without HTTP or a broker: the answers the integration tests
cannot provoke cheaply (no Content-Length, a record the producer never settles).
The producer is the SDK's FakeProducer (tests/unit/test_sdk_fakes.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_sdk_fakes import fake_meter

from nodemeter.ingest_http.cloudevents import STRUCTURED, USAGE_TYPE
from nodemeter.ingest_http.keys import ApiKey, KeyRing, digest_of
from nodemeter.ingest_http.server import IngestConfig, IngestService

KEY = "acme-0123456789abcdef-key"
EVENT = json.dumps({"specversion": "1.0", "id": "e1", "source": "//t", "type": USAGE_TYPE,
                    "time": "2026-12-02T03:00:00Z", "subject": "acme/r",
                    "data": {"node_id": "n", "api_calls": 1}}).encode()  # fmt: skip


@pytest.fixture
def service(tmp_path: Path) -> Iterator[IngestService]:
    meter, _ = fake_meter(tmp_path, report_successes=True)
    svc = IngestService(
        IngestConfig(port=0, ack_timeout_s=0.2, max_events=10, burst=10),
        KeyRing([ApiKey("acme", "acme", digest_of(KEY))]),
        meter,
    )
    yield svc
    report = svc.shutdown(flush_timeout=0.1)  # never started: must not wait on serve_forever
    assert (report.cut_requests, report.lost) == (0, 0)


def headers(**over: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}", "Content-Type": STRUCTURED,
            "Content-Length": str(len(EVENT)), **over}  # fmt: skip


def test_a_record_the_producer_never_settles_is_503_not_202(service: IngestService) -> None:
    # the fake producer delivers only when polled, and nothing polls it here
    reply = service.ingest(headers(), lambda n: EVENT[:n])
    assert reply.status == 503 and reply.headers == {"Retry-After": "1"}
    assert reply.body["accepted"] == []
    assert [(e["index"], e["reason"]) for e in reply.body["errors"]] == [(0, "not_stored")]


def test_without_content_length_or_with_chunks_it_is_411(service: IngestService) -> None:
    def unread(n: int) -> bytes:
        raise AssertionError("the body must not be read")

    for h in (
        {k: v for k, v in headers().items() if k != "Content-Length"},
        headers(**{"Transfer-Encoding": "chunked"}),
        headers(**{"Content-Length": "-1"}),
    ):
        reply = service.ingest(h, unread)
        assert (reply.status, reply.close) == (411, True), h


def test_a_body_shorter_than_its_length_is_400(service: IngestService) -> None:
    reply = service.ingest(headers(), lambda n: EVENT[: n - 1])
    assert (reply.status, reply.body["error"]["reason"]) == (400, "truncated_body")


def test_a_burst_below_max_events_is_refused_at_start(tmp_path: Path) -> None:
    from nodemeter.errors import ConfigError

    with pytest.raises(ConfigError, match="burst"):
        IngestConfig(max_events=100, burst=50)
    meter, _ = fake_meter(tmp_path)  # report_successes=False
    with pytest.raises(ConfigError, match="report_successes"):
        IngestService(IngestConfig(port=0), KeyRing([]), meter)
