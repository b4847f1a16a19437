"""ClickHouse through clickhouse-connect: embedded chDB by default, a server by URL.

    chdb://PATH            embedded ClickHouse (chDB) on disk at PATH (relative paths
                           are resolved against the working directory); one process
                           owns a path at a time
    chdb://memory          embedded, in memory
    http(s)://HOST:PORT    a ClickHouse server (user/password in the URL or env)

The URL comes from ``NODEMETER_CLICKHOUSE_URL``; the default is
``chdb://.nodemeter/chdb``. The database (``NODEMETER_CLICKHOUSE_DATABASE``, default
``nodemeter``) is created when missing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nodemeter.errors import ConfigError

DEFAULT_URL = "chdb://.nodemeter/chdb"
DEFAULT_DATABASE = "nodemeter"
_DB_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, kw_only=True)
class ClickHouseConfig:
    url: str = field(
        default_factory=lambda: os.environ.get("NODEMETER_CLICKHOUSE_URL", DEFAULT_URL)
    )
    database: str = field(
        default_factory=lambda: os.environ.get("NODEMETER_CLICKHOUSE_DATABASE", DEFAULT_DATABASE)
    )

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("chdb", "http", "https"):
            raise ConfigError(
                f"ClickHouse URL must start with chdb://, http:// or https://, got {self.redacted()}"
            )
        if not _DB_RE.match(self.database):
            raise ConfigError(f"database name {self.database!r} is not a plain identifier")

    @property
    def embedded(self) -> bool:
        return self.url.startswith("chdb:")

    def chdb_path(self) -> str:
        """Absolute on-disk path of an embedded store, or ':memory:'."""
        rest = self.url[len("chdb://") :]
        if rest in ("", "memory", ":memory:"):
            return ":memory:"
        return str(Path(rest).expanduser().resolve())

    def redacted(self) -> str:
        """The URL with any password replaced, safe to print."""
        parts = urlsplit(self.url)
        if parts.password:
            return self.url.replace(f":{parts.password}@", ":***@")
        return self.url

    def __repr__(self) -> str:
        return f"ClickHouseConfig(url={self.redacted()!r}, database={self.database!r})"


def connect(config: ClickHouseConfig | None = None, *, create_database: bool = True) -> Any:
    """A clickhouse-connect client bound to the configured database."""
    import clickhouse_connect

    config = config or ClickHouseConfig()
    if config.embedded:
        path = config.chdb_path()
        if path != ":memory:":
            Path(path).mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(interface="chdb", path=path)
    else:
        client = clickhouse_connect.get_client(dsn=config.url)
    if create_database:
        client.command(f"CREATE DATABASE IF NOT EXISTS {config.database}")
    client.database = config.database
    return client
