"""ClickHouse through clickhouse-connect: embedded chDB by default, a server by URL.

    chdb://PATH            embedded ClickHouse (chDB) on disk at PATH (relative paths
                           are resolved against the working directory); one process
                           owns a path at a time
    chdb://memory          embedded, in memory
    http(s)://USER@HOST:PORT  a ClickHouse server

The URL comes from ``NODEMETER_CLICKHOUSE_URL``; the default is
``chdb://.nodemeter/chdb``. A server's password comes from the file named by
``NODEMETER_CLICKHOUSE_PASSWORD_FILE`` (its first line) or from
``NODEMETER_CLICKHOUSE_PASSWORD``, and wins over one in the URL: a password on a
command line (``--url http://user:pass@...``) is readable by every user of the machine. The database (``NODEMETER_CLICKHOUSE_DATABASE``, default
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
from nodemeter.redact import redact_url

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
        """The URL with its password and secret query parameters masked, safe to print."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"ClickHouseConfig(url={self.redacted()!r}, database={self.database!r})"


def server_password() -> str | None:
    """The server password from ``NODEMETER_CLICKHOUSE_PASSWORD_FILE`` or
    ``NODEMETER_CLICKHOUSE_PASSWORD``; None: the URL's, if any."""
    path = os.environ.get("NODEMETER_CLICKHOUSE_PASSWORD_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"NODEMETER_CLICKHOUSE_PASSWORD_FILE: cannot read {path}: {exc}"
            ) from None
    return os.environ.get("NODEMETER_CLICKHOUSE_PASSWORD") or None


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
        # an empty password lets the DSN's own (if any) apply
        client = clickhouse_connect.get_client(dsn=config.url, password=server_password() or "")
    if create_database:
        client.command(f"CREATE DATABASE IF NOT EXISTS {config.database}")
    client.database = config.database
    return client
