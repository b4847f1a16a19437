"""The pure stages import no faust, kafka or clickhouse (the layout's one rule).

Walks every module of ``nodemeter_stream.ingest`` and ``nodemeter_stream.pricing`` and
the pure sink modules (tokens, progress, the cluster schema), and fails on an import of
an I/O library at any depth of the file (function-level imports count too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "stream_jobs" / "nodemeter_stream"
PURE = [
    *sorted((PKG / "ingest").glob("*.py")),
    *sorted((PKG / "pricing").glob("*.py")),
    PKG / "sink" / "tokens.py",
    PKG / "sink" / "progress.py",
    PKG / "sink" / "cluster.py",
]
FORBIDDEN = ("faust", "mode", "aiokafka", "confluent_kafka", "kafka", "clickhouse_connect", "chdb")
# pure modules may use nodemeter_stream's pure parts only
ALLOWED_INTERNAL = ("nodemeter_stream.ingest", "nodemeter_stream.pricing", "nodemeter_stream.sink.tokens",
                    "nodemeter_stream.sink.progress")  # fmt: skip


def imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PKG)))
def test_pure_stage_imports_no_io_library(path: Path) -> None:
    assert path.exists(), path
    bad = [n for n in imports(path) if n.split(".")[0] in FORBIDDEN]
    assert not bad, f"{path.name} imports {bad}: keep I/O in agents/ or sink/"
    internal = [n for n in imports(path) if n.startswith("nodemeter_stream")]
    assert all(n.startswith(ALLOWED_INTERNAL) for n in internal), internal


def test_the_walk_sees_a_forbidden_import(tmp_path: Path) -> None:
    p = tmp_path / "m.py"
    p.write_text("def f():\n    import faust\n    from clickhouse_connect import get_client\n")
    assert imports(p) == ["faust", "clickhouse_connect"]
