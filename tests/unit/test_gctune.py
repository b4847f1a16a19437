"""The worker's garbage-collector settings (nodemeter_stream.gctune) and their metric."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from nodemeter.errors import ConfigError
from nodemeter_stream.app import WorkerConfig
from nodemeter_stream.gctune import GcTimer, tune_gc
from nodemeter_stream.metrics import WorkerMetrics


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_zero_leaves_the_collector_as_it_is(restored_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    assert tune_gc(0) is None
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_freezes_what_exists_and_raises_the_first_threshold(restored_gc: None) -> None:
    gc.set_threshold(700, 11, 12)
    kept = [object() for _ in range(100)]  # noqa: F841 (alive: frozen with the rest)
    tuning = tune_gc(25_000)
    assert tuning is not None
    assert gc.get_threshold() == (25_000, 11, 12) == tuning.threshold
    # this test process's modules; a frozen object that dies later (a temporary another
    # thread held) leaves the permanent generation, so the count can only fall
    assert tuning.frozen >= gc.get_freeze_count() > max(1000, tuning.frozen - 100)
    assert "25000" in tuning.describe()
    # frozen objects are out of every collection: what is left to walk is small
    assert len(gc.get_objects()) < tuning.frozen


def test_timer_adds_up_each_collection_by_generation() -> None:
    timer = GcTimer().install()
    try:
        gc.collect(2)
        gc.collect(0)
    finally:
        timer.uninstall()
    assert timer.collections[2] >= 1 and timer.collections[0] >= 1
    assert timer.seconds[2] > 0
    n = list(timer.collections)
    gc.collect()  # after uninstall: not counted
    assert timer.collections == n


def test_metric_reads_the_timer_at_scrape_time() -> None:
    metrics = WorkerMetrics()
    timer = GcTimer()
    metrics.watch_gc(timer)
    timer.seconds[1] = 1.25
    value = metrics.registry.get_sample_value("nodemeter_gc_seconds_total", {"generation": "1"})
    assert value == 1.25
    timer.seconds[1] = 2.5  # read again at the next scrape
    assert (
        metrics.registry.get_sample_value("nodemeter_gc_seconds_total", {"generation": "1"}) == 2.5
    )


def test_config_default_env_and_range(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerConfig(bootstrap="b:9092").gc_threshold == 10_000
    monkeypatch.setenv("NODEMETER_KAFKA_BOOTSTRAP", "b:9092")
    monkeypatch.setenv("NODEMETER_WORKER_GC_THRESHOLD", "0")
    assert WorkerConfig.from_env().gc_threshold == 0
    with pytest.raises(ConfigError, match="gc_threshold"):
        WorkerConfig(bootstrap="b:9092", gc_threshold=-1)
    monkeypatch.setenv("NODEMETER_WORKER_GC_THRESHOLD", "lots")
    with pytest.raises(ConfigError, match="NODEMETER_WORKER_GC_THRESHOLD"):
        WorkerConfig.from_env()
