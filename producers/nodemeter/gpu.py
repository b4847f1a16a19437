"""GPU metering: CUDA-event timing, NVML readings, and splitting batch GPU time.

torch and nvidia-ml-py (``pynvml``) are optional: imported inside functions,
and without them (or without a GPU) everything here degrades to a clear
message: ``GpuTimer`` records nothing (or wall time marked ESTIMATED when asked),
``nvml_readings`` raises ``GpuUnavailableError`` saying what is missing.
``apportion`` is pure integer arithmetic and needs neither.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from nodemeter.errors import GpuUnavailableError, InvalidUsageError
from nodemeter.events import GpuSource

log = logging.getLogger("nodemeter.gpu")
_warned: set[str] = set()


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("nodemeter: GPU time not measured: %s", reason)


# --- apportioning -------------------------------------------------------------------------


def apportion(total_gpu_ms: int, weights: Sequence[int | Decimal | Fraction]) -> list[int]:
    """Split ``total_gpu_ms`` over requests in proportion to ``weights``.

    Integer results that sum exactly to the total (largest remainder; ties go
    to the earlier request, so the split is deterministic). Weights are e.g.
    tokens or sequence lengths per request of one batch; all-zero weights split
    evenly. Raises ``InvalidUsageError`` on negative or non-integer input.
    """
    if isinstance(total_gpu_ms, bool) or not isinstance(total_gpu_ms, int) or total_gpu_ms < 0:
        raise InvalidUsageError(
            f"total_gpu_ms must be a non-negative integer, got {total_gpu_ms!r}",
            reason="invalid_quantity",
        )
    if not weights:
        if total_gpu_ms:
            raise InvalidUsageError(
                "no requests to apportion GPU time to", reason="invalid_weights"
            )
        return []
    exact: list[Fraction] = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, int | Decimal | Fraction):
            raise InvalidUsageError(
                f"weights must be int, Decimal or Fraction (no floats), got {w!r}",
                reason="invalid_weights",
            )
        f = Fraction(w)
        if f < 0:
            raise InvalidUsageError(
                f"weights must not be negative, got {w}", reason="invalid_weights"
            )
        exact.append(f)
    wsum = sum(exact, Fraction(0))
    if wsum == 0:
        exact = [Fraction(1)] * len(exact)
        wsum = Fraction(len(exact))
    shares = [total_gpu_ms * w / wsum for w in exact]
    out = [int(s) for s in shares]  # floor: shares are non-negative
    left = total_gpu_ms - sum(out)
    by_remainder = sorted(range(len(out)), key=lambda i: (-(shares[i] - out[i]), i))
    for i in by_remainder[:left]:
        out[i] += 1
    return out


# --- CUDA event timer ------------------------------------------------------------------------


def _cuda() -> tuple[Any, str]:
    """(torch, '') when CUDA timing works here, else (None, reason)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed (pip install torch) so CUDA events are unavailable"
    try:
        if not torch.cuda.is_available():
            return None, "torch sees no CUDA device"
    except Exception as exc:  # broken driver installs raise here
        return None, f"CUDA is not usable: {exc}"
    return torch, ""


class GpuTimer:
    """Times the GPU work queued inside a ``with`` block using CUDA events.

    ``elapsed_ms`` (int, rounded up so short kernels are not free) is set on
    exit. With no CUDA, ``available`` is False, ``reason`` says why, and
    ``elapsed_ms`` is 0 unless ``fallback="wall"`` (wall-clock ms, ESTIMATED).
    """

    def __init__(self, *, fallback: str = "none", device: int | None = None) -> None:
        if fallback not in ("none", "wall"):
            raise InvalidUsageError("fallback must be 'none' or 'wall'", reason="invalid_fallback")
        self.fallback = fallback
        self.device = device
        self._torch, self.reason = _cuda()
        self.available = self._torch is not None
        self.elapsed_ms = 0
        self.source = GpuSource.MEASURED if self.available else GpuSource.ESTIMATED
        self.gpu_type = ""
        self._start: Any = None
        self._end: Any = None
        self._t0 = 0.0

    def __enter__(self) -> GpuTimer:
        if self.available:
            torch = self._torch
            self.gpu_type = torch.cuda.get_device_name(self.device)
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            _warn_once(self.reason)
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.available:
            self._end.record()
            self._end.synchronize()
            ms = float(self._start.elapsed_time(self._end))
            self.elapsed_ms = max(1, int(-(-ms // 1))) if ms > 0 else 0
        elif self.fallback == "wall":
            ms = (time.perf_counter() - self._t0) * 1000
            self.elapsed_ms = int(-(-ms // 1))


# --- NVML -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    utilization_pct: int
    memory_used_mib: int
    memory_total_mib: int
    power_mw: int | None


def nvml_readings() -> list[GpuReading]:
    """One reading per visible GPU via NVML; ``GpuUnavailableError`` says why not."""
    try:
        import pynvml
    except ImportError:
        raise GpuUnavailableError(
            "nvidia-ml-py is not installed (pip install 'nodemeter[gpu]')"
        ) from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        raise GpuUnavailableError(f"NVML could not start (no NVIDIA driver/GPU?): {exc}") from exc
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            try:
                power: int | None = int(pynvml.nvmlDeviceGetPowerUsage(h))
            except Exception:
                power = None
            out.append(
                GpuReading(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    utilization_pct=int(util.gpu),
                    memory_used_mib=int(mem.used) // (1024 * 1024),
                    memory_total_mib=int(mem.total) // (1024 * 1024),
                    power_mw=power,
                )
            )
        return out
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def gpu_type(index: int = 0) -> str:
    """The GPU's product name for ``gpu_type``, or "" when none can be read."""
    try:
        readings = nvml_readings()
    except GpuUnavailableError as exc:
        _warn_once(str(exc))
        return ""
    return readings[index].name if index < len(readings) else ""


# --- warm-up ---------------------------------------------------------------------------------


class WarmupTracker:
    """Marks the first ``first_n`` spans per key (a model, a device) as non-billable.

    Kernel compilation, weight loading and cache fills on a cold worker are the
    operator's cost, not the tenant's: those spans are still emitted (the usage
    is visible) but with ``billable=False`` and the given reason. Thread-safe;
    counts are per process, which is exactly where a cold start happens.
    """

    def __init__(self, *, first_n: int = 1, reason: str = "cold_start") -> None:
        if isinstance(first_n, bool) or not isinstance(first_n, int) or first_n < 0:
            raise InvalidUsageError(
                "first_n must be a non-negative integer", reason="invalid_warmup"
            )
        self.first_n = first_n
        self.reason = reason
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def mark(self, span: Any, key: str) -> bool:
        """Mark ``span`` non-billable if it is among the first calls for ``key``."""
        with self._lock:
            n = self._seen.get(key, 0)
            self._seen[key] = n + 1
        if n < self.first_n:
            span.mark_non_billable(self.reason)
            return True
        return False
