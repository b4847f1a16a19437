"""Price books, tenant plans and budgets: the model and its loading from YAML/JSON files.

A *price book* has versions; each version has an ``effective_from`` time and a list
of *rates*. A rate prices one meter (optionally only for one model, provider or GPU
type) with one charge model: ``flat``, ``graduated``, ``volume`` or ``package``, and
may include free units per billing window (``included_units``). A version may also
grant money credit per billing window (``credit_grant``).

A tenant *plan* names the tenant's book (a book may ``extends`` another, usually
``default``: rates it does not define come from there), its time zone, its billing
window (``day`` or ``month``) and its budgets. Tenants without a plan get
``defaults``, or, with ``unknown_tenants: reject``, their usage is refused
(dead-lettered with reason ``unknown_tenant``).

Files: one file or a directory of ``*.yaml`` / ``*.yml`` / ``*.json`` files, each
holding any of ``price_books`` (a list) / ``price_book`` (one), ``tenants`` and
``defaults``. Prices are decimal *strings*: a YAML/JSON float is refused because it
cannot hold a price exactly. Every error names the file and the field path. See
``docs/pricing.md`` for the format and ``pricing/examples/`` for an example set.

What loads can be stored: numbers are bounded by their ClickHouse columns
(``version`` UInt32, ``up_to`` / ``included_units`` / ``package_size`` UInt64, at most
65,535 tiers: UInt16; ``effective_from`` within DateTime64's 1900-2299), a key given
twice in one mapping is an error (YAML and JSON would keep the last silently), and
tenant keys are valid tenant ids. A book the worker cannot write to ``price_book_rates``
would stall pricing: it fails here, at load, instead.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from nodemeter.errors import InvalidUsageError
from nodemeter.events import _CUSTOM_RE, METER_NAMES, validate_tenant
from nodemeter_stream.pricing.errors import PriceBookError
from nodemeter_stream.pricing.money import ZERO, parse_price
from nodemeter_stream.pricing.windows import WindowKind, zone

ANY = "*"
DEFAULT_THRESHOLDS: tuple[int, ...] = (50, 80, 100)
ENV_PATH = "NODEMETER_PRICEBOOKS"
# The example set (a default book, three tenant plans) shipped with the package.
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# Column bounds in price_book_rates / priced_lines (migrations 004, 005).
MAX_VERSION = 2**32 - 1  # UInt32
MAX_UNITS = 2**64 - 1  # UInt64: up_to, included_units, package_size
MAX_TIERS = 2**16 - 1  # UInt16 tier index (1-based)
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)  # DateTime64's range
LATEST = datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC)


class ChargeModel(StrEnum):
    FLAT = "flat"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"


@dataclass(frozen=True, slots=True)
class Tier:
    """Units at window positions ``[previous up_to, up_to)``; ``up_to=None``: no upper bound."""

    up_to: int | None
    unit_price: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    meter: str
    charge: ChargeModel
    model: str = ANY
    provider: str = ANY
    gpu_type: str = ANY
    unit_price: Decimal = ZERO  # flat
    tiers: tuple[Tier, ...] = ()  # graduated, volume
    package_size: int = 0  # package: price per started block of package_size units
    package_price: Decimal = ZERO
    included_units: int = 0  # free units per billing window, consumed first

    def matches(self, meter: str, model: str, provider: str, gpu_type: str) -> bool:
        return (
            self.meter == meter
            and self.model in (ANY, model)
            and self.provider in (ANY, provider)
            and self.gpu_type in (ANY, gpu_type)
        )

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Most specific rate wins: model, then GPU type, then provider."""
        return (self.model != ANY, self.gpu_type != ANY, self.provider != ANY)


@dataclass(frozen=True, slots=True, kw_only=True)
class BookVersion:
    book: str
    version: int
    effective_from: datetime
    currency: str
    rates: tuple[Rate, ...]
    credit_grant: Decimal = ZERO

    def find_rate(self, meter: str, model: str, provider: str, gpu_type: str) -> Rate | None:
        found = [r for r in self.rates if r.matches(meter, model, provider, gpu_type)]
        return max(found, key=lambda r: r.specificity) if found else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Alias:
    """Names that arrive for ``canonical``: ``pattern`` is a shell-style glob
    (``gpt-4o-20??-??-??``, ``NVIDIA H100*``). Model patterns match case-sensitively,
    GPU patterns ignoring case (NVML reports ``NVIDIA H100 80GB HBM3``)."""

    kind: str  # "models" | "gpu_types"
    canonical: str
    pattern: str

    def matches(self, name: str) -> bool:
        if self.kind == "gpu_types":
            return fnmatch.fnmatchcase(name.lower(), self.pattern.lower())
        return fnmatch.fnmatchcase(name, self.pattern)


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceBook:
    name: str
    currency: str
    versions: tuple[BookVersion, ...]  # ordered by effective_from
    extends: str | None = None
    aliases: tuple[Alias, ...] = ()

    def names(self, kind: str) -> set[str]:
        """The model (or GPU type) names its rates state, in any version."""
        attr = "model" if kind == "models" else "gpu_type"
        return {getattr(r, attr) for v in self.versions for r in v.rates} - {ANY}

    def version_at(self, ts: datetime) -> BookVersion | None:
        """The version in force at ``ts``: the latest whose effective_from <= ts."""
        current = None
        for v in self.versions:
            if v.effective_from <= ts:
                current = v
        return current


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    name: str
    amount: Decimal
    window: WindowKind = WindowKind.MONTH
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS  # whole percents of amount, ascending
    workflow: str | None = None  # None: all of the tenant's spend
    hard_limit: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantPlan:
    tenant: str
    price_book: str = "default"
    time_zone: str = "UTC"
    billing_window: WindowKind = WindowKind.MONTH
    budgets: tuple[Budget, ...] = ()


@dataclass(frozen=True, slots=True)
class PricingConfig:
    books: Mapping[str, PriceBook]
    tenants: Mapping[str, TenantPlan] = field(default_factory=dict)
    defaults: TenantPlan = field(default_factory=lambda: TenantPlan(tenant="*"))
    # "default": unlisted tenants get ``defaults``; "reject": their usage is dead-lettered
    unknown_tenants: str = "default"

    def knows(self, tenant: str) -> bool:
        """Whether ``tenant``'s usage may be priced (listed, or unlisted ones allowed)."""
        return self.unknown_tenants == "default" or tenant in self.tenants

    def plan_for(self, tenant: str) -> TenantPlan:
        plan = self.tenants.get(tenant)
        if plan is not None:
            return plan
        d = self.defaults
        return TenantPlan(
            tenant=tenant,
            price_book=d.price_book,
            time_zone=d.time_zone,
            billing_window=d.billing_window,
            budgets=d.budgets,
        )

    def chain(self, book: str) -> list[PriceBook]:
        """The book and the books it extends, nearest first."""
        out: list[PriceBook] = []
        name: str | None = book
        while name is not None:
            out.append(self.books[name])
            name = self.books[name].extends
        return out

    def canonical(self, book: str, kind: str, name: str) -> str:
        """The name ``book``'s rates know ``name`` by (``kind``: "models" or "gpu_types").

        A name some book of the chain prices by that exact name is kept; otherwise the
        first alias that matches, nearest book first, in file order, gives its
        canonical name; otherwise the name is kept (and a generic rate, if any, prices
        it: a ``generic`` line)."""
        if not name:
            return name
        chain = self.chain(book)
        if any(name in pb.names(kind) for pb in chain):
            return name
        for pb in chain:
            for a in pb.aliases:
                if a.kind == kind and a.matches(name):
                    return a.canonical
        return name

    def resolve(
        self, book: str, *, meter: str, model: str, provider: str, gpu_type: str, at: datetime
    ) -> tuple[BookVersion, Rate] | None:
        """The (version, rate) pricing a meter at ``at``: the tenant's book first, then the
        books it extends. None when no book in the chain prices it."""
        for pb in self.chain(book):
            version = pb.version_at(at)
            if version is None:
                continue
            rate = version.find_rate(meter, model, provider, gpu_type)
            if rate is not None:
                return version, rate
        return None

    def grant_version(
        self, book: str, window_start: datetime, window_end: datetime
    ) -> BookVersion | None:
        """The version whose ``credit_grant`` applies to a window: the tenant book's version in
        force at the window start, else its first version starting inside the window."""
        pb = self.books[book]
        v = pb.version_at(window_start)
        if v is None:
            v = next((x for x in pb.versions if x.effective_from < window_end), None)
        return v


# --- loading -----------------------------------------------------------------------


class _Reader:
    """Typed access to a parsed document; every error names the file and field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, msg: str) -> PriceBookError:
        return PriceBookError(msg, source=self.source, where=where)

    def mapping(
        self, value: Any, where: str, *, allowed: Sequence[str] | None = None
    ) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        odd = next((k for k in value if not isinstance(k, str)), None)
        if odd is not None:
            raise self.fail(where, f"field names must be strings, got {odd!r}")
        if allowed is not None:
            unknown = sorted(set(value) - set(allowed))
            if unknown:
                raise self.fail(where, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
        return dict(value)

    def seq(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {type(value).__name__}")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def integer(self, value: Any, where: str, *, minimum: int = 0, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.fail(where, f"must be >= {minimum}, got {value}")
        if value > maximum:
            raise self.fail(where, f"must be <= {maximum} (the stored column's limit), got {value}")
        return value

    def price(self, value: Any, where: str) -> Decimal:
        try:
            return parse_price(value, what="value")
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None

    def instant(self, value: Any, where: str) -> datetime:
        if isinstance(value, datetime):
            ts = value
        elif isinstance(value, str):
            try:
                ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise self.fail(where, f"{value!r} is not an ISO 8601 time") from None
        else:
            raise self.fail(where, f"expected an ISO 8601 time string, got {value!r}")
        if ts.tzinfo is None:
            raise self.fail(where, f"{value!r} has no UTC offset; write e.g. 2026-01-01T00:00:00Z")
        ts = ts.astimezone(UTC)
        if not EARLIEST <= ts <= LATEST:
            raise self.fail(where, f"{value!r} is outside the storable years 1900-2299")
        return ts

    def choice(self, value: Any, where: str, enum: type[StrEnum]) -> Any:
        try:
            return enum(value)
        except ValueError:
            raise self.fail(where, f"{value!r} is not one of {[e.value for e in enum]}") from None


_RATE_FIELDS = (
    "meter",
    "model",
    "provider",
    "gpu_type",
    "charge",
    "unit_price",
    "tiers",
    "package_size",
    "package_price",
    "included_units",
)


def _meter_name(r: _Reader, value: Any, where: str) -> str:
    meter = r.string(value, where)
    if meter in METER_NAMES:
        return meter
    if meter.startswith("custom:") and _CUSTOM_RE.match(meter[len("custom:") :]):
        return meter
    raise r.fail(where, f"unknown meter {meter!r}; use one of {list(METER_NAMES)} or custom:<name>")


def _tiers(r: _Reader, value: Any, where: str) -> tuple[Tier, ...]:
    items = r.seq(value, where)
    if not items:
        raise r.fail(where, "needs at least one tier")
    if len(items) > MAX_TIERS:
        raise r.fail(where, f"{len(items)} tiers; at most {MAX_TIERS} can be stored")
    tiers: list[Tier] = []
    previous = 0
    for i, raw in enumerate(items):
        w = f"{where}[{i}]"
        t = r.mapping(raw, w, allowed=("up_to", "unit_price"))
        if "unit_price" not in t:
            raise r.fail(w, "unit_price is required")
        up_to = t.get("up_to")
        last = i == len(items) - 1
        if up_to is None:
            if not last:
                raise r.fail(w, "only the last tier may omit up_to (it is unbounded)")
        else:
            up_to = r.integer(up_to, f"{w}.up_to", minimum=1, maximum=MAX_UNITS)
            if up_to <= previous:
                raise r.fail(f"{w}.up_to", f"tier bounds must increase ({up_to} <= {previous})")
            if last:
                raise r.fail(w, "the last tier must be unbounded: omit its up_to")
            previous = up_to
        tiers.append(Tier(up_to, r.price(t["unit_price"], f"{w}.unit_price")))
    return tuple(tiers)


def _rate(r: _Reader, raw: Any, where: str) -> Rate:
    d = r.mapping(raw, where, allowed=_RATE_FIELDS)
    meter = _meter_name(r, d.get("meter"), f"{where}.meter")
    charge: ChargeModel = r.choice(d.get("charge", "flat"), f"{where}.charge", ChargeModel)
    gpu_type = r.string(d["gpu_type"], f"{where}.gpu_type") if "gpu_type" in d else ANY
    if gpu_type != ANY and meter != "gpu_ms":
        raise r.fail(f"{where}.gpu_type", "gpu_type only applies to the gpu_ms meter")
    kwargs: dict[str, Any] = {
        "meter": meter,
        "charge": charge,
        "model": r.string(d["model"], f"{where}.model") if "model" in d else ANY,
        "provider": r.string(d["provider"], f"{where}.provider") if "provider" in d else ANY,
        "gpu_type": gpu_type,
        "included_units": r.integer(
            d.get("included_units", 0), f"{where}.included_units", maximum=MAX_UNITS
        ),
    }
    needs = {
        ChargeModel.FLAT: {"unit_price"},
        ChargeModel.GRADUATED: {"tiers"},
        ChargeModel.VOLUME: {"tiers"},
        ChargeModel.PACKAGE: {"package_size", "package_price"},
    }[charge]
    pricing_fields = {"unit_price", "tiers", "package_size", "package_price"}
    missing = sorted(needs - set(d))
    if missing:
        raise r.fail(where, f"charge {charge.value!r} needs {missing}")
    extra = sorted((pricing_fields - needs) & set(d))
    if extra:
        raise r.fail(where, f"charge {charge.value!r} does not use {extra}")
    if charge is ChargeModel.FLAT:
        kwargs["unit_price"] = r.price(d["unit_price"], f"{where}.unit_price")
    elif charge is ChargeModel.PACKAGE:
        kwargs["package_size"] = r.integer(
            d["package_size"], f"{where}.package_size", minimum=1, maximum=MAX_UNITS
        )
        kwargs["package_price"] = r.price(d["package_price"], f"{where}.package_price")
    else:
        kwargs["tiers"] = _tiers(r, d["tiers"], f"{where}.tiers")
    return Rate(**kwargs)


def _book(r: _Reader, raw: Any, where: str) -> PriceBook:
    d = r.mapping(raw, where, allowed=("name", "currency", "extends", "versions", "aliases"))
    name = r.string(d.get("name"), f"{where}.name")
    aliases = _aliases(r, d.get("aliases"), f"{where}.aliases")
    currency = r.string(d.get("currency", "USD"), f"{where}.currency").upper()
    extends = r.string(d["extends"], f"{where}.extends") if d.get("extends") else None
    versions: list[BookVersion] = []
    for i, vraw in enumerate(r.seq(d.get("versions"), f"{where}.versions")):
        w = f"{where}.versions[{i}]"
        v = r.mapping(vraw, w, allowed=("version", "effective_from", "credit_grant", "rates"))
        number = r.integer(v.get("version"), f"{w}.version", minimum=1, maximum=MAX_VERSION)
        rates = tuple(
            _rate(r, x, f"{w}.rates[{j}]")
            for j, x in enumerate(r.seq(v.get("rates", []), f"{w}.rates"))
        )
        keys = [(x.meter, x.model, x.provider, x.gpu_type) for x in rates]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup is not None:
            raise r.fail(
                f"{w}.rates", f"two rates for the same (meter, model, provider, gpu_type) {dup}"
            )
        versions.append(
            BookVersion(
                book=name,
                version=number,
                effective_from=r.instant(v.get("effective_from"), f"{w}.effective_from"),
                currency=currency,
                rates=rates,
                credit_grant=r.price(v.get("credit_grant", "0"), f"{w}.credit_grant"),
            )
        )
    if not versions:
        raise r.fail(f"{where}.versions", "a price book needs at least one version")
    for a, b in itertools.pairwise(versions):
        if b.version <= a.version or b.effective_from <= a.effective_from:
            raise r.fail(
                f"{where}.versions",
                f"versions must increase in number and effective_from (v{a.version} -> v{b.version})",
            )
    return PriceBook(
        name=name, currency=currency, versions=tuple(versions), extends=extends, aliases=aliases
    )


def _aliases(r: _Reader, raw: Any, where: str) -> tuple[Alias, ...]:
    """``aliases: {models: {gpt-4o: ["gpt-4o-20??-??-??"]}, gpu_types: {H100: [...]}}``."""
    if raw is None:
        return ()
    d = r.mapping(raw, where, allowed=("models", "gpu_types"))
    out: list[Alias] = []
    for kind in ("models", "gpu_types"):
        if d.get(kind) is None:
            continue
        names = r.mapping(d[kind], f"{where}.{kind}", allowed=None)
        for canonical, patterns in names.items():
            w = f"{where}.{kind}.{canonical}"
            canon = r.string(canonical, w)
            for i, pat in enumerate(r.seq(patterns, w)):
                pattern = r.string(pat, f"{w}[{i}]")
                if not pattern:
                    raise r.fail(f"{w}[{i}]", "an alias pattern must not be empty")
                out.append(Alias(kind=kind, canonical=canon, pattern=pattern))
    return tuple(out)


def _budget(r: _Reader, raw: Any, where: str) -> Budget:
    d = r.mapping(
        raw, where, allowed=("name", "amount", "window", "thresholds", "workflow", "hard_limit")
    )
    thresholds = DEFAULT_THRESHOLDS
    if "thresholds" in d:
        items = r.seq(d["thresholds"], f"{where}.thresholds")
        parsed = [
            r.integer(t, f"{where}.thresholds[{i}]", minimum=1, maximum=2**16 - 1)
            for i, t in enumerate(items)
        ]
        if not parsed or parsed != sorted(set(parsed)) or parsed[-1] > 1000:
            raise r.fail(
                f"{where}.thresholds",
                "thresholds are ascending whole percents (1..1000), e.g. [50, 80, 100]",
            )
        thresholds = tuple(parsed)
    hard = d.get("hard_limit", False)
    if not isinstance(hard, bool):
        raise r.fail(f"{where}.hard_limit", f"expected true or false, got {hard!r}")
    amount = r.price(d.get("amount"), f"{where}.amount")
    if amount <= 0:
        raise r.fail(f"{where}.amount", "a budget amount must be positive")
    return Budget(
        name=r.string(d.get("name"), f"{where}.name"),
        amount=amount,
        window=r.choice(d.get("window", "month"), f"{where}.window", WindowKind),
        thresholds=thresholds,
        workflow=r.string(d["workflow"], f"{where}.workflow") if d.get("workflow") else None,
        hard_limit=hard,
    )


def _plan(r: _Reader, tenant: str, raw: Any, where: str, base: TenantPlan | None) -> TenantPlan:
    d = r.mapping(raw, where, allowed=("price_book", "time_zone", "billing_window", "budgets"))
    base = base or TenantPlan(tenant=tenant)
    tz = r.string(d.get("time_zone", base.time_zone), f"{where}.time_zone")
    try:
        zone(tz)
    except Exception as exc:
        raise r.fail(f"{where}.time_zone", str(exc)) from None
    budgets = base.budgets
    if "budgets" in d:
        budgets = tuple(
            _budget(r, b, f"{where}.budgets[{i}]")
            for i, b in enumerate(r.seq(d["budgets"], f"{where}.budgets"))
        )
        names = [b.name for b in budgets]
        if len(set(names)) != len(names):
            raise r.fail(f"{where}.budgets", f"budget names must be unique, got {names}")
    return TenantPlan(
        tenant=tenant,
        price_book=r.string(d.get("price_book", base.price_book), f"{where}.price_book"),
        time_zone=tz,
        billing_window=r.choice(
            d.get("billing_window", base.billing_window), f"{where}.billing_window", WindowKind
        ),
        budgets=budgets,
    )


class _Pairs(list[tuple[Any, Any]]):
    """A JSON object as its key/value pairs, in order, duplicates kept (checked later)."""


def _json_unique(value: Any, source: str, where: str = "(top)") -> Any:
    """The parsed JSON with objects as dicts; a key given twice in one object fails."""
    if isinstance(value, _Pairs):
        out: dict[str, Any] = {}
        for k, v in value:
            path = k if where == "(top)" else f"{where}.{k}"
            if k in out:
                raise PriceBookError(
                    f"duplicate key {k!r} (JSON would keep the last silently)",
                    source=source,
                    where=path,
                )
            out[k] = _json_unique(v, source, path)
        return out
    if isinstance(value, list):
        return [_json_unique(v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _yaml_unique(node: Any, source: str, where: str = "(top)") -> None:
    """Walk a composed YAML node tree; a key given twice in one mapping fails (with its
    line), where yaml.safe_load would keep the last value silently."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: overriding is its point
                _yaml_unique(value, source, where)
                continue
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            path = name if where == "(top)" else f"{where}.{name}"
            ident = (key.tag, name)
            if isinstance(key, yaml.ScalarNode) and ident in seen:
                raise PriceBookError(
                    f"duplicate key {name!r} at line {key.start_mark.line + 1} (first at line "
                    f"{seen[ident]}; YAML would keep the last silently)",
                    source=source,
                    where=path,
                )
            seen[ident] = key.start_mark.line + 1
            _yaml_unique(value, source, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _yaml_unique(item, source, f"{where}[{i}]")


def _parse_text(text: str, source: str) -> Any:
    if source.endswith(".json"):
        try:
            pairs = json.loads(text, object_pairs_hook=_Pairs)
        except json.JSONDecodeError as exc:
            raise PriceBookError(f"invalid JSON: {exc}", source=source) from None
        return _json_unique(pairs, source)
    import yaml

    try:
        _yaml_unique(yaml.compose(text, Loader=yaml.SafeLoader), source)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PriceBookError(f"invalid YAML: {exc}", source=source) from None


def parse_documents(docs: Sequence[tuple[str, Any]]) -> PricingConfig:
    """Build and cross-check a config from parsed documents ``(source, data)``."""
    books: dict[str, PriceBook] = {}
    book_src: dict[str, str] = {}
    raw_tenants: list[tuple[_Reader, str, Any]] = []
    raw_defaults: tuple[_Reader, Any] | None = None
    unknown, unknown_src = "default", None
    for source, data in docs:
        r = _Reader(source)
        if data is None:
            continue
        top = r.mapping(
            data,
            "(top)",
            allowed=("price_book", "price_books", "tenants", "defaults", "unknown_tenants"),
        )
        book_items: list[tuple[str, Any]] = []
        if "price_book" in top:
            book_items.append(("price_book", top["price_book"]))
        for i, b in enumerate(r.seq(top.get("price_books", []), "price_books")):
            book_items.append((f"price_books[{i}]", b))
        for where, b in book_items:
            pb = _book(r, b, where)
            if pb.name in books:
                raise r.fail(
                    where, f"price book {pb.name!r} is also defined in {book_src[pb.name]}"
                )
            books[pb.name] = pb
            book_src[pb.name] = source
        for tenant, t in r.mapping(top.get("tenants", {}), "tenants").items():
            try:
                validate_tenant(tenant)
            except InvalidUsageError as exc:
                raise r.fail(f"tenants.{tenant}", f"not a valid tenant id: {exc}") from None
            raw_tenants.append((r, tenant, t))
        if "unknown_tenants" in top:
            policy = top["unknown_tenants"]
            if policy not in ("default", "reject"):
                raise r.fail("unknown_tenants", f"must be 'default' or 'reject', got {policy!r}")
            if unknown_src is not None:
                raise r.fail("unknown_tenants", f"also given in {unknown_src}")
            unknown, unknown_src = str(policy), source
        if "defaults" in top:
            if raw_defaults is not None:
                raise r.fail("defaults", f"defaults are also given in {raw_defaults[0].source}")
            raw_defaults = (r, top["defaults"])
    defaults = TenantPlan(tenant="*")
    if raw_defaults is not None:
        defaults = _plan(raw_defaults[0], "*", raw_defaults[1], "defaults", None)
    tenants: dict[str, TenantPlan] = {}
    for r, tenant, t in raw_tenants:
        if tenant in tenants:
            raise r.fail(f"tenants.{tenant}", "tenant is defined twice")
        tenants[tenant] = _plan(r, tenant, t, f"tenants.{tenant}", defaults)
    cfg = PricingConfig(books=books, tenants=tenants, defaults=defaults, unknown_tenants=unknown)
    _cross_check(cfg)
    return cfg


def _cross_check(cfg: PricingConfig) -> None:
    for pb in cfg.books.values():
        seen = {pb.name}
        name = pb.extends
        while name is not None:
            if name not in cfg.books:
                raise PriceBookError(f"price book {pb.name!r} extends unknown book {name!r}")
            if name in seen:
                raise PriceBookError(
                    f"price book {pb.name!r}: extends forms a cycle through {name!r}"
                )
            if cfg.books[name].currency != pb.currency:
                raise PriceBookError(
                    f"price book {pb.name!r} ({pb.currency}) extends {name!r} in another currency"
                )
            seen.add(name)
            name = cfg.books[name].extends
    for plan in [cfg.defaults, *cfg.tenants.values()]:
        if plan.price_book not in cfg.books:
            who = "defaults" if plan.tenant == "*" else f"tenant {plan.tenant!r}"
            raise PriceBookError(
                f"{who} uses unknown price book {plan.price_book!r}; known: {sorted(cfg.books)}"
            )


def load_config(path: str | os.PathLike[str] | None = None) -> PricingConfig:
    """Load a file or a directory of files (default: ``$NODEMETER_PRICEBOOKS``)."""
    raw = path if path is not None else os.environ.get(ENV_PATH)
    if not raw:
        raise PriceBookError(f"no price books configured: set {ENV_PATH} to a file or directory")
    p = Path(raw)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json"))
        if not files:
            raise PriceBookError(f"{p}: no .yaml, .yml or .json files in the directory")
    elif p.is_file():
        files = [p]
    else:
        raise PriceBookError(f"{p}: no such file or directory ({ENV_PATH})")
    return parse_documents([(str(f), _parse_text(f.read_text(), str(f))) for f in files])
