"""The workflow graph built from spans: sequence, fork/join and nesting edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nodemeter_stream.analytics.graph import SpanRow, execution_edges, request_edges

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def span(
    sid: str, node: str, ms: int, *, parent: str = "root", path: str = "", req: str = "r1"
) -> SpanRow:
    return SpanRow(req, "rag", sid, parent, path, node, T0 + timedelta(milliseconds=ms))


def rag_request(req: str = "r1", *, swap_branches: bool = False) -> list[SpanRow]:
    """preprocess -> db.query -> llm.answer -> (summarize || classify) -> gpu.rerank."""
    a, b = (20, 30) if not swap_branches else (30, 20)
    return [
        span("s1", "preprocess", 5, req=req),
        span("s2", "db.query", 10, req=req),
        span("s3", "llm.answer", 15, req=req),
        span("s4", "llm.summarize", a, path="1", req=req),
        span("s5", "llm.classify", b, path="2", req=req),
        span("s6", "gpu.rerank", 40, req=req),
    ]


def test_sequence_fork_and_join() -> None:
    assert request_edges(rag_request()) == {
        ("preprocess", "db.query"),
        ("db.query", "llm.answer"),
        ("llm.answer", "llm.summarize"),
        ("llm.answer", "llm.classify"),
        ("llm.summarize", "gpu.rerank"),
        ("llm.classify", "gpu.rerank"),
    }


def test_no_shortcut_edge_across_a_parallel_branch() -> None:
    assert ("llm.answer", "gpu.rerank") not in request_edges(rag_request())


def test_branch_order_does_not_change_the_graph() -> None:
    assert request_edges(rag_request(swap_branches=True)) == request_edges(rag_request())


def test_nesting_edge_from_a_parent_that_recorded_usage() -> None:
    spans = [
        span("p", "agent", 50),
        span("c1", "tool.search", 10, parent="p"),
        span("c2", "llm.plan", 20, parent="p"),
    ]
    assert request_edges(spans) == {("agent", "tool.search"), ("tool.search", "llm.plan")}


def test_nested_branch_paths_fork_from_their_parent_path() -> None:
    spans = [
        span("a", "fetch", 5, path="1"),
        span("b", "fetch.parse", 8, path="1.1", parent="root"),
        span("c", "fetch.index", 9, path="1.2", parent="root"),
        span("d", "merge", 12, path="1"),
    ]
    assert request_edges(spans) == {
        ("fetch", "fetch.parse"), ("fetch", "fetch.index"),
        ("fetch.parse", "merge"), ("fetch.index", "merge"),
    }  # fmt: skip


def test_edges_count_requests() -> None:
    spans = rag_request("r1") + rag_request("r2") + [span("x", "preprocess", 1, req="r3")]
    edges = {(e.parent, e.node): e.requests for e in execution_edges(spans)}
    assert edges[("preprocess", "db.query")] == 2
    assert set(edges.values()) == {2}
    assert all(e.workflow == "rag" for e in execution_edges(spans))


def test_branches_forked_inside_a_recording_parent_hang_off_the_parent() -> None:
    spans = [
        span("f", "features", 10),
        span("a", "llm.a", 20, parent="f", path="0"),
        span("b", "llm.b", 25, parent="f", path="1"),
    ]
    assert request_edges(spans) == {("features", "llm.a"), ("features", "llm.b")}
