"""Usage extraction from LLM provider responses (objects or plain dicts); no provider SDK needed."""

from __future__ import annotations

from typing import Any

from nodemeter.errors import InvalidUsageError


def field_of(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]``; None when absent (SDK objects and dicts alike)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def count(obj: Any, name: str) -> int:
    """A token count field: absent/None is 0; anything but a non-negative int is an error."""
    value = field_of(obj, name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidUsageError(
            f"usage field {name} must be an integer, got {value!r}", reason="invalid_quantity"
        )
    if value < 0:
        raise InvalidUsageError(
            f"usage field {name} must not be negative, got {value}", reason="negative_quantity"
        )
    return value


def usage_of(response: Any) -> Any:
    """The ``usage`` part of a response, or the object itself when it is the usage."""
    usage = field_of(response, "usage")
    if usage is None:
        usage = response
    if usage is None:
        raise InvalidUsageError("response has no usage", reason="missing_usage")
    return usage
