"""``nodemeter migrate``: apply sql/migrations to the configured ClickHouse."""

from __future__ import annotations

import argparse

from nodemeter_stream.sink.migrate import applied, discover, migrate
from nodemeter_stream.sink.store import ClickHouseConfig, connect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="chdb://PATH or http(s)://... (default NODEMETER_CLICKHOUSE_URL)"
    )
    parser.add_argument(
        "--database", help="database (default NODEMETER_CLICKHOUSE_DATABASE or nodemeter)"
    )
    parser.add_argument(
        "--status", action="store_true", help="list migrations and whether each ran"
    )


def config_from_args(args: argparse.Namespace) -> ClickHouseConfig:
    kwargs = {k: v for k, v in (("url", args.url), ("database", args.database)) if v}
    return ClickHouseConfig(**kwargs)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    client = connect(cfg)
    if args.status:
        done = applied(client)
        for mig in discover():
            print(f"{'applied' if mig.version in done else 'pending':8} {mig.path.name}")
        return 0
    ran = migrate(client)
    print(f"{len(ran)} migration(s) applied to {cfg.database} at {cfg.redacted()}")
    return 0
