"""API keys, one tenant each: kept as SHA-256 digests, compared in constant time.

Two sources, merged (a name given twice is a ``ConfigError``):

- a JSON file (``--keys-file``), digests only, so the file holds no secret::

    {"keys": [{"name": "acme-prod", "tenant": "acme", "sha256": "<64 hex digits>",
               "rate": 500, "burst": 1000}]}

  ``rate`` (events per second) and ``burst`` (events) are optional and override the
  service's defaults for that key. ``nodemeter ingest-http --hash-key`` prints the
  digest of a key read from stdin.
- ``NODEMETER_INGEST_KEYS``: ``tenant=KEY`` pairs separated by commas, each KEY either
  the key itself (hashed when read; at least 16 characters) or ``sha256:<hex>``. The
  key's name is its tenant.

A key is never logged, printed or kept in clear: ``ApiKey`` holds its digest, and its
repr shows the name and tenant only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodemeter.errors import ConfigError
from nodemeter.events import validate_tenant

ENV = "NODEMETER_INGEST_KEYS"
MIN_KEY_CHARS = 16
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def hash_key(key: str) -> str:
    """The form the keys file keeps: ``sha256:<hex>``."""
    return "sha256:" + digest_of(key).hex()


@dataclass(frozen=True)
class ApiKey:
    """One key: its ``name`` (for logs and metrics), ``tenant``, digest and limits."""

    name: str
    tenant: str
    digest: bytes = field(repr=False)
    rate: float | None = None  # events/s; None: the service's default
    burst: int | None = None


def _digest_from(text: str, where: str) -> bytes:
    hexed = text.removeprefix("sha256:").lower()
    if not _HEX64.fullmatch(hexed):
        raise ConfigError(
            f"{where}: sha256 must be 64 hex digits (nodemeter ingest-http --hash-key)"
        )
    return bytes.fromhex(hexed)


def _key(name: Any, tenant: Any, digest: bytes, rate: Any, burst: Any, where: str) -> ApiKey:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name must be a non-empty string")
    try:
        validate_tenant(tenant)
    except Exception as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0
    ):
        raise ConfigError(f"{where}: rate must be a positive number of events per second")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
        raise ConfigError(f"{where}: burst must be a positive integer (events)")
    return ApiKey(name, tenant, digest, None if rate is None else float(rate), burst)


def keys_from_file(path: Path) -> list[ApiKey]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"keys file {path}: {exc}") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f'keys file {path}: expected {{"keys": [...]}}')
    out = []
    for i, entry in enumerate(entries):
        where = f"keys file {path}, key {i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: each key must be an object")
        if "key" in entry:
            raise ConfigError(f"{where}: keep the key's sha256, not the key itself, in the file")
        unknown = set(entry) - {"name", "tenant", "sha256", "rate", "burst"}
        if unknown:
            raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
        digest = _digest_from(str(entry.get("sha256", "")), where)
        tenant = entry.get("tenant")
        out.append(
            _key(
                entry.get("name", tenant),
                tenant,
                digest,
                entry.get("rate"),
                entry.get("burst"),
                where,
            )
        )
    return out


def keys_from_env(environ: Mapping[str, str] = os.environ) -> list[ApiKey]:
    raw = environ.get(ENV, "").strip()
    out = []
    for i, pair in enumerate(p.strip() for p in raw.split(",") if p.strip()):
        where = f"{ENV}, entry {i + 1}"  # never the entry itself: it holds a key
        tenant, sep, secret = pair.partition("=")
        if not sep or not secret:
            raise ConfigError(f"{where}: expected tenant=KEY or tenant=sha256:<hex>")
        if secret.startswith("sha256:"):
            digest = _digest_from(secret, where)
        elif len(secret) < MIN_KEY_CHARS:
            raise ConfigError(f"{where}: a key must have at least {MIN_KEY_CHARS} characters")
        else:
            digest = digest_of(secret)
        out.append(_key(tenant.strip(), tenant.strip(), digest, None, None, where))
    return out


class KeyRing:
    """The keys the service accepts."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys: tuple[ApiKey, ...] = tuple(keys)
        names = [k.name for k in self.keys]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"API key names given twice: {twice}")
        digests = [k.digest for k in self.keys]
        if len(set(digests)) != len(digests):
            raise ConfigError("the same API key is configured twice")

    @classmethod
    def load(cls, path: Path | None = None, environ: Mapping[str, str] = os.environ) -> KeyRing:
        keys = [*(keys_from_file(path) if path is not None else []), *keys_from_env(environ)]
        if not keys:
            raise ConfigError(f"no API keys: give --keys-file or set {ENV}")
        return cls(keys)

    def lookup(self, presented: str) -> ApiKey | None:
        """The key whose digest matches; every digest is compared (no early exit), each
        in constant time, so the time taken says nothing about which key came close."""
        digest = digest_of(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    def __repr__(self) -> str:
        return f"KeyRing({[k.name for k in self.keys]})"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key of a request: ``Authorization: Bearer KEY``, else ``X-Api-Key: KEY``."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    key = headers.get("X-Api-Key")
    return key.strip() or None if key else None
