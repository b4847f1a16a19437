"""Secrets kept out of what is printed: URLs, librdkafka settings, reprs.

``redact_url`` masks the password of a URL's user info and the value of every query
parameter whose name looks secret (``?password=``, ``?token=``, ``?api_key=``, ...);
``is_secret`` tells a setting whose value must not be shown (``sasl.password``,
``sasl.oauthbearer.config``, ``ssl.key.pem``, ...). Masking errs on the side of
hiding: a setting named like a key is masked even when it holds a path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

MASK = "***"
# Substrings of setting / parameter names whose values are secret. librdkafka's
# sasl.oauthbearer.config carries client secrets (e.g. "clientSecret=..."), and
# sasl.jaas.config (Java clients) embeds passwords.
_HINTS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "oauthbearer.config",
    "jaas",
    "signature",
)


def is_secret(name: str) -> bool:
    n = name.lower()
    return any(h in n for h in _HINTS)


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with the values of secret-named keys masked."""
    return {k: (MASK if is_secret(str(k)) else v) for k, v in values.items()}


def redact_url(url: str) -> str:
    """The URL with its password and secret query values masked; safe to print."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # unparseable (a bad port, a broken IPv6 literal): show no part
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return f"{scheme}://{MASK}" if scheme.isalnum() else MASK
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{port}" if port is not None else "")
    pairs = parse_qsl(query, keep_blank_values=True) if query else []
    if any(is_secret(k) for k, _ in pairs):
        query = "&".join(
            f"{quote(k, safe='')}={MASK if is_secret(k) else quote(v, safe='')}" for k, v in pairs
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing to hide (urlunsplit would also rewrite chdb:///path)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
