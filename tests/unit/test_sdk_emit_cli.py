"""``nodemeter emit``: JSON lines to records, per-line errors, dry run through the CLI."""

from __future__ import annotations

import io
import json
import sys

import pytest

from nodemeter.cli import main
from nodemeter.emit_cli import LineTooLong, emit_lines, read_lines, record_from_json
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


# --- bad stdin (issue 12) --------------------------------------------------------------


def _usage(**over: object) -> bytes:
    obj = {"tenant": "acme", "request_id": "r", "node_id": "a", "api_calls": 1, **over}
    return json.dumps(obj).encode() + b"\n"


def test_each_kind_of_bad_line_is_one_error_line_and_the_run_goes_on() -> None:
    lines = [
        _usage(node_id="n1"),
        b"[" * 100_000 + b"\n",  # nested past the recursion limit
        _usage(node_id="n2", custom=["pages", 3]),
        _usage(node_id="n3", custom="pages"),
        b'{"tenant": "acme", "request_id": "r\xff", "node_id": "a"}\n',  # bad UTF-8
        _usage(node_id="n4", custom={"pages": "three"}),
        _usage(node_id="n5", span_id=7),
        _usage(node_id="n6"),
    ]
    sent: list = []
    err = io.StringIO()
    assert emit_lines(lines, sent.append, err) == (2, 6)
    assert [r.node_id for r in sent] == ["n1", "n6"]
    report = err.getvalue().splitlines()
    assert len(report) == 6  # one line each, no traceback
    assert [r.split(":")[0] for r in report] == [f"line {n}" for n in (2, 3, 4, 5, 6, 7)]
    assert report[0].startswith("line 2: invalid_json: JSON nested too deeply")
    assert report[1].startswith("line 3: invalid_meter: custom must be an object")
    assert report[3] == "line 5: invalid_utf8: not UTF-8 (byte 0xff at offset 35)"


def test_lines_over_the_cap_are_refused_without_being_held(tmp_path: object) -> None:
    data = _usage(node_id="n1") + b"x" * 5000 + b"\n" + b"y" * 300 + _usage(node_id="n2")
    got = list(read_lines(io.BytesIO(data), 256))
    assert got[0] == _usage(node_id="n1")
    assert got[1] == LineTooLong(5000, 256)
    assert got[2] == LineTooLong(300 + len(_usage(node_id="n2")) - 1, 256)
    # exactly the cap, with or without the newline, is allowed
    assert list(read_lines(io.BytesIO(b"a" * 256 + b"\n" + b"b" * 256), 256)) == [
        b"a" * 256 + b"\n",
        b"b" * 256,
    ]
    assert list(read_lines(io.BytesIO(b"c" * 257), 256)) == [LineTooLong(257, 256)]
    err = io.StringIO()
    assert emit_lines([LineTooLong(5000, 256), _usage()], [].append, err) == (1, 1)
    assert err.getvalue().startswith("line 1: line_too_long: line is 5000 bytes; the limit is 256")


def test_records_of_one_span_are_numbered_in_order_and_the_same_on_a_rerun() -> None:
    lines = [_usage(), _usage(api_calls=2), _usage(node_id="b"), _usage(api_calls=3)]
    runs = []
    for _ in range(2):
        sent: list = []
        assert emit_lines(lines, sent.append, io.StringIO()) == (4, 0)
        runs.append([(r.node_id, r.sequence, r.event_id) for r in sent])
    assert runs[0] == runs[1]
    assert [(n, s) for n, s, _ in runs[0]] == [("a", 0), ("a", 1), ("b", 0), ("a", 2)]
    assert runs[0][0][2] == event_id_for("acme", "r", "a", 0)  # the first: as before
    assert len({i for *_, i in runs[0]}) == 4


def test_a_rejected_line_keeps_its_number_so_a_fixed_rerun_changes_no_other_id() -> None:
    bad = [_usage(), _usage(api_calls=-1), _usage(api_calls=3)]
    fixed = [_usage(), _usage(api_calls=1), _usage(api_calls=3)]
    first: list = []
    assert emit_lines(bad, first.append, io.StringIO()) == (2, 1)
    again: list = []
    assert emit_lines(fixed, again.append, io.StringIO()) == (3, 0)
    assert [r.event_id for r in first] == [again[0].event_id, again[2].event_id]


def test_an_explicit_duplicate_id_is_refused_naming_the_first_line() -> None:
    lines = [
        _usage(sequence=0),
        _usage(sequence=0, api_calls=5),
        _usage(event_id="e-1"),
        _usage(event_id="e-1", node_id="z"),
        _usage(),  # no sequence: takes the next free one (1), not 0
        json.dumps({"type": "request_end", "tenant": "acme", "request_id": "r", "span_count": 3}).encode(),
        json.dumps({"type": "request_end", "tenant": "acme", "request_id": "r", "span_count": 3}).encode(),
    ]  # fmt: skip
    sent: list = []
    err = io.StringIO()
    assert emit_lines(lines, sent.append, err) == (4, 3)
    report = err.getvalue().splitlines()
    assert report[0].startswith("line 2: duplicate_event_id: event id ")
    assert "already sent from line 1" in report[0]
    assert "already sent from line 3" in report[1]
    assert report[2].startswith("line 7: duplicate_event_id") and "from line 6" in report[2]
    assert [r.sequence for r in sent if isinstance(r, UsageEvent)] == [0, 0, 1]


def test_exit_statuses_are_documented_and_distinct() -> None:
    import nodemeter.emit_cli as cli

    codes = {cli.EXIT_OK, cli.EXIT_REJECTED, cli.EXIT_USAGE, cli.EXIT_SPOOLED, cli.EXIT_LOST}
    assert codes == {0, 1, 2, 3, 4}
    doc = cli.__doc__ or ""
    for code, words in ((0, "every line valid"), (1, "some lines rejected"),
                        (3, "delivery failed"), (4, "records lost")):  # fmt: skip
        assert f"    {code}  {words}" in doc
