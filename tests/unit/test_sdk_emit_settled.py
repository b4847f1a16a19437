"""Meter.emit_settled: its callback says delivered, spooled (on disk) or lost, once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_sdk_fakes import FakeClock, fake_meter, set_mode

from nodemeter.errors import ConfigError, InvalidUsageError
from nodemeter.events import UsageEvent, event_id_for
from nodemeter.meter import Settlement
from nodemeter.spool import read_segment


def event(i: int, **kw: object) -> UsageEvent:
    fields: dict = dict(
        event_id=event_id_for("acme", "r", f"s{i}", 0), tenant="acme", request_id="r",
        node_id="n", span_id=f"s{i}", event_time=FakeClock()(),
    )  # fmt: skip
    return UsageEvent(**{**fields, **kw})


def test_delivered_once_the_broker_acknowledged(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, report_successes=True)
    got: list[Settlement] = []
    meter.emit_settled(event(1), got.append)
    assert got == []  # nothing before the delivery report
    producers[0].poll(0)
    assert got == ["delivered"] and meter.stats.acked == 1 and meter.stats.spooled == 0


@pytest.mark.parametrize("mode", ["fail", "buffer"])
def test_spooled_when_delivery_fails_or_the_queue_is_full(tmp_path: Path, mode: str) -> None:
    meter, producers = fake_meter(tmp_path, report_successes=True)
    set_mode(producers, mode)
    got: list[Settlement] = []
    meter.emit_settled(event(1), got.append)
    producers[0].poll(0)
    assert got == ["spooled"] and meter.stats.spooled == 1
    # on disk and readable when the callback ran: the open segment holds the record
    (segment,) = [p for p in (tmp_path / "spool").iterdir() if p.is_file()]
    assert [r.key for r in read_segment(segment)] == [b"acme/r"]


def test_lost_when_the_spool_cannot_take_it_either(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, report_successes=True)
    set_mode(producers, "fail")
    got: list[Settlement] = []
    meter.emit_settled(event(1), got.append)
    shutil.rmtree(tmp_path / "spool")
    (tmp_path / "spool").write_text("")  # a file where the spool directory was: no segment
    producers[0].poll(0)
    assert got == ["lost"] and meter.stats.lost == 1


def test_the_callback_runs_once_even_if_the_record_settles_twice(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, report_successes=True)
    got: list[Settlement] = []
    meter.emit_settled(event(1), got.append)
    ((msg, cb),) = producers[0].queue
    cb(None, msg)
    cb(None, msg)
    assert got == ["delivered"]


def test_bad_input_raises_at_the_call_site_and_never_calls_back(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, report_successes=True)
    got: list[Settlement] = []
    with pytest.raises(InvalidUsageError) as info:
        meter.emit_settled(event(1, request_id=""), got.append)
    assert info.value.reason == "missing_request_id"
    assert got == [] and producers[0].queue == []


@pytest.mark.parametrize(
    ("config", "words"),
    [({}, "report_successes=True"), ({"report_successes": True, "spool_fsync": "never"}, "fsync")],
)
def test_it_refuses_a_meter_that_could_not_keep_the_promise(
    tmp_path: Path, config: dict[str, object], words: str
) -> None:
    meter, _ = fake_meter(tmp_path, **config)
    with pytest.raises(ConfigError, match=words):
        meter.emit_settled(event(1), lambda _: None)
