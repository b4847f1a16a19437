"""Reconciliation: the money of record against every rollup, to the unit.

Runs ``sql/queries/reconcile.sql`` (priced_lines FINAL vs cost_hourly,
tenant_spend_daily, request_node_costs, request_costs_by_start; usage_events FINAL vs
usage_hourly) and
summarises it for people (``nodemeter rebuild``, the demo).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nodemeter_stream.analytics import queries


@dataclass(frozen=True)
class Check:
    tenant: str
    currency: str
    check: str
    expected: Decimal
    actual: Decimal

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


def run_checks(client: Any) -> list[Check]:
    return [
        Check(r["tenant"], r["currency"], r["check"], Decimal(r["expected"]), Decimal(r["actual"]))
        for r in queries.run(client, "reconcile").dicts()
    ]


def summary(checks: list[Check]) -> str:
    """One line when everything agrees, one line per mismatch otherwise."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        tenants = len({c.tenant for c in checks})
        return (
            f"reconciled: rollups match the base tables ({len(checks)} checks, "
            f"{tenants} tenant{'s' if tenants != 1 else ''})"
        )
    lines = [
        f"MISMATCH {c.tenant} {c.currency} {c.check}: expected {c.expected}, got {c.actual}"
        for c in bad
    ]
    return "\n".join([*lines, f"{len(bad)} mismatch(es): run `nodemeter rebuild`"])
