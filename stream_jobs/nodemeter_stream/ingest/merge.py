"""Merge the spans of one request, from any number of branches, into one request record.

A request's state is the *set* of its usage events (keyed by event_id) plus its end
record, so any interleaving or duplication of the same records gives the same state
and the same record. A request is complete when the end record arrived and the number
of distinct usage events merged reaches the end record's ``span_count`` (the SDK
counts every usage event the request emitted, across all branches); a timeout closes
it as incomplete.

Records are versioned by ``revision`` = the number of distinct records merged (usage
events + end). A record is written when the request completes or times out; a record
arriving after that yields a correction with a higher revision. ClickHouse keeps the
highest revision (ReplacingMergeTree(revision)), so a correction replaces the earlier
record and a stray resend after the state was purged (revision 1) never wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from nodemeter.events import RequestEnd, Status, UsageEvent

_STATUS_RANK = {Status.OK.value: 0, Status.PARTIAL.value: 1, Status.ERROR.value: 2}


def worst_status(statuses: list[str]) -> str:
    return max(statuses, key=lambda s: _STATUS_RANK.get(s, 0), default=Status.OK.value)


def to_us(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, tz=UTC).replace(microsecond=us % 1_000_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanPart:
    """What one usage event contributes to its request."""

    event_id: str
    node_id: str
    span_id: str
    parent_span_id: str
    branch_path: str
    status: str
    billable: bool
    event_time_us: int
    model: str
    workflow: str
    quantities: Mapping[str, int]

    @classmethod
    def of(cls, ev: UsageEvent) -> SpanPart:
        return cls(
            event_id=ev.event_id,
            node_id=ev.node_id,
            span_id=ev.span_id,
            parent_span_id=ev.parent_span_id or "",
            branch_path=ev.branch_path,
            status=ev.status.value,
            billable=ev.billable,
            event_time_us=to_us(ev.event_time),
            model=ev.model or "",
            workflow=ev.workflow,
            quantities=ev.meters.quantities(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EndPart:
    event_id: str
    root_span_id: str
    span_count: int
    status: str
    event_time_us: int
    workflow: str

    @classmethod
    def of(cls, end: RequestEnd) -> EndPart:
        return cls(
            event_id=end.event_id,
            root_span_id=end.root_span_id,
            span_count=end.span_count,
            status=end.status.value,
            event_time_us=to_us(end.event_time),
            workflow=end.workflow,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestState:
    """Everything merged so far for one request (JSON-serialisable for the state table)."""

    tenant: str
    request_id: str
    partition: int
    opened_at_ms: int
    parts: Mapping[str, SpanPart] = field(default_factory=dict)
    end: EndPart | None = None
    closed_at_ms: int = 0  # 0 = open
    emitted_revision: int = 0
    touched_ms: int = 0  # last time a record was merged (retention counts from here)

    @property
    def closed(self) -> bool:
        return self.closed_at_ms > 0

    @property
    def revision(self) -> int:
        return len(self.parts) + (1 if self.end is not None else 0)

    @property
    def spans_seen(self) -> int:
        return len({p.span_id for p in self.parts.values()})

    @property
    def complete(self) -> bool:
        # span_count is what the SDK counted: the usage events the request emitted
        # (one per span unless a span emits several sequences).
        return self.end is not None and len(self.parts) >= self.end.span_count

    def has(self, event_id: str) -> bool:
        return event_id in self.parts or (self.end is not None and self.end.event_id == event_id)

    # --- (de)serialisation for the changelog-backed table ---------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "request_id": self.request_id,
            "partition": self.partition,
            "opened_at_ms": self.opened_at_ms,
            "closed_at_ms": self.closed_at_ms,
            "emitted_revision": self.emitted_revision,
            "touched_ms": self.touched_ms,
            "end": None
            if self.end is None
            else {
                "event_id": self.end.event_id,
                "root_span_id": self.end.root_span_id,
                "span_count": self.end.span_count,
                "status": self.end.status,
                "event_time_us": self.end.event_time_us,
                "workflow": self.end.workflow,
            },
            "parts": [
                [
                    p.event_id,
                    p.node_id,
                    p.span_id,
                    p.parent_span_id,
                    p.branch_path,
                    p.status,
                    p.billable,
                    p.event_time_us,
                    p.model,
                    p.workflow,
                    dict(p.quantities),
                ]
                for p in self.parts.values()
            ],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RequestState:
        parts = {}
        for row in d["parts"]:
            p = SpanPart(
                event_id=row[0],
                node_id=row[1],
                span_id=row[2],
                parent_span_id=row[3],
                branch_path=row[4],
                status=row[5],
                billable=bool(row[6]),
                event_time_us=int(row[7]),
                model=row[8],
                workflow=row[9],
                quantities={str(k): int(v) for k, v in row[10].items()},
            )
            parts[p.event_id] = p
        end = d.get("end")
        return cls(
            tenant=d["tenant"],
            request_id=d["request_id"],
            partition=int(d["partition"]),
            opened_at_ms=int(d["opened_at_ms"]),
            closed_at_ms=int(d["closed_at_ms"]),
            emitted_revision=int(d["emitted_revision"]),
            touched_ms=int(d.get("touched_ms") or d["opened_at_ms"]),
            parts=parts,
            end=None if end is None else EndPart(**end),
        )


def state_key(tenant: str, request_id: str) -> str:
    return f"{tenant}/{request_id}"


def apply(
    state: RequestState | None,
    record: UsageEvent | RequestEnd,
    *,
    now_ms: int,
    partition: int,
    in_place: bool = False,
) -> RequestState:
    """Add one record to a request's state (idempotent: a known event_id changes nothing).

    ``in_place``: the caller owns ``state`` (a copy it made earlier in the same batch) and
    nobody else holds its parts, so they are added to rather than copied."""
    if state is None:
        state = RequestState(
            tenant=record.tenant,
            request_id=record.request_id,
            partition=partition,
            opened_at_ms=now_ms,
        )
    if state.has(record.event_id):
        return state
    if isinstance(record, RequestEnd):
        # A second, different end record for the same request: keep the one with the
        # smaller event_id so the choice does not depend on arrival order.
        if state.end is not None and record.event_id > state.end.event_id:
            return replace(state, touched_ms=max(state.touched_ms, now_ms))
        return replace(state, end=EndPart.of(record), touched_ms=max(state.touched_ms, now_ms))
    parts = state.parts if in_place and isinstance(state.parts, dict) else dict(state.parts)
    parts[record.event_id] = SpanPart.of(record)
    return replace(state, parts=parts, touched_ms=max(state.touched_ms, now_ms))


# --- the merged record -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeUsage:
    node_id: str
    spans: int
    events: int
    billable_events: int
    branch_paths: tuple[str, ...]
    models: tuple[str, ...]
    status: str
    first_at_us: int
    last_at_us: int
    quantities: Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanLink:
    span_id: str
    parent_span_id: str
    node_id: str
    branch_path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    tenant: str
    request_id: str
    revision: int
    complete: bool
    is_correction: bool
    workflow: str
    root_span_id: str
    status: str
    has_end: bool
    expected_spans: int
    spans_seen: int
    events: int
    started_at_us: int
    ended_at_us: int
    node_path: tuple[str, ...]
    branch_paths: tuple[str, ...]
    span_tree: tuple[SpanLink, ...]
    quantities: Mapping[str, int]
    nodes: tuple[NodeUsage, ...]


def _sum(into: dict[str, int], q: Mapping[str, int]) -> None:
    for k, v in q.items():
        into[k] = into.get(k, 0) + v


def build_record(state: RequestState, *, is_correction: bool = False) -> RequestRecord:
    """The request record for a state: a pure function of the merged set."""
    parts = sorted(state.parts.values(), key=lambda p: (p.event_time_us, p.event_id))
    by_node: dict[str, list[SpanPart]] = {}
    for p in parts:
        by_node.setdefault(p.node_id, []).append(p)
    nodes = []
    for node_id, ps in by_node.items():
        q: dict[str, int] = {}
        for p in ps:
            _sum(q, p.quantities)
        nodes.append(
            NodeUsage(
                node_id=node_id,
                spans=len({p.span_id for p in ps}),
                events=len(ps),
                billable_events=sum(1 for p in ps if p.billable),
                branch_paths=tuple(sorted({p.branch_path for p in ps})),
                models=tuple(sorted({p.model for p in ps if p.model})),
                status=worst_status([p.status for p in ps]),
                first_at_us=ps[0].event_time_us,
                last_at_us=ps[-1].event_time_us,
                quantities=dict(sorted(q.items())),
            )
        )
    nodes.sort(key=lambda n: (n.first_at_us, n.node_id))
    total: dict[str, int] = {}
    for n in nodes:
        _sum(total, n.quantities)
    spans: dict[str, SpanLink] = {}
    for p in parts:
        # first event of a span (by time, then id) names its place in the tree
        spans.setdefault(
            p.span_id,
            SpanLink(
                span_id=p.span_id,
                parent_span_id=p.parent_span_id,
                node_id=p.node_id,
                branch_path=p.branch_path,
            ),
        )
    end = state.end
    times = [p.event_time_us for p in parts] + ([end.event_time_us] if end else [])
    statuses = [p.status for p in parts] + ([end.status] if end else [])
    workflow = (
        end.workflow
        if end and end.workflow
        else min((p.workflow for p in parts if p.workflow), default="")
    )
    return RequestRecord(
        tenant=state.tenant,
        request_id=state.request_id,
        revision=state.revision,
        complete=state.complete,
        is_correction=is_correction,
        workflow=workflow,
        root_span_id=end.root_span_id if end else "",
        status=worst_status(statuses),
        has_end=end is not None,
        expected_spans=end.span_count if end else 0,
        spans_seen=state.spans_seen,
        events=len(parts),
        started_at_us=min(times, default=0),
        ended_at_us=max(times, default=0),
        node_path=tuple(n.node_id for n in nodes),
        branch_paths=tuple(sorted({p.branch_path for p in parts})),
        span_tree=tuple(sorted(spans.values(), key=lambda s: s.span_id)),
        quantities=dict(sorted(total.items())),
        nodes=tuple(nodes),
    )


# --- when to write a record ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emission:
    state: RequestState  # the state to store once the record is written
    record: RequestRecord


def due(state: RequestState, *, now_ms: int, timeout_s: float) -> Emission | None:
    """The record to write now, if any: on completion, on timeout, or as a correction."""
    if state.closed:
        if state.revision <= state.emitted_revision:
            return None
        record = build_record(state, is_correction=True)
    elif state.complete or now_ms - state.opened_at_ms >= timeout_s * 1000:
        record = build_record(state)
    else:
        return None
    closed_at = state.closed_at_ms or max(now_ms, 1)
    return Emission(replace(state, closed_at_ms=closed_at, emitted_revision=state.revision), record)


def purgeable(state: RequestState, *, now_ms: int, retention_s: float) -> bool:
    """A closed request whose state may be dropped (its record is stored)."""
    return (
        state.closed
        and state.revision <= state.emitted_revision
        and now_ms - max(state.closed_at_ms, state.touched_ms) >= retention_s * 1000
    )
