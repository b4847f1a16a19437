"""Test modules are imported by basename (rootdir conftest, no packages): two files with
the same name in different test folders stop collection of the whole suite."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_basename() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if "__pycache__" not in path.parts and path.name != "__init__.py":
            seen[path.name].append(str(path.relative_to(TESTS)))
    shared = {
        name: paths for name, paths in seen.items() if len(paths) > 1 and name != "conftest.py"
    }
    assert shared == {}
