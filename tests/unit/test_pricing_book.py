"""Price-book files: the shipped examples load; mistakes give errors naming file and field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from nodemeter_stream.pricing import PriceBookError, load_config, parse_documents
from nodemeter_stream.pricing.book import EXAMPLES_DIR as EXAMPLES
from nodemeter_stream.pricing.book import ChargeModel
from nodemeter_stream.pricing.windows import WindowKind


def test_example_set_loads_with_three_tenant_plans() -> None:
    cfg = load_config(EXAMPLES)
    assert set(cfg.books) == {"default", "acme-enterprise", "globex-startup"}
    assert {t: p.price_book for t, p in cfg.tenants.items()} == {
        "acme": "acme-enterprise",
        "globex": "globex-startup",
        "initech": "default",
    }
    assert cfg.tenants["globex"].billing_window is WindowKind.DAY
    assert cfg.plan_for("someone-else").price_book == "default"


def test_override_falls_back_to_default_book() -> None:
    cfg = load_config(EXAMPLES)
    at = datetime(2026, 11, 5, tzinfo=UTC)
    kw: dict[str, Any] = {"model": "gpt-4o", "provider": "", "gpu_type": "", "at": at}
    v, rate = cfg.resolve("acme-enterprise", meter="output_tokens", **kw) or (None, None)
    assert v is not None and rate is not None
    assert (v.book, rate.charge) == ("acme-enterprise", ChargeModel.GRADUATED)
    v, rate = cfg.resolve("acme-enterprise", meter="input_tokens", **kw) or (None, None)
    assert v is not None and rate is not None
    assert (v.book, v.version, rate.unit_price) == ("default", 1, Decimal("0.0000025"))
    december = {**kw, "at": datetime(2026, 12, 5, tzinfo=UTC)}
    v, rate = cfg.resolve("acme-enterprise", meter="input_tokens", **december) or (None, None)
    assert v is not None and rate is not None
    assert (v.version, rate.unit_price) == (2, Decimal("0.000002"))


def test_env_variable_and_json_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"price_book": {"name": "default", "versions": [
        {"version": 1, "effective_from": "2026-01-01T00:00:00Z",
         "rates": [{"meter": "cpu_ms", "unit_price": "0.001"}]}]}}  # fmt: skip
    (tmp_path / "book.json").write_text(json.dumps(doc))
    monkeypatch.setenv("NODEMETER_PRICEBOOKS", str(tmp_path / "book.json"))
    assert load_config().books["default"].versions[0].rates[0].charge is ChargeModel.FLAT


def _book(rate: dict[str, Any], **version: Any) -> dict[str, Any]:
    v = {"version": 1, "effective_from": "2026-01-01T00:00:00Z", "rates": [rate], **version}
    return {"price_book": {"name": "default", "versions": [v]}}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_book({"meter": "cpu_ms", "unit_price": 0.001}), "price_book.versions[0].rates[0].unit_price: value must be written as a string"),
        (_book({"meter": "tokens", "unit_price": "1"}), "rates[0].meter: unknown meter 'tokens'"),
        (_book({"meter": "cpu_ms", "unit_price": "0.0000000000001"}), "more than 12 decimal places"),
        (_book({"meter": "cpu_ms", "unit_price": "-1"}), "must not be negative"),
        (_book({"meter": "cpu_ms", "charge": "tiered", "unit_price": "1"}), "charge: 'tiered' is not one of"),
        (_book({"meter": "cpu_ms", "charge": "graduated", "unit_price": "1"}), "charge 'graduated' needs ['tiers']"),
        (_book({"meter": "cpu_ms", "charge": "volume", "tiers": [{"up_to": 10, "unit_price": "1"}, {"up_to": 5, "unit_price": "1"}]}),
         "tiers[1].up_to: tier bounds must increase"),
        (_book({"meter": "cpu_ms", "charge": "volume", "tiers": [{"up_to": 10, "unit_price": "1"}]}), "the last tier must be unbounded"),
        (_book({"meter": "cpu_ms", "gpu_type": "H100", "unit_price": "1"}), "gpu_type only applies to the gpu_ms meter"),
        (_book({"meter": "cpu_ms", "unit_price": "1", "price": "2"}), "unknown field(s) ['price']"),
        (_book({"meter": "cpu_ms", "unit_price": "1"}, effective_from="2026-01-01T00:00:00"), "has no UTC offset"),
        (_book({"meter": "cpu_ms", "charge": "package", "package_size": 0, "package_price": "1"}), "package_size: must be >= 1"),
        ({**_book({"meter": "cpu_ms", "unit_price": "1"}), "tenants": {"a": {"price_book": "gold"}}}, "tenant 'a' uses unknown price book 'gold'"),
        ({**_book({"meter": "cpu_ms", "unit_price": "1"}), "tenants": {"a": {"time_zone": "Mars/Base"}}}, "tenants.a.time_zone: unknown time zone"),
        ({**_book({"meter": "cpu_ms", "unit_price": "1"}), "tenants": {"a": {"budgets": [{"name": "b", "amount": "0"}]}}}, "budgets[0].amount: a budget amount must be positive"),
        ({**_book({"meter": "cpu_ms", "unit_price": "1"}), "tenants": {"a": {"budgets": [{"name": "b", "amount": "5", "thresholds": [80, 50]}]}}}, "thresholds are ascending"),
    ],
)  # fmt: skip
def test_invalid_books_raise_clear_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(PriceBookError) as err:
        parse_documents([("books.yaml", doc)])
    assert message in str(err.value)
    assert str(err.value).startswith("books.yaml") or "tenant 'a'" in str(err.value)


def test_versions_must_increase(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "price_book:\n  name: default\n  versions:\n"
        "    - {version: 2, effective_from: '2026-02-01T00:00:00Z', rates: []}\n"
        "    - {version: 1, effective_from: '2026-01-01T00:00:00Z', rates: []}\n"
    )
    with pytest.raises(
        PriceBookError, match=r"b.yaml: price_book.versions: versions must increase"
    ):
        load_config(tmp_path)


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("price_book: [unclosed\n")
    with pytest.raises(PriceBookError, match=r"bad.yaml: invalid YAML"):
        load_config(tmp_path)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PriceBookError, match="no such file or directory"):
        load_config(tmp_path / "nope")


# --- what loads can be stored (issue 12) ---------------------------------------------

_TIERS_MAX = [{"up_to": 2**64 - 1, "unit_price": "1"}, {"unit_price": "0"}]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_book({"meter": "cpu_ms", "unit_price": "1"}, version=2**32), "price_book.versions[0].version: must be <= 4294967295"),
        (_book({"meter": "cpu_ms", "charge": "graduated", "tiers": [{"up_to": 2**64, "unit_price": "1"}, {"unit_price": "0"}]}),
         "rates[0].tiers[0].up_to: must be <= 18446744073709551615"),
        (_book({"meter": "cpu_ms", "unit_price": "1", "included_units": 2**64}), "rates[0].included_units: must be <= 18446744073709551615"),
        (_book({"meter": "cpu_ms", "charge": "package", "package_size": 2**64, "package_price": "1"}),
         "rates[0].package_size: must be <= 18446744073709551615"),
        (_book({"meter": "cpu_ms", "unit_price": "1"}, effective_from="2300-01-01T00:00:00Z"), "effective_from: '2300-01-01T00:00:00Z' is outside"),
        (_book({"meter": "cpu_ms", "unit_price": "1"}, effective_from="1899-12-31T00:00:00Z"), "is outside the storable years"),
        (_book({"meter": "cpu_ms", "charge": "volume", "tiers": [{"up_to": i + 1, "unit_price": "1"} for i in range(65535)] + [{"unit_price": "0"}]}),
         "rates[0].tiers: 65536 tiers; at most 65535"),
        ({**_book({"meter": "cpu_ms", "unit_price": "1"}), "tenants": {"acme corp": {}}}, "tenants.acme corp: not a valid tenant id"),
        ({**_book({"meter": "cpu_ms", "unit_price": "1"}), "tenants": {"a'b": {}}}, "tenants.a'b: not a valid tenant id"),
        ({**_book({"meter": "cpu_ms", "unit_price": "1"}), "tenants": {True: {}}}, "tenants: field names must be strings, got True"),
        ({**_book({"meter": "cpu_ms", "unit_price": "1"}), "tenants": {"x" * 129: {}}}, "not a valid tenant id"),
    ],
)  # fmt: skip
def test_values_that_cannot_be_stored_fail_at_load(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(PriceBookError) as err:
        parse_documents([("books.yaml", doc)])
    assert message in str(err.value)
    assert str(err.value).startswith("books.yaml: ")


def test_the_largest_storable_values_load() -> None:
    rates = [
        {"meter": "cpu_ms", "unit_price": "1", "included_units": 2**64 - 1},
        {"meter": "gpu_ms", "charge": "graduated", "tiers": _TIERS_MAX},
        {"meter": "api_calls", "charge": "package", "package_size": 2**64 - 1, "package_price": "1"},
    ]  # fmt: skip
    doc = _book(rates[0], version=2**32 - 1, effective_from="2299-12-31T00:00:00Z")
    doc["price_book"]["versions"][0]["rates"] = rates
    v = parse_documents([("books.yaml", doc)]).books["default"].versions[0]
    assert v.version == 2**32 - 1
    assert [r.included_units for r in v.rates] == [2**64 - 1, 0, 0]
    assert v.rates[1].tiers[0].up_to == 2**64 - 1 and v.rates[2].package_size == 2**64 - 1


YAML_BOOK = """\
price_book:
  name: default
  versions:
    - version: 1
      effective_from: '2026-01-01T00:00:00Z'
      rates:
        - meter: cpu_ms
          unit_price: '0.001'
          unit_price: '0.000001'
"""


def test_a_duplicate_yaml_key_fails_naming_file_field_and_line(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(YAML_BOOK)
    with pytest.raises(PriceBookError) as err:
        load_config(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'b.yaml'}: price_book.versions[0].rates[0].unit_price: ")
    assert "duplicate key 'unit_price' at line 9 (first at line 8" in msg


@pytest.mark.parametrize(
    "text",
    [
        "tenants:\n  acme: {}\n  acme: {price_book: gold}\n",
        "price_book: {name: a, versions: []}\nprice_book: {name: b, versions: []}\n",
    ],
)
def test_duplicate_top_level_and_tenant_keys_fail(tmp_path: Path, text: str) -> None:
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(PriceBookError, match="duplicate key"):
        load_config(tmp_path)


def test_yaml_merge_keys_may_override(tmp_path: Path) -> None:
    # `<<: *base` then a key of its own is YAML's way to override: not a duplicate
    (tmp_path / "b.yaml").write_text(
        YAML_BOOK.replace("          unit_price: '0.000001'\n", "")
        + "tenants:\n  base: &base {time_zone: UTC, billing_window: month}\n"
        "  acme:\n    <<: *base\n    billing_window: day\n"
    )
    assert load_config(tmp_path).tenants["acme"].billing_window is WindowKind.DAY


def test_a_duplicate_json_key_fails_naming_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(
        '{"price_book": {"name": "default", "versions": [{"version": 1, "version": 2,'
        ' "effective_from": "2026-01-01T00:00:00Z", "rates": []}]}}'
    )
    with pytest.raises(PriceBookError) as err:
        load_config(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'b.json'}: price_book.versions[0].version: ")
    assert "duplicate key 'version'" in str(err.value)
