"""Usage extraction from OpenAI- and Anthropic-style responses: each token counted once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from test_sdk_fakes import delivered_records, fake_meter

from nodemeter.errors import InvalidUsageError
from nodemeter.integrations.anthropic import usage_from_anthropic
from nodemeter.integrations.openai import usage_from_openai

OPENAI_CHAT = {
    "model": "gpt-4o-2024-08-06",
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 120},
    },
}
ANTHROPIC = SimpleNamespace(
    model="claude-sonnet-4-5",
    usage=SimpleNamespace(
        input_tokens=50,
        output_tokens=503,
        cache_read_input_tokens=100_000,
        cache_creation_input_tokens=248,
    ),
)


def test_openai_chat_completion_dict() -> None:
    m = usage_from_openai(OPENAI_CHAT)
    assert (m.input_tokens, m.cached_input_tokens, m.output_tokens) == (86, 1920, 300)
    assert m.input_tokens + m.cached_input_tokens == 2006  # prompt tokens counted once
    assert m.cache_write_tokens == 0 and m.api_calls == 1


def test_openai_responses_api_object() -> None:
    resp = SimpleNamespace(
        model="o4-mini",
        usage=SimpleNamespace(
            input_tokens=1000,
            output_tokens=50,
            input_tokens_details=SimpleNamespace(cached_tokens=0),
            output_tokens_details=SimpleNamespace(reasoning_tokens=30),
        ),
    )
    m = usage_from_openai(resp)
    assert (m.input_tokens, m.cached_input_tokens, m.output_tokens) == (1000, 0, 50)


def test_openai_without_details() -> None:
    m = usage_from_openai({"usage": {"prompt_tokens": 10, "completion_tokens": 2}})
    assert (m.input_tokens, m.cached_input_tokens, m.output_tokens) == (10, 0, 2)


def test_anthropic_object_keeps_cache_reads_and_writes_apart() -> None:
    m = usage_from_anthropic(ANTHROPIC)
    assert m.input_tokens == 50 and m.output_tokens == 503
    assert m.cached_input_tokens == 100_000 and m.cache_write_tokens == 248


@pytest.mark.parametrize(
    "bad",
    [
        {
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 9},
            }
        },
        {"usage": {"prompt_tokens": -1, "completion_tokens": 1}},
        {"usage": {"prompt_tokens": "12", "completion_tokens": 1}},
    ],
)
def test_openai_bad_usage_is_a_typed_error(bad: dict) -> None:
    with pytest.raises(InvalidUsageError):
        usage_from_openai(bad)


def test_span_helpers_record_model_and_provider(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path)
    with meter.request(tenant="acme"), meter.node("answer") as span:
        span.record_openai(OPENAI_CHAT)
        span.record_anthropic(ANTHROPIC)
    meter.flush()
    ev = [r for r in delivered_records(producers) if hasattr(r, "meters")]
    assert [(e.model, e.provider, e.sequence) for e in ev] == [
        ("gpt-4o-2024-08-06", "openai", 0),
        ("claude-sonnet-4-5", "anthropic", 1),
    ]
    assert ev[0].meters.input_tokens == 86 and ev[1].meters.cache_write_tokens == 248
