"""Real model and GPU names get their book's price, and a fallback is never silent
(issue 11, item 2): price book aliases, and ``rate_match`` on every usage line."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from nodemeter.events import GpuSource, Meters, UsageEvent
from nodemeter_stream.pricing import PricingEngine, load_config, new_state
from nodemeter_stream.pricing.book import EXAMPLES_DIR, parse_documents
from nodemeter_stream.pricing.errors import PriceBookError
from nodemeter_stream.pricing.lines import PricedLine

AT = datetime(2026, 11, 10, 12, tzinfo=UTC)


def price(engine: PricingEngine, state: dict[str, Any], i: int, **kw: Any) -> list[PricedLine]:
    model = kw.pop("model", None)
    ev = UsageEvent(
        event_id=f"e{i}", tenant="initech", request_id=f"r{i}", node_id="n", span_id="s",
        event_time=AT, model=model, meters=Meters(**kw),
    )  # fmt: skip
    return [ln for ln in engine.process(state, {}, ev).lines if ln.line_kind == "usage"]


@pytest.fixture
def engine() -> PricingEngine:
    return PricingEngine(load_config(EXAMPLES_DIR))


def test_dated_snapshots_and_nvml_names_get_their_base_price(engine: PricingEngine) -> None:
    st = new_state("initech")  # the default book
    (dated,) = price(engine, st, 1, model="gpt-4o-2024-08-06", input_tokens=1_000_000)
    assert dated.unit_price == Decimal("0.0000025") and dated.amount == Decimal("2.5")
    assert dated.model == "gpt-4o-2024-08-06" and dated.rate_match == "alias"  # as arrived
    (sonnet,) = price(engine, st, 2, model="claude-sonnet-4-20250514", input_tokens=1_000_000)
    assert sonnet.amount == Decimal("3") and sonnet.rate_match == "alias"
    h100 = {"gpu_type": "NVIDIA H100 80GB HBM3", "gpu_source": GpuSource.MEASURED}
    (gpu,) = price(engine, st, 3, gpu_ms=3_600_000, **h100)
    assert gpu.amount == Decimal("3.6") and gpu.rate_match == "alias"  # $3.60 per hour
    assert gpu.gpu_type == "NVIDIA H100 80GB HBM3"
    (exact,) = price(engine, st, 4, model="gpt-4o", input_tokens=10)
    assert exact.rate_match == "exact"
    (cpu,) = price(engine, st, 5, cpu_ms=10)
    assert cpu.rate_match == ""  # names no model or GPU


def test_a_name_without_rate_or_alias_is_priced_generic_and_marked(engine: PricingEngine) -> None:
    st = new_state("initech")
    (line,) = price(engine, st, 1, model="llama-3-70b", input_tokens=1_000_000)
    assert line.unit_price == Decimal("0.000001") and line.rate_match == "generic"
    # gpt-4o-mini has its own rate: not taken for gpt-4o by the dated-snapshot alias
    (mini,) = price(engine, st, 2, model="gpt-4o-mini", input_tokens=1_000_000)
    assert mini.rate_match == "exact" and mini.amount == Decimal("0.15")


def test_a_snapshot_and_its_base_share_the_tiers(engine: PricingEngine) -> None:
    # graduated H100 time: the first 36,000,000 ms a month at $0.000001, then cheaper;
    # NVML's name and the book's name count towards the same tier
    st = new_state("initech")
    nvml = {"gpu_type": "NVIDIA H100 80GB HBM3", "gpu_source": GpuSource.MEASURED}
    book = {"gpu_type": "H100", "gpu_source": GpuSource.MEASURED}
    price(engine, st, 1, gpu_ms=30_000_000, **nvml)
    lines = price(engine, st, 2, gpu_ms=10_000_000, **book)
    assert [(ln.tier, ln.quantity) for ln in lines] == [(1, 6_000_000), (2, 4_000_000)]


def test_aliases_are_validated_at_load() -> None:
    def book(aliases: Any) -> list[tuple[str, Any]]:
        return [("b.yaml", {"price_book": {"name": "default", "aliases": aliases, "versions": [
            {"version": 1, "effective_from": "2026-01-01T00:00:00Z", "rates": []}]}})]  # fmt: skip

    with pytest.raises(PriceBookError, match=r"b.yaml.*aliases.*unknown field"):
        parse_documents(book({"model": {"x": ["y"]}}))
    with pytest.raises(PriceBookError, match=r"aliases.models.gpt-4o.*expected a list"):
        parse_documents(book({"models": {"gpt-4o": "gpt-4o-*"}}))
    cfg = parse_documents(book({"models": {"gpt-4o": ["gpt-4o-20*"]}}))
    assert cfg.canonical("default", "models", "gpt-4o-2024-08-06") == "gpt-4o"
