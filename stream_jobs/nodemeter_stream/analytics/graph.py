"""The workflow graph of a set of requests, from their spans (pure).

Spans carry their parent span, their branch path and the time they ended; the
SDK gives a task or thread forked under a span its own branch path (parent path
+ ".N"). For the children of one parent, ordered by end time:

- children on the parent's own path (the shortest path among them) ran one after
  another: an edge from each to the next, unless a forked branch ended in between;
- a child on a forked path starts after the last sequential child that ended
  before it (fork edge) and the next sequential child waits for it (join edge);
- a parent that recorded usage itself is drawn before its first children
  (nesting edge).

Each edge counts the requests that took it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from nodemeter_stream.analytics.report import Edge


@dataclass(frozen=True)
class SpanRow:
    request_id: str
    workflow: str
    span_id: str
    parent_span_id: str
    branch_path: str
    node_id: str
    ended_at: datetime


def _depth(path: str) -> int:
    return 0 if not path else path.count(".") + 1


def request_edges(spans: list[SpanRow]) -> set[tuple[str, str]]:
    """Edges (from node, to node) of one request."""
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[SpanRow]] = defaultdict(list)
    for s in spans:
        children[s.parent_span_id].append(s)
    edges: set[tuple[str, str]] = set()
    for parent_id, kids in children.items():
        kids.sort(key=lambda s: (s.ended_at, s.branch_path, s.span_id))
        parent = by_id.get(parent_id)
        # the parent's own path; for a parent that recorded nothing, the shallowest path
        if parent is not None:
            base = parent.branch_path
        else:
            base = min((k.branch_path for k in kids), key=lambda p: (_depth(p), p))
        main = [k for k in kids if k.branch_path == base]
        forks = [k for k in kids if k.branch_path != base]
        if parent is not None:
            first = main[0] if main else kids[0]
            edges.add((parent.node_id, first.node_id))
        for a, b in pairwise(main):
            if not any(a.ended_at <= f.ended_at <= b.ended_at for f in forks):
                edges.add((a.node_id, b.node_id))
        for f in forks:
            before = [m for m in main if m.ended_at <= f.ended_at]
            after = [m for m in main if m.ended_at > f.ended_at]
            if before:
                edges.add((before[-1].node_id, f.node_id))
            elif parent is not None:
                edges.add((parent.node_id, f.node_id))
            if after:
                edges.add((f.node_id, after[0].node_id))
    return {(a, b) for a, b in edges if a != b}


def execution_edges(spans: Iterable[SpanRow]) -> tuple[Edge, ...]:
    """Edges of all requests, each with the number of requests that took it."""
    per_request: dict[tuple[str, str], list[SpanRow]] = defaultdict(list)
    for s in spans:
        per_request[(s.workflow, s.request_id)].append(s)
    counts: Counter[tuple[str, str, str]] = Counter()
    for (workflow, _), rows in per_request.items():
        for a, b in request_edges(rows):
            counts[(workflow, a, b)] += 1
    return tuple(Edge(w, a, b, n) for (w, a, b), n in sorted(counts.items()))
