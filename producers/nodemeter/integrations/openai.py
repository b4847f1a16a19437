"""Usage from OpenAI-style responses (Chat Completions and Responses API).

OpenAI's ``prompt_tokens`` (``input_tokens`` in the Responses API) INCLUDES the
cached tokens reported in ``prompt_tokens_details.cached_tokens``; nodemeter's
``input_tokens`` excludes them, so: input = prompt - cached, cached_input = cached.
``completion_tokens`` already includes reasoning tokens (a detail, not an addition).
One response is one API call.
"""

from __future__ import annotations

from typing import Any

from nodemeter.errors import InvalidUsageError
from nodemeter.events import Meters
from nodemeter.integrations import count, field_of, usage_of


def usage_from_openai(response: Any) -> Meters:
    usage = usage_of(response)
    if (
        field_of(usage, "prompt_tokens") is not None
        or field_of(usage, "completion_tokens") is not None
    ):
        prompt = count(usage, "prompt_tokens")
        output = count(usage, "completion_tokens")
        cached = count(field_of(usage, "prompt_tokens_details"), "cached_tokens")
    else:  # Responses API names
        prompt = count(usage, "input_tokens")
        output = count(usage, "output_tokens")
        cached = count(field_of(usage, "input_tokens_details"), "cached_tokens")
    if cached > prompt:
        raise InvalidUsageError(
            f"cached_tokens ({cached}) exceed prompt tokens ({prompt})", reason="invalid_quantity"
        )
    return Meters(
        input_tokens=prompt - cached,
        output_tokens=output,
        cached_input_tokens=cached,
        api_calls=1,
    )


def model_of(response: Any) -> str | None:
    model = field_of(response, "model")
    return model if isinstance(model, str) and model else None
