"""Billing windows in tenant time zones, daylight-saving days included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from nodemeter_stream.pricing.windows import WindowKind, window_by_id, window_for, zone


def test_dst_days_are_23_and_25_hours() -> None:
    tz = zone("Europe/Berlin")
    spring = window_for(datetime(2026, 3, 29, 12, tzinfo=UTC), WindowKind.DAY, tz)
    autumn = window_for(datetime(2026, 10, 25, 12, tzinfo=UTC), WindowKind.DAY, tz)
    assert spring.end - spring.start == timedelta(hours=23)
    assert autumn.end - autumn.start == timedelta(hours=25)


def test_month_window_in_tokyo() -> None:
    w = window_for(datetime(2026, 11, 30, 16, tzinfo=UTC), WindowKind.MONTH, zone("Asia/Tokyo"))
    assert (w.window_id, w.start) == ("2026-12", datetime(2026, 11, 30, 15, tzinfo=UTC))


# hypothesis bounds are naive by its API; the generated values carry UTC.
NAIVE_MIN = datetime(2000, 1, 1)  # noqa: DTZ001
NAIVE_MAX = datetime(2090, 1, 1)  # noqa: DTZ001


@given(
    st.datetimes(min_value=NAIVE_MIN, max_value=NAIVE_MAX, timezones=st.just(UTC)),
    st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
    st.sampled_from(list(WindowKind)),
)
def test_window_contains_its_instant_and_round_trips(
    ts: datetime, tz_name: str, kind: WindowKind
) -> None:
    tz = zone(tz_name)
    w = window_for(ts, kind, tz)
    assert w.contains(ts)
    assert window_by_id(w.window_id, kind, tz) == w
    assert window_for(w.end, kind, tz).start == w.end  # windows tile time
