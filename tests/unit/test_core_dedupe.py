"""Dedupe against stored marks with a TTL (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodemeter_stream.ingest.dedupe import SeenMark, expired, is_live, split_fresh


def test_first_occurrence_wins_within_a_batch_and_stored_ids_are_duplicates() -> None:
    stored = {"a"}
    out = split_fresh(["a", "b", "c", "b", "a"], event_id=lambda x: x, is_seen=stored.__contains__)
    assert out.fresh == ["b", "c"]
    assert out.duplicates == ["a", "b", "a"]


@given(st.lists(st.sampled_from("abcdefgh"), max_size=40), st.sets(st.sampled_from("abcdefgh")))
def test_fresh_is_exactly_the_unseen_distinct_ids(ids: list[str], stored: set[str]) -> None:
    out = split_fresh(ids, event_id=lambda x: x, is_seen=stored.__contains__)
    assert sorted(out.fresh) == sorted(set(ids) - stored)
    assert len(out.fresh) + len(out.duplicates) == len(ids)


def test_marks_expire_after_the_ttl() -> None:
    marks = {"old": SeenMark(1_000, 0), "new": SeenMark(9_000, 1)}
    assert expired(marks, now_ms=11_500, ttl_s=10) == ["old"]
    assert is_live(marks["new"], now_ms=11_500, ttl_s=10)
    assert not is_live(marks["new"], now_ms=19_000, ttl_s=10)


def test_mark_json_round_trip() -> None:
    m = SeenMark(123, 3)
    assert SeenMark.from_json(m.to_json()) == m
