"""docs/wire.md against the code: every reason code, every limit.

The reason codes are read from the source (``ast``, not by running it): every ``reason``
argument, default and ``getattr(exc, "reason", default)`` in the modules the worker's
decode, validate, merge and pricing stages run, with f-string codes such as
``f"missing_{name}"`` expanded over the arguments their function is called with. The
doc's dead-letter table must list exactly those; its SDK table the rest of what the SDK
raises at the call site. A reason added to the code without a row fails here, and so does
a row for a reason the code no longer has.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from nodemeter import events

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "wire.md"
SDK = ROOT / "producers" / "nodemeter"
WORKER = ROOT / "stream_jobs" / "nodemeter_stream"

# What classify (ingest/decode.py) runs: the SDK's decoder and rules, then the worker's
# merge (plan.py), pricing and its wiring.
WORKER_SOURCES = [
    *(SDK / f"{m}.py" for m in ("errors", "events", "codec", "avrocheck", "registry")),
    *sorted((WORKER / "ingest").glob("*.py")),
    *sorted((WORKER / "pricing").glob("*.py")),
    *sorted((WORKER / "agents").glob("*.py")),
]
# A reason held in a module constant and written positionally into a dead_letters row.
WORKER_CONSTANTS = {WORKER / "sink" / "clickhouse.py": ["REJECTED"]}
SDK_SOURCES = [SDK / f"{m}.py" for m in ("errors", "events", "context", "meter")]
CODE = re.compile(r"^[a-z][a-z0-9_]*$")


class Unhandled(AssertionError):
    pass


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _enclosing(node: ast.AST, up: dict[ast.AST, ast.AST], kind: type) -> Iterator[ast.AST]:
    while node in up:
        node = up[node]
        if isinstance(node, kind):
            yield node


class Scan:
    def __init__(self, paths: Iterable[Path]) -> None:
        self.trees = {p: ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in paths}
        self.up: dict[ast.AST, ast.AST] = {}
        self.consts: dict[str, str] = {}
        self.position: dict[str, int] = {}  # callable name -> positional index of `reason`
        self.found: set[str] = set()
        for tree in self.trees.values():
            self.up |= _parents(tree)
            for stmt in tree.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                ):
                    self.consts[stmt.targets[0].id] = stmt.value.value
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef):
                    names = [a.arg for a in node.args.posonlyargs + node.args.args]
                    if "reason" in names and node.name != "__init__":
                        self.position[node.name] = names.index("reason")
                    self._defaults(node)
                elif isinstance(node, ast.ClassDef):  # a dataclass with a reason field
                    fields = [
                        s.target.id
                        for s in node.body
                        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                    ]
                    if "reason" in fields:
                        self.position[node.name] = fields.index("reason")

    def _defaults(self, fn: ast.FunctionDef) -> None:
        a = fn.args
        positional = a.posonlyargs + a.args
        pairs = list(zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True))
        pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
        for arg, default in pairs:
            if arg.arg == "reason" and isinstance(default, ast.Constant):
                self.found.add(str(default.value))

    def run(self) -> set[str]:
        for path, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    for expr in self._reason_args(node):
                        self.found |= self._resolve(expr, path)
                elif isinstance(node, ast.FunctionDef) and "tuple[str, str]" in ast.unparse(
                    node.returns or ast.Constant(None)
                ):
                    # (reason, detail) pairs, as decode.storage_problem returns them
                    for ret in ast.walk(node):
                        if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple):
                            self.found |= self._resolve(ret.value.elts[0], path)
                elif (
                    isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "problem" for t in node.targets)
                    and isinstance(node.value, ast.Tuple)
                ):
                    self.found |= self._resolve(node.value.elts[0], path)
        return self.found

    def _reason_args(self, call: ast.Call) -> list[ast.expr]:
        out = [k.value for k in call.keywords if k.arg == "reason"]
        f = call.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        if name == "getattr" and len(call.args) == 3:
            arg = call.args[1]
            if isinstance(arg, ast.Constant) and arg.value == "reason":
                out.append(call.args[2])
        elif name in self.position and len(call.args) > self.position[name]:
            out.append(call.args[self.position[name]])
        return out

    def _resolve(self, expr: ast.expr, path: Path) -> set[str]:
        where = f"{path.relative_to(ROOT)}:{expr.lineno}"
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        if isinstance(expr, ast.Name):
            if expr.id in self.consts:
                return {self.consts[expr.id]}
            return set()  # a parameter or local passed on: resolved where it is made
        if isinstance(expr, ast.Attribute | ast.Subscript):  # exc.reason, d["reason"]: read
            return set()
        if isinstance(expr, ast.JoinedStr):
            return self._expand(expr, where)
        if isinstance(expr, ast.Call) and ast.unparse(expr.func) == "getattr":
            return set()  # getattr(exc, "reason", default): the default is read in its call
        raise Unhandled(f"{where}: a reason this test cannot read: {ast.unparse(expr)}")

    def _expand(self, expr: ast.JoinedStr, where: str) -> set[str]:
        """f"missing_{name}" inside def f(name, ...): over the names f is called with."""
        holes = [v for v in expr.values if isinstance(v, ast.FormattedValue)]
        if len(holes) != 1 or not isinstance(holes[0].value, ast.Name):
            raise Unhandled(f"{where}: an f-string reason with other than one {{name}}")
        param = holes[0].value.id
        fn = next(_enclosing(expr, self.up, ast.FunctionDef), None)
        assert isinstance(fn, ast.FunctionDef), where
        names = [a.arg for a in fn.args.args]
        if param not in names:
            raise Unhandled(f"{where}: {{{param}}} is not a parameter of {fn.name}")
        index = names.index(param)
        # raised only under `if required:`: not for calls that pass required=False
        conditional = any(
            isinstance(n, ast.If) and ast.unparse(n.test) == "required"
            for n in _enclosing(expr, self.up, ast.If)
        )
        out: set[str] = set()
        for tree in self.trees.values():
            for call in ast.walk(tree):
                if not (isinstance(call, ast.Call) and ast.unparse(call.func) == fn.name):
                    continue
                if conditional and any(
                    k.arg == "required" and isinstance(k.value, ast.Constant) and not k.value.value
                    for k in call.keywords
                ):
                    continue
                for value in self._values(call.args[index]):
                    out.add(
                        "".join(
                            value if isinstance(v, ast.FormattedValue) else str(v.value)  # type: ignore[attr-defined]
                            for v in expr.values
                        )
                    )
        return out

    def _values(self, arg: ast.expr) -> list[str]:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return [arg.value]
        if isinstance(arg, ast.Name):  # `for name in ("a", "b"): f(name, ...)`
            for loop in _enclosing(arg, self.up, ast.For):
                assert isinstance(loop, ast.For)
                if (
                    isinstance(loop.target, ast.Name)
                    and loop.target.id == arg.id
                    and isinstance(loop.iter, ast.Tuple | ast.List)
                ):
                    return [str(e.value) for e in loop.iter.elts if isinstance(e, ast.Constant)]
            fn = next(_enclosing(arg, self.up, ast.FunctionDef), None)
            if isinstance(fn, ast.FunctionDef) and arg.id in [a.arg for a in fn.args.args]:
                return []  # a wrapper passing its own parameter on: expanded at its callers
        raise Unhandled(f"line {arg.lineno}: cannot list the values of {ast.unparse(arg)}")


def worker_reasons() -> set[str]:
    scan = Scan(WORKER_SOURCES + list(WORKER_CONSTANTS))
    found = scan.run()
    for path, names in WORKER_CONSTANTS.items():
        tree = scan.trees[path]
        consts = {
            t.id: str(n.value.value)
            for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        found |= {consts[n] for n in names}  # KeyError: the constant moved, update the list
    return found


def sdk_reasons() -> set[str]:
    return Scan(SDK_SOURCES).run()


def table(heading: str) -> dict[str, str]:
    """The first column (a `code`) of the table under ``heading`` -> the row."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    section = text[start + 1 :]
    end = section.find("\n## ", 1)
    rows = {}
    for line in (section if end < 0 else section[:end]).splitlines():
        m = re.match(r"^\| `([^`]+)` \|", line)
        if m:
            rows[m.group(1)] = line
    assert rows, f"no table under {heading!r}"
    return rows


def test_the_scan_finds_what_it_should() -> None:
    # a few from each kind of source, so that a broken scan cannot pass as an empty one
    found = worker_reasons()
    assert {"missing_tenant", "invalid_sequence", "missing_root_span_id"} <= found  # f-strings
    assert "missing_model" not in found  # _check_id(..., required=False)
    assert {"truncated", "bad_enum_index", "registry_not_configured"} <= found
    assert {"future_event_time", "request_too_large", "store_rejected"} <= found  # constants
    assert {"malformed", "unpriceable", "invalid", "oversize"} <= found  # defaults
    assert {"unknown_tenant", "window_closed"} <= found  # pricing
    assert all(CODE.match(r) for r in found), sorted(found)


def test_every_dead_letter_reason_is_in_the_doc() -> None:
    rows = table("Dead-letter reasons")
    found = worker_reasons()
    assert sorted(found - rows.keys()) == [], "reasons the code has and docs/wire.md lacks"
    assert sorted(rows.keys() - found) == [], "reasons docs/wire.md lists and the code lacks"


def test_every_sdk_reason_is_in_the_doc() -> None:
    dead, sdk = table("Dead-letter reasons"), table("Errors at the SDK")
    found = sdk_reasons()
    assert sorted(found - dead.keys() - sdk.keys()) == []
    assert sorted(sdk.keys() - found) == [], "SDK reasons docs/wire.md lists and the code lacks"
    assert not dead.keys() & sdk.keys(), "list a reason in one table"


def test_the_vectors_reasons_are_in_the_doc() -> None:
    rows = table("Dead-letter reasons")
    vectors = ROOT / "schemas" / "vectors"
    seen = {
        v["wire"]["dead_letter"]
        for v in json.loads((vectors / "invalid_records.json").read_text())["vectors"]
        if v["wire"]
    } | {
        v["dead_letter"]
        for v in json.loads((vectors / "invalid_bytes.json").read_text())["vectors"]
        if v["dead_letter"]
    }
    assert seen <= rows.keys()


def _number(cell: str) -> int:
    return int(cell.strip().strip("`").replace(",", "").replace("_", ""))


@pytest.mark.parametrize("name", sorted(events.LIMITS))
def test_the_doc_states_each_quantity_limit(name: str) -> None:
    row = table("Validation limits")[name]
    assert _number(row.split("|")[2]) == events.LIMITS[name]


def test_the_doc_states_the_size_limits() -> None:
    rows = table("Validation limits")
    for code, value in {
        "MAX_ID_LEN": events.MAX_ID_LEN,
        "MAX_ATTRIBUTES": events.MAX_ATTRIBUTES,
        "MAX_ATTRIBUTE_LEN": events.MAX_ATTRIBUTE_LEN,
        "MAX_CUSTOM_METERS": events.MAX_CUSTOM_METERS,
        "MAX_EVENT_BYTES": events.MAX_EVENT_BYTES,
    }.items():
        assert _number(rows[code].split("|")[2]) == value, code
    text = DOC.read_text(encoding="utf-8")
    assert events._TENANT_RE.pattern in text and events._CUSTOM_RE.pattern in text
