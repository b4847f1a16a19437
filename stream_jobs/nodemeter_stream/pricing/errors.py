"""Pricing errors.

NodemeterError
└── ConfigError
    └── PriceBookError     a price-book / tenant / budget file is invalid (file and field named)
NodemeterError
└── PricingError           an event cannot be priced (no window state left for a very late event)
NodemeterError
└── StatementError         a statement cannot be made or issued (unknown tenant or window,
                           window not settled, issued lines missing)
"""

from __future__ import annotations

from nodemeter.errors import ConfigError, NodemeterError


class PriceBookError(ConfigError):
    """A price-book file is invalid. The message names the file and the field path."""

    def __init__(self, message: str, *, source: str = "", where: str = "") -> None:
        prefix = ": ".join(p for p in (source, where) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.source = source
        self.where = where


class PricingError(NodemeterError):
    """An event cannot be priced; ``reason`` is a short code for the dead-letter record."""

    def __init__(self, message: str, *, reason: str = "unpriceable") -> None:
        super().__init__(message)
        self.reason = reason


class StatementError(NodemeterError):
    """A statement cannot be assembled or issued; the message says why."""
