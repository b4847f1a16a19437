"""``nodemeter emit``: JSON lines to records, per-line errors, dry run through the CLI."""

from __future__ import annotations

import io
import json
import sys

import pytest

from nodemeter.cli import main
from nodemeter.emit_cli import emit_lines, record_from_json
from nodemeter.events import GpuSource, RequestEnd, UsageEvent, event_id_for


def test_usage_line_defaults_and_deterministic_id() -> None:
    rec = record_from_json(
        {
            "tenant": "acme",
            "request_id": "r1",
            "node_id": "ocr",
            "gpu_ms": 840,
            "gpu_type": "L4",
            "event_time": "2026-03-01T10:00:00Z",
        }
    )
    assert isinstance(rec, UsageEvent)
    assert rec.span_id == "ocr" and rec.event_id == event_id_for("acme", "r1", "ocr", 0)
    assert rec.meters.gpu_ms == 840 and rec.meters.gpu_source == GpuSource.MEASURED
    assert rec.event_time.isoformat() == "2026-03-01T10:00:00+00:00"
    assert rec.producer.startswith("nodemeter-emit/")


def test_request_end_line() -> None:
    rec = record_from_json(
        {"type": "request_end", "tenant": "acme", "request_id": "r1", "span_count": 3}
    )
    assert isinstance(rec, RequestEnd) and rec.span_count == 3


def test_bad_lines_are_reported_with_line_numbers_and_skipped() -> None:
    lines = [
        json.dumps(
            {"tenant": "acme", "request_id": "r", "node_id": "a", "meters": {"input_tokens": 3}}
        ),
        "not json",
        json.dumps({"request_id": "r", "node_id": "a"}),
        json.dumps({"tenant": "acme", "request_id": "r", "node_id": "a", "input_tokens": -4}),
        json.dumps(
            {
                "tenant": "acme",
                "request_id": "r",
                "node_id": "a",
                "event_time": "2026-01-01T00:00:00",
            }
        ),
        json.dumps({"tenant": "acme", "request_id": "r", "node_id": "a", "meters": {"tokens": 1}}),
        "",
        json.dumps({"tenant": "acme", "request_id": "r", "node_id": "a", "billable": "false"}),
        json.dumps({"type": "request_end", "tenant": "acme", "request_id": "r", "span_count": 1}),
    ]
    sent: list = []
    err = io.StringIO()
    assert emit_lines(lines, sent.append, err) == (2, 6)
    report = err.getvalue().splitlines()
    assert [r.split(":")[0] for r in report] == [f"line {n}" for n in (2, 3, 4, 5, 6, 8)]
    assert "invalid_billable" in report[5]
    assert "negative_quantity" in report[2] and "missing_tenant" in report[1]


def test_cli_dry_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    lines = "\n".join(
        json.dumps({"tenant": "acme", "request_id": "r", "node_id": f"n{i}", "api_calls": 1})
        for i in range(3)
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines + "\n"))
    assert main(["emit", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert out.out.split() == [event_id_for("acme", "r", f"n{i}", 0) for i in range(3)]
    assert "3 valid, 0 rejected" in out.err
