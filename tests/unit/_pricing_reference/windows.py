"""Billing windows: a calendar day or month in the tenant's time zone.

A window is identified by its local calendar label (``2026-11`` or ``2026-11-24``)
and spans ``[start, end)`` in UTC. Daylight-saving days are 23 or 25 hours long;
the bounds come from the zone, not from adding 24 hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nodemeter.errors import ConfigError


class WindowKind(StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class BillingWindow:
    window_id: str
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive

    def contains(self, ts: datetime) -> bool:
        return self.start <= ts < self.end


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r} (use an IANA name like 'Europe/Berlin')"
        ) from None


def _local_midnight(year: int, month: int, day: int, tz: ZoneInfo) -> datetime:
    return datetime.combine(date(year, month, day), time(0), tzinfo=tz).astimezone(UTC)


def window_for(ts: datetime, kind: WindowKind, tz: ZoneInfo) -> BillingWindow:
    """The window of ``kind`` in zone ``tz`` that contains the aware instant ``ts``."""
    if ts.tzinfo is None:
        raise ValueError("window_for needs a timezone-aware datetime")
    local = ts.astimezone(tz)
    if kind is WindowKind.DAY:
        start = _local_midnight(local.year, local.month, local.day, tz)
        d = local.date() + timedelta(days=1)
        end = _local_midnight(d.year, d.month, d.day, tz)
        return BillingWindow(f"{local:%Y-%m-%d}", start, end)
    start = _local_midnight(local.year, local.month, 1, tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    end = _local_midnight(year, month, 1, tz)
    return BillingWindow(f"{local:%Y-%m}", start, end)


def window_by_id(window_id: str, kind: WindowKind, tz: ZoneInfo) -> BillingWindow:
    """The window with label ``window_id`` (inverse of :func:`window_for`)."""
    parts = [int(p) for p in window_id.split("-")]
    if kind is WindowKind.DAY:
        year, month, day = parts
    else:
        (year, month), day = parts, 1
    return window_for(_local_midnight(year, month, day, tz), kind, tz)
