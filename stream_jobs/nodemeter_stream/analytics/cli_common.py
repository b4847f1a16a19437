"""Arguments and value parsing shared by ``nodemeter report`` / ``sql`` / ``rebuild``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from nodemeter.errors import ConfigError
from nodemeter_stream.analytics.errors import StoreError
from nodemeter_stream.sink.store import ClickHouseConfig, connect


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="chdb://PATH or http(s)://... (default NODEMETER_CLICKHOUSE_URL); an embedded "
        "store must not be open in another process (stop the worker first)",
    )
    parser.add_argument(
        "--database", help="database (default NODEMETER_CLICKHOUSE_DATABASE or nodemeter)"
    )


def config_from_args(args: argparse.Namespace) -> ClickHouseConfig:
    kwargs = {k: v for k, v in (("url", args.url), ("database", args.database)) if v}
    return ClickHouseConfig(**kwargs)


def open_store(args: argparse.Namespace, *, migrated: bool = True) -> Any:
    """A client on the configured (by default: migrated) database, or a StoreError."""
    cfg = config_from_args(args)
    try:
        client = connect(cfg, create_database=False)
    except ImportError:
        raise  # a missing extra: the command line says which one to install
    except Exception as exc:
        hint = (
            " (one process owns a chDB path: is the worker running on it?)" if cfg.embedded else ""
        )
        raise StoreError(f"cannot open {cfg.redacted()}: {exc}{hint}") from exc
    if not migrated:
        return client
    try:
        found = client.query(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() "
            "AND name IN ('priced_lines', 'cost_hourly')"
        ).result_rows[0][0]
    except Exception as exc:
        raise StoreError(
            f"database {cfg.database!r} not found at {cfg.redacted()}: run `nodemeter migrate`"
        ) from exc
    if found != 2:
        raise StoreError(
            f"database {cfg.database!r} at {cfg.redacted()} is not migrated: run `nodemeter migrate`"
        )
    return client


def parse_time(text: str, *, end: bool = False) -> datetime:
    """``YYYY-MM-DD`` (a whole UTC day; as an end, the day is included) or ISO 8601.

    An ISO datetime without an offset is refused rather than guessed.
    """
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            t = datetime(d.year, d.month, d.day, tzinfo=UTC)
            return t + timedelta(days=1) if end else t
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not a date (YYYY-MM-DD) or ISO datetime") from exc
    if value.tzinfo is None:
        raise ConfigError(f"{text!r} has no UTC offset; add Z or +00:00")
    return value.astimezone(UTC)


def parse_param(ch_type: str, text: str) -> Any:
    """A command-line string as the Python value a query parameter of ``ch_type`` takes."""
    base = ch_type.split("(", 1)[0].strip()
    if base.startswith("DateTime"):
        return parse_time(text)
    if base == "Date":
        try:
            return date.fromisoformat(text)
        except ValueError as exc:
            raise ConfigError(f"{text!r} is not a date (YYYY-MM-DD)") from exc
    if base.startswith(("UInt", "Int")):
        try:
            return int(text)
        except ValueError as exc:
            raise ConfigError(f"{text!r} is not an integer") from exc
    return text


def cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(cell(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{cell(k)}: {cell(v)}" for k, v in value.items()) + "}"
    return str(value)


def numeric(values: Sequence[Any]) -> bool:
    return bool(values) and all(
        isinstance(v, int | Decimal) and not isinstance(v, bool) for v in values if v is not None
    )
