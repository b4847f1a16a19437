"""Errors of the analytics package.

NodemeterError
 └── AnalyticsError
      ├── UnknownQueryError      no such file in sql/queries/
      ├── QueryParameterError    a parameter missing, unexpected or of the wrong kind
      └── RebuildError           a rollup could not be rebuilt (the cause is chained)
"""

from __future__ import annotations

from nodemeter.errors import NodemeterError


class AnalyticsError(NodemeterError):
    pass


class UnknownQueryError(AnalyticsError):
    pass


class QueryParameterError(AnalyticsError):
    pass


class RebuildError(AnalyticsError):
    pass


class QueryError(AnalyticsError):
    pass


class StoreError(AnalyticsError):
    pass
