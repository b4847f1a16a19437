"""Meter: config validation, call-site errors, spool on failure, replay, producer rebuild."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_sdk_fakes import FakeClock, delivered_records, fake_meter, set_mode

from nodemeter.codec import decode_record, encode_record
from nodemeter.errors import ConfigError, InvalidUsageError, OversizeEventError
from nodemeter.events import UsageEvent, event_id_for
from nodemeter.meter import MeterConfig
from nodemeter.spool import read_segment


def event(i: int, **kw: object) -> UsageEvent:
    base: dict = dict(
        event_id=event_id_for("acme", "r", f"s{i}", 0),
        tenant="acme",
        request_id="r",
        node_id="n",
        span_id=f"s{i}",
        event_time=FakeClock()(),
    )
    base.update(kw)
    return UsageEvent(**base)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bootstrap_servers": ""},
        {"compression": "brotli"},
        {"linger_ms": -1},
        {"delivery_timeout_ms": 10},
        {"spool_fsync": "sometimes"},
        {"registry_url": "ftp://x"},
        {"producer_config": {"enable.idempotence": False}},
        {"producer_config": {"acks": "1"}},
        {"producer_config": {"delivery.report.only.error": False}},
        {"report_successes": "yes"},
    ],
)
def test_config_is_validated_when_built(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        MeterConfig(**kwargs)


def test_producer_conf_pins_idempotence_and_hides_secrets() -> None:
    cfg = MeterConfig(producer_config={"sasl.password": "hunter2", "linger.ms": 20})
    conf = cfg.producer_conf()
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["compression.type"] == "lz4" and conf["linger.ms"] == 20
    assert "hunter2" not in repr(cfg)


def test_emit_delivers_with_key_tenant_request(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    meter.emit(event(1))
    assert meter.flush() == 0
    (msg,) = producers[0].delivered
    assert msg.key() == b"acme/r" and msg.topic() == "t.usage"
    assert decode_record(msg.value()) == event(1)
    assert meter.stats.delivered == 1 and meter.stats.spooled == 0


def test_bad_records_raise_typed_errors_before_sending(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    with pytest.raises(InvalidUsageError) as info:
        meter.emit(event(1, tenant=""))
    assert info.value.reason == "missing_tenant"
    with pytest.raises(OversizeEventError):
        meter.emit(event(2, attributes={f"k{i}": "v" * 2000 for i in range(40)}))
    meter.flush()
    assert producers[0].delivered == [] and meter.stats.produced == 0


def test_failed_delivery_is_spooled_and_replayed_with_the_same_bytes(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, mode="fail")
    for i in range(5):
        meter.emit(event(i))
    meter.flush()  # serves callbacks: every delivery fails -> spool; nothing raised here
    assert meter.stats.failed == 5 and meter.stats.spooled == 5 and meter.stats.lost == 0
    assert meter.spooled_records() == 5
    producers[0].mode = "ok"
    assert meter.replay() == 5
    meter.flush()
    assert meter.spooled_records() == 0 and meter.stats.replayed == 5
    replayed = delivered_records(producers)
    assert replayed == [event(i) for i in range(5)]  # same ids, same content, same order
    assert list((tmp_path / "spool").iterdir()) == []  # segments deleted once settled


def test_replay_skipped_while_broker_is_down(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, mode="fail")
    meter.emit(event(1))
    meter.flush()
    producers[0].mode = "down"
    assert meter.replay() == 0 and meter.spooled_records() == 1


def test_replay_that_fails_again_keeps_the_record(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, mode="fail")
    meter.emit(event(1))
    meter.flush()
    assert meter.replay() == 1
    meter.flush()  # fails again -> re-spooled before the old segment is deleted
    assert meter.spooled_records() == 1
    set_mode(producers, "ok")  # the main producer and the replay one
    meter.replay()
    meter.flush()
    assert delivered_records(producers) == [event(1)] and meter.spooled_records() == 0


def test_queue_full_spools_instead_of_blocking(tmp_path: Path) -> None:
    meter, _producers = fake_meter(tmp_path, mode="buffer")
    meter.emit(event(1))
    assert meter.stats.spooled == 1
    (seg,) = (tmp_path / "spool").iterdir()
    (rec,) = list(read_segment(seg))
    assert rec.value == encode_record(event(1)) and rec.key == b"acme/r"


def test_fatal_error_rebuilds_the_producer(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, mode="fatal")
    meter.emit(event(1))
    meter.flush()
    assert meter._rebuild.is_set()
    meter._rebuild_producer()
    assert len(producers) == 2 and meter.stats.rebuilt == 1
    producers[1].mode = "ok"  # the new producer works
    meter.emit(event(2))
    meter.replay()
    meter.flush()
    assert sorted(r.span_id for r in delivered_records(producers)) == ["s1", "s2"]


def test_a_rebuild_racing_an_emit_never_loses_the_record(tmp_path: Path) -> None:
    # emit takes no lock: here the rebuild (swap + purge of the old producer) lands
    # between emit reading the producer and the record entering it, the worst order.
    meter, producers = fake_meter(tmp_path)
    old = producers[0]
    real_produce = old.produce

    def produce_after_a_rebuild(*args: object, **kwargs: object) -> None:
        meter._rebuild_producer()
        real_produce(*args, **kwargs)  # type: ignore[arg-type]

    old.produce = produce_after_a_rebuild  # type: ignore[method-assign]
    meter.emit(event(1))
    assert meter.stats.spooled == 1  # the emit path noticed the swap and kept a copy
    (seg,) = (tmp_path / "spool").iterdir()
    (rec,) = list(read_segment(seg))
    assert rec.value == encode_record(event(1))
    meter.emit(event(2))  # later records go to the new producer
    meter.flush()
    assert delivered_records(producers[1:]) == [event(2)]


def test_callback_errors_never_reach_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    meter, _producers = fake_meter(tmp_path, mode="fail")
    meter._spool.append = None  # type: ignore[assignment,method-assign]  # spooling itself breaks
    meter.emit(event(1))
    with caplog.at_level(logging.ERROR, logger="nodemeter"):
        meter.flush()  # must not raise
    assert any("callback failed" in r.message for r in caplog.records)


def test_close_spools_what_is_left_and_emit_after_close_is_spooled(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    producers[0].flush = lambda timeout: len(producers[0].queue)  # type: ignore[method-assign]
    meter.emit(event(1))
    meter.close()
    meter.emit(event(2))
    assert meter.stats.spooled == 2 and meter.spooled_records() == 2


def test_successes_call_no_python_callback_by_default(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    assert producers[0].conf["delivery.report.only.error"] is True
    for i in range(5):
        meter.emit(event(i))
    assert meter.stats.delivered == 0  # all five still in flight
    assert meter.flush() == 0
    assert producers[0].callbacks == 0 and len(producers[0].delivered) == 5
    assert meter.stats.delivered == 5  # produced - failed - in flight
    assert meter.stats.as_dict() == {
        "produced": 5,
        "delivered": 5,
        "failed": 0,
        "spooled": 0,
        "replayed": 0,
        "rebuilt": 0,
        "lost": 0,
    }


def test_failures_still_reach_the_callback_and_are_not_counted_delivered(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    meter.emit(event(1))
    meter.flush()
    producers[0].mode = "fail"
    meter.emit(event(2))
    meter.emit(event(3))
    meter.flush()
    assert producers[0].callbacks == 2  # the failures only
    assert meter.stats.failed == 2 and meter.stats.spooled == 2 and meter.stats.delivered == 1
    assert [rec.value for p in meter._spool.pending_segments() for rec in read_segment(p)] == [
        encode_record(event(2)),
        encode_record(event(3)),
    ]


def test_report_successes_keeps_a_callback_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODEMETER_REPORT_SUCCESSES", "1")
    assert MeterConfig().report_successes is True
    meter, producers = fake_meter(tmp_path, report_successes=True)
    assert producers[0].conf["delivery.report.only.error"] is False
    for i in range(3):
        meter.emit(event(i))
    meter.flush()
    assert producers[0].callbacks == 3 and meter.stats.delivered == 3


def test_replay_deletes_a_segment_only_once_its_own_producer_acked_every_record(
    tmp_path: Path,
) -> None:
    meter, producers = fake_meter(tmp_path, mode="fail")
    for i in range(3):
        meter.emit(event(i))
    meter.flush()
    producers[0].mode = "ok"
    assert meter.replay() == 3
    main, replayer = producers
    # the main producer reports failures only; the replay one reports every delivery
    assert main.only_error and not replayer.only_error
    assert len(replayer) == 3 and main.queue == []
    (seg,) = meter._spool.pending_segments()
    assert ".replaying-" in seg.name  # claimed (and flock-held) by this meter
    msg, cb = replayer.queue.pop(0)
    replayer.delivered.append(msg)
    cb(None, msg)  # one of three acknowledged: the segment stays
    assert seg.exists() and meter.stats.replayed == 1
    meter.flush()  # the other two
    assert not seg.exists() and meter.stats.replayed == 3 and meter.spooled_records() == 0
    assert [r.span_id for r in delivered_records([replayer])] == ["s0", "s1", "s2"]


def test_replay_failing_on_its_producer_spools_again_before_deleting(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, mode="fail")
    meter.emit(event(1))
    meter.emit(event(2))
    meter.flush()
    producers[0].mode = "ok"
    (old,) = meter._spool.pending_segments()
    meter.replay()
    producers[1].mode = "fail"  # the broker goes away during the replay
    meter.flush()
    assert not old.exists() and meter.spooled_records() == 2 and meter.stats.lost == 0
    set_mode(producers, "ok")
    meter.replay()
    meter.flush()
    assert delivered_records(producers) == [event(1), event(2)]
    assert meter.spooled_records() == 0


def test_rebuild_with_replayed_records_in_flight_spools_them_again(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, mode="fail")
    meter.emit(event(1))
    meter.flush()
    producers[0].mode = "ok"
    meter.replay()
    assert len(producers[1]) == 1
    meter._rebuild_producer()  # purges both: the replayed record comes back and is spooled
    assert meter._replayer is None and meter.spooled_records() == 1
    meter.replay()  # a new replay producer
    meter.flush()
    assert len(producers) == 4 and delivered_records(producers) == [event(1)]
    assert meter.spooled_records() == 0 and meter.stats.lost == 0


def test_close_settles_replayed_records(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, mode="fail")
    meter.emit(event(1))
    meter.flush()
    producers[0].mode = "ok"
    meter.replay()
    meter.close()
    assert delivered_records(producers) == [event(1)]
    assert list((tmp_path / "spool").iterdir()) == []
