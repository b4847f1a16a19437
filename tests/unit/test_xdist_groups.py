"""tests/conftest.py's xdist groups: the fault tests share one (so `make test` runs them
one at a time on one worker), every other test is grouped by its file."""

from __future__ import annotations

import pytest


def group_of(item: pytest.Item) -> str:
    mark = item.get_closest_marker("xdist_group")
    assert mark is not None, f"{item.nodeid} has no xdist group"
    return str(mark.kwargs.get("name", mark.args[0] if mark.args else ""))


def test_every_collected_test_is_grouped_fault_tests_together(
    request: pytest.FixtureRequest,
) -> None:
    items = request.session.items
    assert items, "no collected items to check"
    for item in items:
        expected = "fault" if item.get_closest_marker("fault") else item.nodeid.split("::")[0]
        assert group_of(item) == expected, item.nodeid
