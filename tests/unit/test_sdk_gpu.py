"""GPU helpers: exact apportioning (hypothesis), clean degradation without a GPU."""

from __future__ import annotations

import logging
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_sdk_fakes import delivered_records, fake_meter

from nodemeter.errors import GpuUnavailableError, InvalidUsageError
from nodemeter.events import GpuSource
from nodemeter.gpu import GpuTimer, apportion, gpu_type, nvml_readings


@given(
    st.integers(min_value=0, max_value=10**12),
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=64),
)
def test_apportion_sums_exactly_and_is_non_negative(total: int, weights: list[int]) -> None:
    parts = apportion(total, weights)
    assert sum(parts) == total
    assert len(parts) == len(weights)
    assert all(p >= 0 for p in parts)
    wsum = sum(weights)
    for p, w in zip(parts, weights, strict=True):
        exact = Fraction(total * w, wsum) if wsum else Fraction(total, len(weights))
        assert abs(p - exact) < 1  # each share is its exact share rounded down or up
        if wsum and w == 0:
            assert p == 0


def test_apportion_examples() -> None:
    assert apportion(100, [1, 1, 1]) == [34, 33, 33]  # tie: earlier request gets the extra ms
    assert apportion(10, [3, 1]) == [8, 2]  # 7.5 / 2.5: ties -> first
    assert apportion(7, [0, 0]) == [4, 3]  # no weights: even split
    assert apportion(0, []) == []
    assert apportion(9, [Decimal("1.5"), Decimal("0.5")]) == [7, 2]


@pytest.mark.parametrize(
    ("total", "weights"), [(-1, [1]), (5, []), (5, [1, -2]), (5, [0.5]), (1.5, [1])]
)
def test_apportion_rejects_bad_input(total: object, weights: list) -> None:
    with pytest.raises(InvalidUsageError):
        apportion(total, weights)  # type: ignore[arg-type]


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


@pytest.mark.skipif(_has_cuda(), reason="checks the no-GPU path; this machine has CUDA")
def test_timer_without_cuda_degrades_with_a_clear_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    timer = GpuTimer()
    assert not timer.available and ("torch" in timer.reason or "CUDA" in timer.reason)
    meter, producers = fake_meter(tmp_path)
    with (
        caplog.at_level(logging.WARNING, logger="nodemeter.gpu"),
        meter.request(tenant="acme"),
        meter.node("infer") as span,
    ):
        with span.gpu_timer():
            pass
        with span.gpu_timer(fallback="wall", gpu_type="cpu-fallback"):
            sum(range(10000))
    meter.flush()
    ev = [r for r in delivered_records(producers) if hasattr(r, "meters")]
    (only,) = ev  # the timer without fallback recorded nothing
    assert only.meters.gpu_source == GpuSource.ESTIMATED and only.meters.gpu_ms >= 1
    assert any("GPU time not measured" in r.message for r in caplog.records)


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs torch with a CUDA GPU")
def test_cuda_timer_measures_gpu_work() -> None:  # pragma: no cover - GPU machines only
    import torch

    x = torch.randn(4096, 4096, device="cuda")
    with GpuTimer() as timer:
        for _ in range(10):
            x = x @ x / 4096
    assert timer.available and timer.elapsed_ms >= 1 and timer.source == GpuSource.MEASURED


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs torch with a CUDA GPU")
def test_span_gpu_timer_and_apportion_on_a_real_gpu(
    tmp_path: Path,
) -> None:  # pragma: no cover - GPU machines only
    # One batched GPU call serves three requests: the span measures it with CUDA events,
    # names the GPU as NVML does, and the measured time is apportioned exactly by tokens.
    import torch

    meter, producers = fake_meter(tmp_path)
    x = torch.randn(2048, 2048, device="cuda")
    with (
        meter.request(tenant="acme"),
        meter.node("infer.batch", model="m") as span,
        span.gpu_timer() as timer,
    ):
        for _ in range(20):
            x = x @ x / 2048
    meter.flush()
    (batch,) = [r for r in delivered_records(producers) if hasattr(r, "meters")]
    assert batch.meters.gpu_source == GpuSource.MEASURED
    assert batch.meters.gpu_ms == timer.elapsed_ms >= 1
    assert batch.meters.gpu_type == torch.cuda.get_device_name() == gpu_type()
    tokens = [1200, 300, 500]
    shares = apportion(batch.meters.gpu_ms, tokens)
    assert sum(shares) == batch.meters.gpu_ms and all(s >= 0 for s in shares)
    print(f"\n[gpu] {batch.meters.gpu_type}: {batch.meters.gpu_ms} ms measured -> {shares}")


def test_nvml_reports_or_explains() -> None:
    try:
        readings = nvml_readings()
    except GpuUnavailableError as exc:
        assert "NVML" in str(exc) or "nvidia-ml-py" in str(exc)
        assert gpu_type() == ""
    else:
        assert readings and all(r.memory_total_mib > 0 for r in readings)
        assert gpu_type() == readings[0].name


def test_warmup_tracker_marks_first_calls_per_model(tmp_path: Path) -> None:
    from nodemeter.gpu import WarmupTracker

    meter, producers = fake_meter(tmp_path)
    warm = WarmupTracker(first_n=2)
    with meter.request(tenant="acme"):
        for model in ("a", "a", "a", "b"):
            with meter.node("infer", model=model) as span:
                warm.mark(span, model)
                span.record(gpu_ms=10, gpu_source="MEASURED")
    meter.flush()
    ev = [r for r in delivered_records(producers) if hasattr(r, "meters")]
    assert [(e.model, e.billable, e.non_billable_reason) for e in ev] == [
        ("a", False, "cold_start"),
        ("a", False, "cold_start"),
        ("a", True, None),
        ("b", False, "cold_start"),
    ]
