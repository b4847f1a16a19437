"""Fakes shared by the SDK unit tests (no broker). Imported as ``test_sdk_fakes``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nodemeter.codec import decode_record
from nodemeter.events import Record
from nodemeter.meter import Meter, MeterConfig, _LocalMessage


class FakeKafkaError:
    def __init__(self, text: str = "Local: Message timed out", *, fatal: bool = False) -> None:
        self.text, self._fatal = text, fatal

    def fatal(self) -> bool:
        return self._fatal

    def __str__(self) -> str:
        return self.text


# the SDK's own stand-in for a confluent Message has exactly the shape the fakes need
FakeMessage = _LocalMessage


class FakeProducer:
    """Queues produced messages; poll/flush deliver them, or fail them per ``mode``.

    mode: "ok" (deliver), "fail" (delivery error), "fatal" (fatal error),
    "buffer" (produce raises BufferError), "down" (list_topics raises).
    Honours ``delivery.report.only.error`` as confluent-kafka does: with it, a
    successful delivery calls no callback (it is still recorded in ``delivered``).
    ``len()`` is what is still in flight (queued, report not yet served).
    """

    instances: list[FakeProducer] = []

    def __init__(self, conf: dict[str, Any], mode: str = "ok") -> None:
        self.conf = conf
        self.mode = mode
        self.only_error = bool(conf.get("delivery.report.only.error", False))
        self.callbacks = 0  # delivery callbacks called
        self.queue: list[tuple[FakeMessage, Callable[..., None]]] = []
        self.delivered: list[FakeMessage] = []
        FakeProducer.instances.append(self)

    def produce(self, topic: str, value: bytes, key: bytes | None, on_delivery: Any) -> None:
        if self.mode == "buffer":
            raise BufferError("Local: Queue full")
        self.queue.append((FakeMessage(topic, key, value), on_delivery))

    def _serve(self) -> int:
        served = 0
        while self.queue:
            msg, cb = self.queue.pop(0)
            if self.mode in ("ok", "down"):
                self.delivered.append(msg)
                if not self.only_error:
                    self.callbacks += 1
                    cb(None, msg)
            else:
                self.callbacks += 1
                cb(FakeKafkaError(fatal=self.mode == "fatal"), msg)
            served += 1
        return served

    def poll(self, timeout: float) -> int:
        return self._serve()

    def flush(self, timeout: float) -> int:
        self._serve()
        return 0

    def __len__(self) -> int:
        return len(self.queue)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        queue, self.queue = self.queue, []
        for msg, cb in queue:
            self.callbacks += 1
            cb(FakeKafkaError("Local: Purged in queue"), msg)

    def list_topics(self, topic: str | None = None, timeout: float = 1.0) -> Any:
        if self.mode == "down":
            raise RuntimeError("all brokers down")
        return type("Md", (), {"brokers": {1: "b"}})()


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def fake_meter(tmp_path: Path, mode: str = "ok", **config: Any) -> tuple[Meter, list[FakeProducer]]:
    """A meter on fake producers; a producer made later (rebuild, the spool replay's
    producer) starts in the mode of the newest one, i.e. the fake broker's state."""
    made: list[FakeProducer] = []

    def factory(conf: dict[str, Any]) -> FakeProducer:
        p = FakeProducer(conf, made[-1].mode if made else mode)
        made.append(p)
        return p

    cfg = MeterConfig(
        bootstrap_servers="fake:9092", topic="t.usage", spool_dir=tmp_path / "spool", **config
    )
    meter = Meter(cfg, producer_factory=factory, clock=FakeClock(), background=False)  # type: ignore[arg-type]
    return meter, made


def set_mode(producers: list[FakeProducer], mode: str) -> None:
    """Switch every fake producer made so far (the main one and the replay one)."""
    for p in producers:
        p.mode = mode


def delivered_records(producers: list[FakeProducer]) -> list[Record]:
    return [decode_record(m.value()) for p in producers for m in p.delivered]
