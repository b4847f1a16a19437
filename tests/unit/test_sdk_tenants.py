"""Known tenants: usage for a tenant outside MeterConfig.tenants is refused at the call site."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_sdk_fakes import delivered_records, fake_meter

from nodemeter.errors import InvalidUsageError
from nodemeter.events import UsageEvent, event_id_for
from nodemeter.meter import MeterConfig


def event(tenant: str) -> UsageEvent:
    return UsageEvent(
        event_id=event_id_for(tenant, "r", "s", 0), tenant=tenant, request_id="r",
        node_id="n", span_id="s", event_time=datetime(2026, 11, 2, tzinfo=UTC),
    )  # fmt: skip


def test_unknown_tenant_is_refused_by_emit_and_by_request(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, tenants=frozenset({"acme"}))
    with pytest.raises(InvalidUsageError, match="unknown tenant 'umbrella'") as exc:
        meter.emit(event("umbrella"))
    assert exc.value.reason == "unknown_tenant"
    with pytest.raises(InvalidUsageError, match="unknown tenant"):
        meter.request(tenant="umbrella")
    meter.emit(event("acme"))
    with meter.request(tenant="acme", request_id="r2"), meter.node("db.query") as span:
        span.record(api_calls=1)
    meter.flush()
    assert {r.tenant for r in delivered_records(producers)} == {"acme"}


def test_no_list_means_any_valid_tenant(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    meter.emit(event("umbrella"))
    meter.flush()
    assert [r.tenant for r in delivered_records(producers)] == ["umbrella"]


def test_tenants_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEMETER_TENANTS", "acme, globex,,")
    assert MeterConfig(bootstrap_servers="x:1").tenants == frozenset({"acme", "globex"})
    monkeypatch.delenv("NODEMETER_TENANTS")
    assert MeterConfig(bootstrap_servers="x:1").tenants is None


@pytest.mark.parametrize("native", [False, None])
def test_a_trailing_newline_is_refused_in_tenants_and_custom_meters(
    tmp_path: Path, native: bool | None
) -> None:
    """``$`` lets "acme\\n" through; the whole string must match (both encoders)."""
    from nodemeter.events import Meters, validate_meters, validate_tenant
    from nodemeter.meter import Meter

    meter, producers = fake_meter(tmp_path)
    meter = Meter(meter.config, producer_factory=lambda conf: producers[0], native=native)
    for bad in ("acme\n", "acme\r\n", "\nacme"):
        with pytest.raises(InvalidUsageError) as exc:
            validate_tenant(bad)
        assert exc.value.reason == "invalid_tenant"
        with pytest.raises(InvalidUsageError):
            meter.request(tenant=bad)
        with pytest.raises(InvalidUsageError):
            meter.emit(event(bad))
    pages = Meters(custom={"pages\n": 3})
    with pytest.raises(InvalidUsageError) as exc:
        validate_meters(pages)
    assert exc.value.reason == "invalid_meter"
    with pytest.raises(InvalidUsageError):
        meter.emit(UsageEvent(**{**_fields(event("acme")), "meters": pages}))
    meter.close()
    assert delivered_records(producers) == []


def _fields(ev: UsageEvent) -> dict[str, object]:
    return {f: getattr(ev, f) for f in ev.__slots__}
