"""Usage from Anthropic-style (Messages API) responses.

Anthropic's ``input_tokens`` EXCLUDES cache reads and writes, which come as
``cache_read_input_tokens`` and ``cache_creation_input_tokens``: each maps to
its own meter and nothing is added twice. One response is one API call.
"""

from __future__ import annotations

from typing import Any

from nodemeter.events import Meters
from nodemeter.integrations import count, field_of, usage_of


def usage_from_anthropic(response: Any) -> Meters:
    usage = usage_of(response)
    return Meters(
        input_tokens=count(usage, "input_tokens"),
        output_tokens=count(usage, "output_tokens"),
        cached_input_tokens=count(usage, "cache_read_input_tokens"),
        cache_write_tokens=count(usage, "cache_creation_input_tokens"),
        api_calls=1,
    )


def model_of(response: Any) -> str | None:
    model = field_of(response, "model")
    return model if isinstance(model, str) and model else None
