"""The pricing engine: usage events in, priced lines and budget alerts out.

State is plain JSON-able data so the worker can keep it in a changelog-backed table
and recover it after a crash:

- tenant state (one dict per tenant): event-time watermark, open and recently closed
  billing windows (cumulative units per usage key, volume accumulators, credit-grant
  use) and budget spend;
- seen records (one per event, keyed ``tenant|event_id``): the alerts the event
  produced and (unless ``keep_lines=False``) its lines. A redelivered event is answered
  from here: the *same* lines and alerts are emitted again (same ids, collapsed
  downstream), never priced twice.

Pricing is deterministic given the recovered state and the order of a tenant's
events, so a replay after a crash reproduces the same tiers, amounts and ids.

Windows close on event time: when a tenant's watermark (latest event time seen)
passes ``window end + grace``, the window is settled (volume true-ups and
credit-grant reconciliation). An event for an already closed window is still
priced into it and the window is settled again (delta lines only). Window state is
dropped ``retention`` after the window's end; an event older than that cannot be
priced (:class:`PricingError` ``window_closed``, a dead-letter record).

A tenant that goes quiet sends no later event; for it the worker appends clock ticks
(WindowTick records) to the tenant's partition, and :meth:`PricingEngine.advance`
moves the watermark to the tick's time and settles what is due. Ticks are in the log,
so a replay sees them at the same place and settles identically.

Non-billable events (``billable=False``) produce no lines; they are recorded as seen.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from nodemeter.events import UsageEvent
from nodemeter_stream.pricing import budgets as budget_rules
from nodemeter_stream.pricing.book import (
    ANY,
    BookVersion,
    ChargeModel,
    PricingConfig,
    Rate,
    TenantPlan,
)
from nodemeter_stream.pricing.budgets import BudgetAlert
from nodemeter_stream.pricing.charge import price_pieces, volume_exact
from nodemeter_stream.pricing.errors import PricingError
from nodemeter_stream.pricing.lines import PricedLine, line_id
from nodemeter_stream.pricing.money import ZERO, add, from_str, mul, sub, to_str
from nodemeter_stream.pricing.windows import BillingWindow, window_for, zone

GRANT_METER = "credit_grant"
CACHED = "cached_input_tokens"
CACHE_WRITE = "cache_write_tokens"
ONE_US = timedelta(microseconds=1)
_VOLUME = ChargeModel.VOLUME.value
_MEMO_MAX = 1 << 16  # entries of a memo before it is cleared


@dataclass(slots=True)
class Outcome:
    lines: list[PricedLine] = field(default_factory=list)
    alerts: list[BudgetAlert] = field(default_factory=list)
    duplicate: bool = False
    budget_keys: set[str] = field(default_factory=set)  # budget windows whose spend changed


def new_state(tenant: str) -> dict[str, Any]:
    return {"tenant": tenant, "watermark": None, "windows": {}, "budgets": {}, "applied": {}}


def seen_key(tenant: str, event_id: str) -> str:
    return f"{tenant}|{event_id}"


def tick_id(source: tuple[int, int] | None) -> str:
    """The seen-record id of a tick at ``source`` = (partition, offset)."""
    return f"tick:{source[0]}:{source[1]}" if source is not None else "tick:"


def _add(a: str, b: Decimal) -> str:
    return to_str(add(from_str(a), b))


class PricingEngine:
    def __init__(
        self,
        config: PricingConfig,
        *,
        grace: timedelta = timedelta(hours=1),
        retention: timedelta = timedelta(days=40),
        keep_lines: bool = True,
    ) -> None:
        """``keep_lines=False``: seen records keep no lines, only the alerts. For a caller
        that stores the state only after the lines are durably written (the worker),
        a duplicate never needs its lines again, and the state stays small."""
        if retention <= grace:
            raise ValueError("retention must be longer than grace")
        self.config = config
        self.grace = grace
        self.retention = retention
        self.keep_lines = keep_lines
        self._zones: dict[str, ZoneInfo] = {}
        # Memos. Each holds the result of a pure function of its key (the time text, or
        # the config and the arguments), so an answer from one is the answer the
        # computation gives; those derived from the config are dropped when
        # ``self.config`` is replaced.
        self._times: dict[str, datetime] = {}  # ISO text -> datetime.fromisoformat(text)
        self._canons: dict[str, str] = {}  # ISO text -> fromisoformat(text).isoformat()
        self._memo_config = config
        self._plans: dict[str, TenantPlan] = {}
        self._points: dict[str, list[datetime]] = {}  # book -> effective_from of its chain
        self._rates: dict[tuple[str, int, str, str, str, str], tuple[BookVersion, Rate] | None]
        self._rates = {}
        self._names: dict[tuple[str, str, str], str] = {}  # (book, kind, name) -> canonical
        # tenant -> (horizon, retention, entry ids, entries) of the last _drop_old scan
        self._horizons: dict[str, tuple[datetime, timedelta, list[int], list[Any]]] = {}

    # --- public ------------------------------------------------------------------

    def currency(self, plan: TenantPlan) -> str:
        return self.config.books[plan.price_book].currency

    def _config(self) -> PricingConfig:
        """``self.config``, with the memos derived from it dropped if it was replaced."""
        config = self.config
        if config is not self._memo_config:
            self._memo_config = config
            self._plans.clear()
            self._points.clear()
            self._rates.clear()
            self._names.clear()
        return config

    def _name(self, book: str, kind: str, name: str) -> str:
        """``config.canonical(...)`` (aliases), memoized."""
        if not name:
            return name
        key = (book, kind, name)
        found = self._names.get(key)
        if found is None:
            found = self._config().canonical(book, kind, name)
            if len(self._names) >= _MEMO_MAX:
                self._names.clear()
            self._names[key] = found
        return found

    def _plan(self, tenant: str) -> TenantPlan:
        """``config.plan_for(tenant)``, memoized."""
        config = self._config()
        plan = self._plans.get(tenant)
        if plan is None:
            if len(self._plans) >= _MEMO_MAX:
                self._plans.clear()
            plan = self._plans[tenant] = config.plan_for(tenant)
        return plan

    def _resolve(
        self, book: str, meter: str, model: str, provider: str, gpu_type: str, at: datetime
    ) -> tuple[BookVersion, Rate] | None:
        """``config.resolve(...)``, memoized. Its answer depends on ``at`` only through
        the version of each book of the chain in force at ``at``, i.e. on how many of the
        chain's ``effective_from`` times are <= ``at``: that count is in the key."""
        config = self._config()
        points = self._points.get(book)
        if points is None:
            points = sorted(v.effective_from for pb in config.chain(book) for v in pb.versions)
            self._points[book] = points
        key = (book, bisect_right(points, at), meter, model, provider, gpu_type)
        try:
            return self._rates[key]
        except KeyError:
            pass
        found = config.resolve(
            book, meter=meter, model=model, provider=provider, gpu_type=gpu_type, at=at
        )
        if len(self._rates) >= _MEMO_MAX:
            self._rates.clear()
        self._rates[key] = found
        return found

    def _dt(self, text: str) -> datetime:
        """``datetime.fromisoformat(text)``, memoized (window bounds, watermarks)."""
        dt = self._times.get(text)
        if dt is None:
            if len(self._times) >= _MEMO_MAX:
                self._times.clear()
            dt = self._times[text] = datetime.fromisoformat(text)
        return dt

    def _canon(self, text: str) -> str:
        """``datetime.fromisoformat(text).isoformat()``, memoized."""
        out = self._canons.get(text)
        if out is None:
            if len(self._canons) >= _MEMO_MAX:
                self._canons.clear()
            out = self._canons[text] = self._dt(text).isoformat()
        return out

    def tz(self, plan: TenantPlan) -> ZoneInfo:
        if plan.time_zone not in self._zones:
            self._zones[plan.time_zone] = zone(plan.time_zone)
        return self._zones[plan.time_zone]

    def process(
        self,
        state: dict[str, Any],
        seen: MutableMapping[str, Any],
        event: UsageEvent,
        *,
        source: tuple[int, int] | None = None,
    ) -> Outcome:
        """Price one event of ``state['tenant']``; mutates ``state`` and ``seen``.

        ``source`` = (partition, offset) of the record in a topic keyed by tenant (so a
        tenant's records are in one partition, in order). The state then remembers the
        last offset applied, which makes it self-sufficient: a redelivered record at or
        below it is a duplicate even if its seen record was lost, and a seen record
        from the *same* offset above it means the state of that batch was lost, so the
        record is priced again (identically). Only a record at another offset with a
        seen record is a resend.
        """
        if event.tenant != state["tenant"]:
            raise ValueError(
                f"event of tenant {event.tenant!r} given to state of {state['tenant']!r}"
            )
        key = seen_key(event.tenant, event.event_id)
        record = seen.get(key)
        applied = state.setdefault("applied", {})
        if source is not None and source[1] <= applied.get(str(source[0]), -1):
            return self._duplicate(record)
        if record is not None and (source is None or record.get("source") != list(source)):
            return self._duplicate(record)
        if not self._config().knows(event.tenant):
            raise PricingError(
                f"tenant {event.tenant!r} has no plan and unknown tenants are rejected "
                "(unknown_tenants: reject)",
                reason="unknown_tenant",
            )
        plan = self._plan(event.tenant)
        tz = self.tz(plan)
        win = window_for(event.event_time, plan.billing_window, tz)
        wm_text: str = state.get("watermark") or ""
        wm = self._dt(wm_text) if wm_text else None
        if (
            wm is not None
            and win.window_id not in state["windows"]
            and win.end + self.retention <= wm
        ):
            raise PricingError(
                f"event {event.event_id} at {event.event_time.isoformat()} is for window "
                f"{win.window_id}, closed and dropped (retention {self.retention})",
                reason="window_closed",
            )
        lines: list[PricedLine] = []
        if event.billable:
            lines += self._price_event(state, plan, win, event)
        new_wm = event.event_time if wm is None else max(wm, event.event_time)
        # unchanged: fromisoformat(text).isoformat(), memoized
        state["watermark"] = (
            self._canon(wm_text) if wm is not None and new_wm is wm else new_wm.isoformat()
        )
        lines += self._close_due(state, plan, new_wm)
        self._drop_old(state, seen, new_wm)
        touched: set[str] = set()
        alerts = self._budgets(state, plan, lines, touched)
        seen[key] = {
            "tenant": event.tenant,
            "window": win.window_id,
            "lines": [ln.to_dict() for ln in lines] if self.keep_lines else [],
            "alerts": [a.to_dict() for a in alerts],
            "source": list(source) if source is not None else None,
        }
        if source is not None:
            applied[str(source[0])] = source[1]
        return Outcome(lines=lines, alerts=alerts, budget_keys=touched)

    def advance(
        self,
        state: dict[str, Any],
        seen: MutableMapping[str, Any],
        as_of: datetime,
        *,
        source: tuple[int, int] | None = None,
    ) -> Outcome:
        """A clock tick for ``state['tenant']`` (a WindowTick record): the watermark
        becomes ``max(watermark, as_of)`` and the windows then due are settled, as a
        later event of the tenant would settle them; mutates ``state`` and ``seen``.

        ``source`` follows the rule of :meth:`process`: a tick at or below the offset
        applied for its partition is a no-op (its seen record answers it, if any). A
        tick whose settlement raised alerts gets a seen record keyed
        ``seen_key(tenant, tick_id(source))`` holding them, so the caller can send them
        once; a tick without alerts leaves none (nothing to answer a redelivery with).
        """
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")
        tenant = state["tenant"]
        key = seen_key(tenant, tick_id(source))
        record = seen.get(key) if source is not None else None
        applied = state.setdefault("applied", {})
        if source is not None and source[1] <= applied.get(str(source[0]), -1):
            return self._duplicate(record)
        plan = self.config.plan_for(tenant)
        wm = self._watermark(state)
        new_wm = as_of if wm is None else max(wm, as_of)
        state["watermark"] = new_wm.isoformat()
        lines = self._close_due(state, plan, new_wm)
        self._drop_old(state, seen, new_wm)
        touched: set[str] = set()
        alerts = self._budgets(state, plan, lines, touched)
        if alerts and source is not None:
            seen[key] = {
                "tenant": tenant,
                "window": max(ln.window_id for ln in lines),  # dropped with that window
                "lines": [ln.to_dict() for ln in lines] if self.keep_lines else [],
                "alerts": [a.to_dict() for a in alerts],
                "source": list(source),
            }
        if source is not None:
            applied[str(source[0])] = source[1]
        return Outcome(lines=lines, alerts=alerts, budget_keys=touched)

    def due(self, state: dict[str, Any], now: datetime) -> bool:
        """Whether a tick at ``now`` would settle something: a window of the tenant is
        open (or closed but dirty) and ``end + grace <= now``."""
        for ws in state["windows"].values():
            if (not ws["closed"] or ws["dirty"]) and datetime.fromisoformat(
                ws["end"]
            ) + self.grace <= now:
                return True
        return False

    @staticmethod
    def _duplicate(record: Any) -> Outcome:
        if record is None:  # applied (per the state) but its seen record was lost
            return Outcome(duplicate=True)
        return Outcome(
            lines=[PricedLine.from_dict(d) for d in record["lines"]],
            alerts=[BudgetAlert.from_dict(d) for d in record["alerts"]],
            duplicate=True,
        )

    def close_all(self, state: dict[str, Any]) -> Outcome:
        """Settle every open window now (end of a replay, tests, an operator's close)."""
        plan = self.config.plan_for(state["tenant"])
        lines: list[PricedLine] = []
        for wid in sorted(state["windows"]):
            ws = state["windows"][wid]
            if not ws["closed"] or ws["dirty"]:
                ws["closed"], ws["dirty"] = True, False
                lines += self._settle(state, plan, wid, ws)
        touched: set[str] = set()
        alerts = self._budgets(state, plan, lines, touched)
        return Outcome(lines=lines, alerts=alerts, budget_keys=touched)

    def budget_records(
        self, state: dict[str, Any], keys: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """Budget-state records of the tenant: current windows plus the ``keys`` given."""
        plan = self.config.plan_for(state["tenant"])
        wm = self._watermark(state)
        if wm is None:
            return []
        return budget_rules.state_records(
            plan=plan,
            tz=self.tz(plan),
            currency=self.currency(plan),
            state=state["budgets"],
            as_of=wm,
            keys=keys,
        )

    # --- pricing -----------------------------------------------------------------

    @staticmethod
    def _watermark(state: dict[str, Any]) -> datetime | None:
        wm = state.get("watermark")
        return datetime.fromisoformat(wm) if wm else None

    def _window_state(
        self, state: dict[str, Any], plan: TenantPlan, win: BillingWindow
    ) -> dict[str, Any]:
        ws: dict[str, Any] | None = state["windows"].get(win.window_id)
        if ws is None:
            gv = self.config.grant_version(plan.price_book, win.start, win.end)
            ws = {
                "start": win.start.isoformat(),
                "end": win.end.isoformat(),
                "units": {},
                "volume": {},
                "grant": to_str(gv.credit_grant if gv else ZERO),
                "grant_book": f"{gv.book}|{gv.version}" if gv else "",
                "grant_used": "0",
                "gross": "0",
                "closed": False,
                "dirty": False,
                "settle_seq": 0,
            }
            state["windows"][win.window_id] = ws
        return ws

    def _price_event(
        self, state: dict[str, Any], plan: TenantPlan, win: BillingWindow, ev: UsageEvent
    ) -> list[PricedLine]:
        ws = self._window_state(state, plan, win)
        model, provider = ev.model or "", ev.provider or ""
        # the names the book's rates know (aliases); lines keep the names that arrived
        book_model = self._name(plan.price_book, "models", model)
        currency = self.currency(plan)
        out: list[PricedLine] = []

        def line(
            kind: str,
            meter: str,
            gpu_type: str,
            qty: int,
            price: Decimal,
            amount: Decimal,
            book: str,
            version: int,
            charge: str,
            tier: int,
            lid: str,
            savings: Decimal = ZERO,
            match: str = "",
            as_input: Decimal = ZERO,
        ) -> PricedLine:
            return PricedLine(
                line_id=lid, line_kind=kind, event_id=ev.event_id, tenant=ev.tenant,
                request_id=ev.request_id, node_id=ev.node_id, workflow=ev.workflow,
                model=model, provider=provider, meter=meter, gpu_type=gpu_type, quantity=qty,
                unit_price=price, amount=amount, currency=currency, price_book=book,
                price_book_version=version, charge_model=charge, tier=tier,
                window_id=win.window_id, window_start=win.start, event_time=ev.event_time,
                cache_savings=savings, rate_match=match, input_list_cost=as_input,
            )  # fmt: skip

        gross = ZERO
        units = ws["units"]
        tenant, event_id, at = ev.tenant, ev.event_id, ev.event_time
        for meter, qty in sorted(ev.meters.quantities().items()):
            gpu_type = ev.meters.gpu_type if meter == "gpu_ms" else ""
            book_gpu = self._name(plan.price_book, "gpu_types", gpu_type)
            # tiers count per name the book knows: a dated snapshot shares its model's
            ukey = "|".join((meter, book_model, provider, book_gpu))
            position = int(units.get(ukey, 0))
            units[ukey] = position + qty
            found = self._resolve(plan.price_book, meter, book_model, provider, book_gpu, at)
            if found is None:
                # No book prices it: keep the usage visible at zero rather than lose it.
                lid = line_id("usage", tenant, event_id, meter, 0, "unpriced")
                out.append(
                    line(
                        "usage",
                        meter,
                        gpu_type,
                        qty,
                        ZERO,
                        ZERO,
                        plan.price_book,
                        0,
                        "unpriced",
                        0,
                        lid,
                        match="unpriced",
                    )
                )
                continue
            version, rate = found
            match = rate_match(rate, model, book_model, gpu_type, book_gpu)
            # cache reads: savings against the input price; cache writes: what they would
            # have cost as plain input (their premium is amount - that)
            list_price = (
                self._input_list_price(plan, book_model, provider, ev)
                if meter in (CACHED, CACHE_WRITE)
                else None
            )
            for p in price_pieces(rate, position, qty):
                lid = line_id("usage", tenant, event_id, meter, p.tier, p.charge_model)
                savings = as_input = ZERO
                if list_price is not None:
                    as_input = mul(list_price, p.quantity)
                    if meter == CACHED:
                        savings, as_input = sub(as_input, p.amount), ZERO
                out.append(
                    line("usage", meter, gpu_type, p.quantity, p.unit_price, p.amount,
                         version.book, version.version, p.charge_model, p.tier, lid, savings,
                         match, as_input)
                )  # fmt: skip
                gross = add(gross, p.amount)
                if p.charge_model == _VOLUME:
                    acc = ws["volume"].setdefault(
                        f"{ukey}|{version.book}|{version.version}",
                        {"key": ukey, "book": version.book, "version": version.version,
                         "qty": 0, "provisional": "0", "settled": "0"},
                    )  # fmt: skip
                    acc["qty"] += p.quantity
                    acc["provisional"] = _add(acc["provisional"], p.amount)
        ws["gross"] = _add(ws["gross"], gross)
        left = sub(from_str(ws["grant"]), from_str(ws["grant_used"]))
        credit = min(gross, left)
        if credit > 0:
            ws["grant_used"] = _add(ws["grant_used"], credit)
            book, _, ver = ws["grant_book"].partition("|")
            lid = line_id("credit", tenant, event_id)
            out.append(
                line("credit", GRANT_METER, "", 0, ZERO, -credit, book, int(ver), "credit", 0, lid)
            )
        if ws["closed"]:
            ws["dirty"] = True  # a late event: settle this window again
        return out

    def _input_list_price(
        self, plan: TenantPlan, model: str, provider: str, ev: UsageEvent
    ) -> Decimal | None:
        """The input_tokens list price of the model (flat price, first tier, or package
        price per unit is not defined: None) against which cache savings are reported."""
        found = self._resolve(plan.price_book, "input_tokens", model, provider, "", ev.event_time)
        if found is None:
            return None
        rate = found[1]
        if rate.charge is ChargeModel.FLAT:
            return rate.unit_price
        if rate.tiers:
            return rate.tiers[0].unit_price
        return None

    # --- window close ------------------------------------------------------------

    def _close_due(self, state: dict[str, Any], plan: TenantPlan, wm: datetime) -> list[PricedLine]:
        lines: list[PricedLine] = []
        windows = state["windows"]
        grace = self.grace
        due = [
            wid
            for wid, ws in windows.items()
            if (ws["dirty"] if ws["closed"] else self._dt(ws["end"]) + grace <= wm)
        ]
        for wid in sorted(due):  # settling one window changes no other: decide first
            ws = windows[wid]
            ws["closed"], ws["dirty"] = True, False
            lines += self._settle(state, plan, wid, ws)
        return lines

    def _version(self, book: str, number: int) -> BookVersion:
        return next(v for v in self.config.books[book].versions if v.version == number)

    def _settle(
        self, state: dict[str, Any], plan: TenantPlan, wid: str, ws: dict[str, Any]
    ) -> list[PricedLine]:
        """Volume true-ups and credit-grant reconciliation: delta lines, so settling twice
        emits nothing new and a late event's settlement carries only its effect."""
        tenant = state["tenant"]
        seq = int(ws["settle_seq"]) + 1
        start = datetime.fromisoformat(ws["start"])
        at = datetime.fromisoformat(ws["end"]) - ONE_US
        currency = self.currency(plan)
        out: list[PricedLine] = []

        def line(
            kind: str,
            meter: str,
            model: str,
            provider: str,
            gpu_type: str,
            price: Decimal,
            amount: Decimal,
            book: str,
            version: int,
            charge: str,
            tier: int,
            lid: str,
        ) -> PricedLine:
            return PricedLine(
                line_id=lid, line_kind=kind, event_id="", tenant=tenant, request_id="",
                node_id="", workflow="", model=model, provider=provider, meter=meter,
                gpu_type=gpu_type, quantity=0, unit_price=price, amount=amount,
                currency=currency, price_book=book, price_book_version=version,
                charge_model=charge, tier=tier, window_id=wid, window_start=start, event_time=at,
            )  # fmt: skip

        delta_gross = ZERO
        for acc_key in sorted(ws["volume"]):
            acc = ws["volume"][acc_key]
            meter, model, provider, gpu_type = acc["key"].split("|")
            rate: Rate | None = self._version(acc["book"], acc["version"]).find_rate(
                meter, model, provider, gpu_type
            )
            assert rate is not None  # it priced these units
            tier, price, target = volume_exact(rate, int(ws["units"][acc["key"]]), int(acc["qty"]))
            delta = sub(sub(target, from_str(acc["provisional"])), from_str(acc["settled"]))
            if not delta:
                continue
            acc["settled"] = _add(acc["settled"], delta)
            delta_gross = add(delta_gross, delta)
            lid = line_id("settlement", tenant, wid, acc_key, seq)
            out.append(line("settlement", meter, model, provider, gpu_type, price, delta,
                            acc["book"], acc["version"], ChargeModel.VOLUME.value, tier, lid))  # fmt: skip
        ws["gross"] = _add(ws["gross"], delta_gross)
        target_used = min(from_str(ws["grant"]), max(from_str(ws["gross"]), ZERO))
        credit_delta = sub(target_used, from_str(ws["grant_used"]))
        if credit_delta:
            ws["grant_used"] = to_str(target_used)
            book, _, ver = ws["grant_book"].partition("|")
            lid = line_id("credit-settle", tenant, wid, seq)
            out.append(
                line(
                    "credit",
                    GRANT_METER,
                    "",
                    "",
                    "",
                    ZERO,
                    -credit_delta,
                    book,
                    int(ver),
                    "credit",
                    0,
                    lid,
                )
            )
        if out:
            ws["settle_seq"] = seq
        return out

    def _drop_old(
        self, state: dict[str, Any], seen: MutableMapping[str, Any], wm: datetime
    ) -> None:
        """Forget windows (and their seen records) ``retention`` after they ended.

        Skipped while ``wm`` is before the tenant's horizon: the earliest ``end +
        retention`` of its windows (closed or not) and budget windows, remembered from the
        last scan with the entries it saw (kept alive, so their ids stay theirs). It is
        used only while the state holds those very entry objects, in the same order, and
        the retention is the same: an entry's ``end`` never changes once it exists."""
        tenant = state["tenant"]
        retention = self.retention
        windows, budgets = state["windows"], state["budgets"]
        ids = [*map(id, windows.values()), -1, *map(id, budgets.values())]
        known = self._horizons.get(tenant)
        if known is not None and wm < known[0] and known[1] == retention and known[2] == ids:
            return
        old = [
            wid
            for wid, ws in state["windows"].items()
            if ws["closed"] and self._dt(ws["end"]) + retention <= wm
        ]
        for wid in old:
            del state["windows"][wid]
        if old:
            gone = set(old)
            for k in [
                k for k, v in list(seen.items()) if v["tenant"] == tenant and v["window"] in gone
            ]:
                del seen[k]
        for bkey in [
            k for k, v in state["budgets"].items() if self._dt(v["end"]) + retention <= wm
        ]:
            del state["budgets"][bkey]
        entries = [*windows.values(), None, *budgets.values()]
        ends = [self._dt(v["end"]) for v in entries if v is not None]
        if ends:
            if len(self._horizons) >= _MEMO_MAX:
                self._horizons.clear()
            ids = [-1 if v is None else id(v) for v in entries]
            self._horizons[tenant] = (min(ends) + retention, retention, ids, entries)
        else:
            self._horizons.pop(tenant, None)

    def _budgets(
        self, state: dict[str, Any], plan: TenantPlan, lines: list[PricedLine], touched: set[str]
    ) -> list[BudgetAlert]:
        return budget_rules.apply_lines(
            plan=plan,
            tz=self.tz(plan),
            currency=self.currency(plan),
            state=state["budgets"],
            lines=lines,
            touched=touched,
        )


def rate_match(rate: Rate, model: str, book_model: str, gpu_type: str, book_gpu: str) -> str:
    """How a usage line's rate was found (the ``rate_match`` column).

    ``generic``: the event names a model (or GPU type) and the rate is one that does not
    (the book has no rate for that name, nor an alias to one): priced, but probably at
    the wrong price, so never silently; ``alias``: through a book alias; ``exact``: by
    the name that arrived; empty: the event names neither."""
    named = False
    via_alias = False
    for name, book_name, rate_name in ((model, book_model, rate.model),
                                       (gpu_type, book_gpu, rate.gpu_type)):  # fmt: skip
        if not name:
            continue
        named = True
        if rate_name == ANY:
            return "generic"
        via_alias = via_alias or book_name != name
    if via_alias:
        return "alias"
    return "exact" if named else ""
