"""nodemeter's Avro schemas, shipped as package data.

Files are named ``<record>.v<N>.avsc``. Evolution is backward compatible: a
new version only adds fields with defaults (checked in tests with fastavro's
writer/reader schema resolution).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

_NAME = re.compile(r"^(?P<record>[a-z_]+)\.v(?P<version>\d+)\.avsc$")


def available() -> dict[str, list[int]]:
    """Record names mapped to their schema versions, oldest first."""
    out: dict[str, list[int]] = {}
    for entry in resources.files(__name__).iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.setdefault(m["record"], []).append(int(m["version"]))
    return {k: sorted(v) for k, v in sorted(out.items())}


@cache
def _load_text(record: str, version: int) -> str:
    path = resources.files(__name__) / f"{record}.v{version}.avsc"
    if not path.is_file():
        known = available()
        raise KeyError(f"no schema {record!r} v{version}; known: {known}")
    return path.read_text()


def load(record: str, version: int | None = None) -> dict[str, Any]:
    """The schema as a JSON object (a fresh copy); latest version by default."""
    if version is None:
        version = latest_version(record)
    loaded: dict[str, Any] = json.loads(_load_text(record, version))
    return loaded


def latest_version(record: str) -> int:
    versions = available().get(record)
    if not versions:
        raise KeyError(f"no schema named {record!r}; known: {sorted(available())}")
    return versions[-1]
