"""Reconciliation summary (pure)."""

from __future__ import annotations

from decimal import Decimal as D

from nodemeter_stream.analytics.reconcile import Check, summary


def test_all_ok() -> None:
    checks = [
        Check("acme", "USD", "amount: priced_lines = cost_hourly", D("1.5"), D("1.500000000000")),
        Check("acme", "", "events: usage_events = usage_hourly", D(9), D(9)),
        Check("globex", "USD", "amount: priced_lines = cost_hourly", D(5), D(5)),
    ]
    assert summary(checks) == "reconciled: rollups match the base tables (3 checks, 2 tenants)"


def test_mismatch_lines_name_tenant_check_and_both_values() -> None:
    checks = [
        Check("acme", "USD", "amount: priced_lines = cost_hourly", D("1.5"), D("1.525")),
        Check("acme", "", "events: usage_events = usage_hourly", D(9), D(9)),
    ]
    assert summary(checks) == (
        "MISMATCH acme USD amount: priced_lines = cost_hourly: expected 1.5, got 1.525\n"
        "1 mismatch(es): run `nodemeter rebuild`"
    )
    assert not checks[0].ok and checks[1].ok
