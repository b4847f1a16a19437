"""nodemeter: per-node usage metering for AI workflows (the producer SDK).

Importing ``nodemeter`` is cheap; the SDK lives in submodules and the common
names are loaded on first use::

    from nodemeter import Meter, MeterConfig
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Meter": "nodemeter.meter",
    "MeterConfig": "nodemeter.meter",
    "current_span": "nodemeter.context",
    "propagate": "nodemeter.context",
    "branch": "nodemeter.context",
    "apportion": "nodemeter.gpu",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nodemeter' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["__version__", *_LAZY]
