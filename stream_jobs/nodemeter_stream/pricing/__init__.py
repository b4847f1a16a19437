"""Pricing: price books, billing windows, charge models, the engine, budgets.

Pure core: no faust, kafka or clickhouse imports. The worker wiring is
``nodemeter_stream.agents.pricing``; the format and worked examples are in
``docs/pricing.md``.

Errors (see ``errors.py``): ``PriceBookError`` (a ConfigError: bad file, named with
the field path) and ``PricingError`` (an event that cannot be priced, with a reason).
"""

from __future__ import annotations

from nodemeter_stream.pricing.book import (
    Budget,
    ChargeModel,
    PriceBook,
    PricingConfig,
    Rate,
    TenantPlan,
    Tier,
    load_config,
    parse_documents,
)
from nodemeter_stream.pricing.budgets import BudgetAlert, is_blocked
from nodemeter_stream.pricing.engine import Outcome, PricingEngine, new_state
from nodemeter_stream.pricing.errors import PriceBookError, PricingError
from nodemeter_stream.pricing.lines import PRICED_LINE_COLUMNS, PricedLine
from nodemeter_stream.pricing.windows import BillingWindow, WindowKind, window_for

__all__ = [
    "PRICED_LINE_COLUMNS",
    "BillingWindow",
    "Budget",
    "BudgetAlert",
    "ChargeModel",
    "Outcome",
    "PriceBook",
    "PriceBookError",
    "PricedLine",
    "PricingConfig",
    "PricingEngine",
    "PricingError",
    "Rate",
    "TenantPlan",
    "Tier",
    "WindowKind",
    "is_blocked",
    "load_config",
    "new_state",
    "parse_documents",
    "window_for",
]
