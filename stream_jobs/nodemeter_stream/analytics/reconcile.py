"""Reconciliation: the money of record against every rollup, to the unit.

Runs ``sql/queries/reconcile.sql`` (priced_lines FINAL vs cost_hourly,
tenant_spend_daily, request_node_costs, request_costs_by_start; usage_events FINAL vs
usage_hourly) and
summarises it for people (``nodemeter rebuild``, the demo).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nodemeter_stream.analytics import queries


@dataclass(frozen=True)
class Check:
    tenant: str
    currency: str
    check: str
    expected: Decimal
    actual: Decimal

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


def run_checks(client: Any) -> list[Check]:
    return [
        Check(r["tenant"], r["currency"], r["check"], Decimal(r["expected"]), Decimal(r["actual"]))
        for r in queries.run(client, "reconcile").dicts()
    ]


def summary(checks: list[Check]) -> str:
    """One line when everything agrees, one line per mismatch otherwise."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        tenants = len({c.tenant for c in checks})
        return (
            f"reconciled: rollups match the base tables ({len(checks)} checks, "
            f"{tenants} tenant{'s' if tenants != 1 else ''})"
        )
    lines = [
        f"MISMATCH {c.tenant} {c.currency} {c.check}: expected {c.expected}, got {c.actual}"
        for c in bad
    ]
    return "\n".join([*lines, f"{len(bad)} mismatch(es): run `nodemeter rebuild`"])


# --- `nodemeter reconcile`: emitted = stored = billed, lines = rollups (pure) ---------
#
# The command (analytics/reconcile_cli.py) reads the facts (analytics/reconcile_store.py:
# topic offsets, the worker's tallies and progress, counts in the store, the DLQ topic)
# and these functions compare them. Every check is a Result: OK or BAD, with what was
# expected and found and, when BAD, one line saying what to do (docs/analytics.md).

EMITTED = "emitted = stored"
BILLED = "stored = billed"
ROLLUPS = "lines = rollups"
STATEMENTS = "lines = statements"


@dataclass(frozen=True)
class Result:
    """One check. ``expected``/``actual`` are what is shown; ``ok`` decides."""

    check: str
    scope: str
    what: str
    expected: object
    actual: object
    ok: bool
    hint: str = ""

    def render(self) -> list[str]:
        head = f"{'OK ' if self.ok else 'BAD'} {self.check:<17} {self.scope}: {self.what}"
        if self.ok:
            return [f"{head} ({self.actual})"]
        return [
            f"{head}: expected {self.expected}, actual {self.actual}",
            f"    hint: {self.hint}",
        ]


def agree(
    check: str, scope: str, what: str, expected: int | Decimal, actual: int | Decimal, hint: str
) -> Result:
    return Result(check, scope, what, expected, actual, expected == actual, hint)


@dataclass(frozen=True)
class PartitionView:
    """What is known about one partition of the usage topic.

    ``earliest``: the first offset the topic still retains; ``end``: the next offset to
    be written (high watermark); ``applied``: the worker's progress of record (-1:
    nothing); ``tallies``: the worker's tallies there (``ingest.tally.Tally``), any order.
    """

    partition: int
    earliest: int
    end: int
    applied: int
    tallies: Sequence[Any] = ()


@dataclass(frozen=True)
class CheckedRange:
    """The offsets ``first..last`` of a partition that are checked, and the tallies
    inside them."""

    partition: int
    first: int
    last: int
    tallies: Sequence[Any]
    beyond_end: bool = False

    @property
    def records(self) -> int:
        """Records on the topic in the range (contiguous offsets: non-transactional
        producers, no compaction, see commit_guard)."""
        return self.last - self.first + 1

    def gaps(self) -> list[tuple[int, int]]:
        """Offset ranges inside the range that no tally covers (or covered twice: a
        negative-length gap, shown as ``(a, b)`` with ``b < a``)."""
        out, at = [], self.first
        for t in self.tallies:
            if t.first != at:
                out.append((at, t.first - 1))
            at = t.last + 1
        if at != self.last + 1:
            out.append((at, self.last))
        return out


def checked_range(view: PartitionView) -> tuple[CheckedRange | None, list[str]]:
    """The part of ``view`` that can be checked (None: nothing), from the first tally at
    or after the topic's earliest offset to the progress of record, and notes on what
    is left out and why."""
    p = view.partition
    notes: list[str] = []
    if view.earliest > 0:
        notes.append(
            f"p{p}: offsets 0..{view.earliest - 1} are past the topic's retention: not counted"
        )
    inside = sorted(
        (t for t in view.tallies if t.first >= view.earliest and t.last <= view.applied),
        key=lambda t: t.first,
    )
    pending = view.end - 1 - view.applied
    if pending > 0:
        notes.append(f"p{p}: {pending} record(s) after offset {view.applied} not applied yet")
    if not inside:
        if view.applied >= view.earliest:
            notes.append(
                f"p{p}: offsets {view.earliest}..{view.applied} were applied without tallies "
                "(a worker before migration 080): not checked"
            )
        return None, notes
    first = inside[0].first
    if first > view.earliest:
        notes.append(
            f"p{p}: offsets {view.earliest}..{first - 1} were applied without tallies "
            "(before migration 080, or a batch cut by retention): not checked"
        )
    return CheckedRange(p, first, view.applied, inside, beyond_end=view.applied >= view.end), notes


def checked_ranges_line(ranges: Sequence[CheckedRange], topic: str) -> str:
    """The offsets emitted = stored covered, for people (``p0:0..978 p1:...``)."""
    spans = " ".join(f"p{r.partition}:{r.first}..{r.last}" for r in ranges)
    return f"emitted = stored checked {topic} offsets {spans or '(none applied)'}"


def _sum(tallies: Sequence[Any], name: str) -> int:
    return sum(int(getattr(t, name)) for t in tallies)


def _where(bad: list[str]) -> str:
    return ", ".join(bad[:4]) + (f" (+{len(bad) - 4} more)" if len(bad) > 4 else "")


def emitted_checks(
    ranges: Sequence[CheckedRange],
    *,
    stored: Mapping[int, int],
    dead_stored: Mapping[int, int],
    dead_topic: Mapping[int, int] | None,
    topic: str,
) -> list[Result]:
    """emitted = stored over the checked ranges, summed over partitions.

    ``stored``/``dead_stored``: partition -> rows of usage_events FINAL / ingest dead
    letters in dead_letters FINAL at offsets inside the range; ``dead_topic``: partition
    -> distinct source offsets inside the range among the DLQ topic's ingest records
    (None: not read)."""
    scope = topic  # the ranges: checked_ranges_line
    out: list[Result] = []
    beyond = [r for r in ranges if r.beyond_end]
    if beyond:
        out.append(
            Result(
                EMITTED, scope, "progress of record within the topic", "applied < topic end",
                ", ".join(f"p{r.partition} applied {r.last}" for r in beyond), False,
                "the store records offsets the topic never had: the topic was recreated, or "
                "the worker's --topic-prefix/--app-id differ from the ones given here",
            )
        )  # fmt: skip
    emitted = sum(r.records for r in ranges)
    accounted = sum(sum(t.accounted for t in r.tallies) for r in ranges)
    events = sum(_sum(r.tallies, "events") for r in ranges)
    dups = sum(_sum(r.tallies, "duplicates") for r in ranges)
    dead = sum(_sum(r.tallies, "dead_letters") for r in ranges)
    other = sum(_sum(r.tallies, "other") for r in ranges)
    gaps = [f"p{r.partition}:{a}..{b}" for r in ranges for a, b in r.gaps()]
    out.append(
        agree(
            EMITTED, scope,
            f"records on the topic = {events} stored + {dead} dead letters + {dups} "
            f"duplicates + {other} request ends",
            emitted, accounted,
            (f"offsets applied without a tally: {_where(gaps)}; " if gaps else "")
            + "a worker wrote its progress without tallies, or tally rows were deleted "
            "from worker_state: see docs/worker.md, Counting",
        )
    )  # fmt: skip
    bad_stored = [
        f"p{r.partition} {_sum(r.tallies, 'events')}/{stored.get(r.partition, 0)}"
        for r in ranges
        if _sum(r.tallies, "events") != stored.get(r.partition, 0)
    ]
    out.append(
        agree(
            EMITTED, scope, "stored events = usage_events FINAL at those offsets",
            events, sum(stored.get(r.partition, 0) for r in ranges),
            f"tallied/found {_where(bad_stored)}: rows were deleted (or TTL'd) from "
            "usage_events, or inserted by something other than the worker; replay the "
            "offsets from the topic with a new --app-id into a scratch database and compare",
        )
    )  # fmt: skip
    out.append(
        agree(
            EMITTED, scope, "dead letters = dead_letters FINAL at those offsets",
            dead, sum(dead_stored.get(r.partition, 0) for r in ranges),
            "dead_letters rows were deleted or expired (TTL 400 days); the DLQ topic "
            "still holds them for its retention (`nodemeter dlq`)",
        )
    )  # fmt: skip
    if dead_topic is not None:
        out.append(
            agree(
                EMITTED, scope, f"dead letters = records on the DLQ topic for {topic}",
                dead, sum(dead_topic.get(r.partition, 0) for r in ranges),
                "the DLQ topic lost records (its retention is 90 days: older ranges "
                "cannot be matched) or the worker ran with another --topic-prefix",
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class MeterQuantity:
    """stored = billed, one (tenant, window, meter): quantity in usage_events (billable,
    FINAL) against the sum of its usage lines in priced_lines (FINAL)."""

    tenant: str
    window_id: str
    meter: str
    stored: int
    billed: int


@dataclass(frozen=True)
class Coverage:
    """A tenant's billable stored events with a quantity (``events``), and those of them
    that have no usage line (``unbilled``, a few ids in ``sample``)."""

    tenant: str
    events: int
    unbilled: int = 0
    sample: Sequence[str] = ()


def billed_checks(
    quantities: Sequence[MeterQuantity],
    coverage: Sequence[Coverage],
    *,
    refused: Mapping[str, int] | None = None,
    period: str = "all history",
) -> list[Result]:
    """stored = billed per tenant: one OK line, or a BAD line per disagreeing meter and
    window, and one for events without lines. ``refused``: tenant -> stored events the
    pricing agent dead-lettered (unknown tenant, closed window): expected unbilled."""
    tenants = sorted(
        {q.tenant for q in quantities} | {c.tenant for c in coverage} | set(refused or {})
    )
    covered = {c.tenant: c for c in coverage}
    out: list[Result] = []
    hint_missing = (
        "billable events without priced lines: if the worker is still pricing, wait and "
        "rerun; otherwise replay those events to the usage-by-tenant topic (the pricing "
        "agent skips what it already priced)"
    )
    for tenant in tenants:
        scope = f"{tenant} {period}"
        c = covered.get(tenant, Coverage(tenant, 0))
        if c.unbilled:
            out.append(
                Result(
                    BILLED, scope, "every billable stored event has its priced lines", 0,
                    f"{c.unbilled} of {c.events} without (e.g. {', '.join(c.sample[:3])})",
                    False, hint_missing,
                )
            )  # fmt: skip
        rows = [q for q in quantities if q.tenant == tenant]
        bad = [q for q in rows if q.stored != q.billed]
        for q in bad:
            out.append(
                Result(
                    BILLED, f"{tenant} window {q.window_id or '(no lines)'} {q.meter}",
                    "quantity usage_events = priced_lines", q.stored, q.billed, False,
                    "lines missing (stored > billed) or lines of events no longer stored "
                    "(billed > stored: usage_events rows deleted or TTL'd); see "
                    "docs/analytics.md, Reconcile",
                )
            )  # fmt: skip
        if not bad and not c.unbilled:
            windows = len({q.window_id for q in rows})
            note = (
                f"; {refused[tenant]} refused by pricing" if refused and refused.get(tenant) else ""
            )
            out.append(
                Result(
                    BILLED, scope, "quantities per meter and window",
                    "equal",
                    f"{c.events} billable events; {len(rows)} meter-windows in {windows} "
                    f"window(s) agree{note}",
                    True,
                )
            )  # fmt: skip
    return out


def rollup_results(checks: Sequence[Check], *, tenant: str | None = None) -> list[Result]:
    """Today's reconcile.sql checks (lines = rollups, events = usage_hourly) as Results:
    one OK line per tenant, a BAD line per disagreeing check."""
    out: list[Result] = []
    picked = [c for c in checks if tenant is None or c.tenant == tenant]
    for t in sorted({c.tenant for c in picked}):
        mine = [c for c in picked if c.tenant == t]
        bad = [c for c in mine if not c.ok]
        for c in bad:
            out.append(
                Result(
                    ROLLUPS, f"{t} {c.currency}".strip(), c.check, c.expected, c.actual, False,
                    "a rollup missed or double-counted inserts: `nodemeter rebuild` "
                    "recomputes the rollups from the base tables (stop the worker first)",
                )
            )  # fmt: skip
        if not bad:
            out.append(
                Result(ROLLUPS, f"{t} all history", "rollups = priced_lines and usage_events",
                       "equal", f"{len(mine)} checks agree", True)
            )  # fmt: skip
    return out


def add_statement_checks(checks: list[Result], statements: Sequence[Result] = ()) -> list[Result]:
    """The hook for statements (issue 14 part 1, ``nodemeter statement``): the checks
    that each statement's total equals the sum of its priced lines are appended here,
    after lines = rollups, under the name :data:`STATEMENTS`. Until statements exist
    there is nothing to add; ``checks`` is returned as it is."""
    checks.extend(statements)
    return checks


def exit_status(checks: Sequence[Result]) -> int:
    """0 when every check is OK, 1 when any is BAD."""
    return 0 if all(c.ok for c in checks) else 1
