"""The README's TypeScript and Go examples compile against the SDKs as they are.

Each five-line example is cut out of README.md, wrapped in the few lines a program
needs (a package, imports, the application's own ``ask``/``body``), and compiled: the TS
one with the SDK's own ``tsc`` (strict), the Go one with ``go vet`` in a module that
points at ``producers/go``. A renamed function or option fails here, not in a reader's
editor."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TS = ROOT / "producers" / "ts"
GO_SDK = ROOT / "producers" / "go"

pytestmark = pytest.mark.slow


def _block(lang: str) -> str:
    blocks = re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    assert len(blocks) == 1, f"README.md should hold one ```{lang} example, has {len(blocks)}"
    lines = blocks[0].rstrip("\n").splitlines()
    assert len(lines) <= 5, f"the README's {lang} example is {len(lines)} lines, not five"
    return blocks[0]


def test_the_typescript_example_compiles(tmp_path: Path) -> None:
    tsc = TS / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.skip("producers/ts has no node_modules (make node-deps): tsc is not there")
    body = _block("ts")
    imports: list[str] = []
    rest: list[str] = []
    for line in body.splitlines():
        (imports if line.startswith("import ") else rest).append(line)
    assert imports == ['import { Meter } from "@nodemeter/sdk";']
    src = tmp_path / "example.ts"
    src.write_text(
        f'import {{ Meter }} from "{TS / "src" / "index"}";\n'
        "declare function ask(q: string): Promise<unknown>;\n"
        'const q = "What did this request cost?";\n'
        "export async function main(): Promise<void> {\n" + "\n".join(rest) + "\n}\n"
    )
    out = subprocess.run(
        [str(tsc), "--noEmit", "--strict", "--target", "es2022", "--module", "commonjs",
         "--moduleResolution", "node", "--types", "node",
         "--typeRoots", str(TS / "node_modules" / "@types"), str(src)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_go_example_compiles(tmp_path: Path) -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed: the Go example cannot be compiled here")
    body = _block("go")
    mod = (GO_SDK / "go.mod").read_text()
    module = re.search(r"^module (\S+)", mod, flags=re.M)
    assert module is not None
    requires = re.findall(r"^require (\S+ \S+)", mod, flags=re.M)
    (tmp_path / "go.mod").write_text(
        "module readmeexample\n\ngo 1.26.0\n\n"
        f"require {module.group(1)} v0.0.0\n"
        + "".join(f"require {r}\n" for r in requires)
        + f"replace {module.group(1)} => {GO_SDK}\n"
    )
    shutil.copy(GO_SDK / "go.sum", tmp_path / "go.sum")
    (tmp_path / "main.go").write_text(
        "package main\n\n"
        f'import (\n\t"context"\n\n\tnodemeter "{module.group(1)}"\n)\n\n'
        'var body = []byte(`{"usage": {"prompt_tokens": 10, "completion_tokens": 2}}`)\n\n'
        "func main() {\n" + body + "}\n"
    )
    out = subprocess.run(
        [go, "vet", "./..."], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        check=False, env={**os.environ, "GOFLAGS": "-mod=mod"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
