"""Progress of record: recovery rules and row layouts (pure), and the forward format."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodemeter_stream.ingest import forward
from nodemeter_stream.sink.progress import (
    INTENT,
    PROGRESS,
    STATE_COLUMNS,
    PartitionProgress,
    StateRow,
    encode_state,
    intent_rows,
    next_version,
    progress_rows,
    ranges,
    recover,
)


def row(scope: str, p: int, version: int, offset: int, first: int = -1) -> StateRow:
    return StateRow(scope, "u", p, "", version, offset, first, False, "")


def test_recover_takes_the_progress_and_an_intent_only_when_newer() -> None:
    got = recover(
        [
            row(PROGRESS, 0, 10, 99),
            row(INTENT, 0, 9, 99, 50),  # the intent of the batch recorded at 10
            row(PROGRESS, 1, 10, 40),
            row(INTENT, 1, 11, 80, 41),  # begun, never recorded: 41..80 in doubt
            row(INTENT, 2, 5, 7, 0),  # nothing recorded yet, a batch was begun
        ]
    )
    assert got[("u", 0)] == PartitionProgress(applied=99, doubt_until=-1)
    assert got[("u", 1)] == PartitionProgress(applied=40, doubt_until=80)
    assert got[("u", 2)] == PartitionProgress(applied=-1, doubt_until=7)
    pp = got[("u", 1)]
    assert [pp.classify(o) for o in (40, 41, 80, 81)] == ["applied", "doubt", "doubt", "new"]


def test_rows_match_the_table_and_versions_grow() -> None:
    spans = ranges([("u", 0, 5), ("u", 0, 3), ("u", 1, 9)])
    assert spans == {("u", 0): (3, 5), ("u", 1): (9, 9)}
    (i0, _), (p0, _) = intent_rows("g", spans), progress_rows("g", spans)
    assert len(i0) == len(p0) == len(STATE_COLUMNS)
    assert i0[:5] == ("g", INTENT, "u", 0, "") and i0[6:8] == (5, 3)
    assert p0[1] == PROGRESS and p0[5] > i0[5]  # recorded after it was begun
    assert next_version() < next_version()


@given(st.lists(st.tuples(st.integers(0, 64), st.integers(0, 2**40), st.binary(max_size=300))))
def test_forward_records_round_trip(entries: list[tuple[int, int, bytes]]) -> None:
    es = [forward.Entry(p, o, b) for p, o, b in entries]
    value = forward.encode(es)
    assert forward.is_forward(value) and forward.decode(value) == es


@pytest.mark.parametrize(
    "value", [b"NMF1", b"NMF1\x01\x00", b"NMF1\x01\x00\x00\x05abc", b"NMF1\x00x", b"\xc3\x01xx"]
)
def test_a_malformed_forward_record_is_a_clear_error(value: bytes) -> None:
    with pytest.raises(forward.ForwardError):
        forward.decode(value)


# JSON values as the agents' states hold them: no floats (money travels as text)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=20,
)


@given(_json)
def test_state_values_read_back_exactly(value: Any) -> None:
    # integers past 64 bits included: json.loads reads them back as integers
    assert json.loads(encode_state(value)) == value


def test_state_values_take_orjson_unless_it_refuses() -> None:
    state = {"tenant": "acme", "units": {"input_tokens|m||": 12}, "parts": [["e1", True, 7]]}
    assert (
        encode_state(state)
        == '{"tenant":"acme","units":{"input_tokens|m||":12},"parts":[["e1",true,7]]}'
    )
    # orjson refuses these; json.dumps writes them as before
    assert encode_state({"q": 2**64}) == '{"q": 18446744073709551616}'
    assert json.loads(encode_state({1: "a"})) == {"1": "a"}
