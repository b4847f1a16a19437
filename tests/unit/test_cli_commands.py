"""``nodemeter``'s commands come from per-package tables registered as entry points, and
``nodemeter X`` imports only X's module (issue 13, part 4)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

from nodemeter import cli

ROOT = Path(__file__).resolve().parents[2]


def test_each_package_registers_its_table_and_every_module_exists() -> None:
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert sorted(eps[cli.ENTRY_POINT_GROUP].values()) == sorted(cli._BUILTIN_TABLES)
    table = cli.commands()
    assert table["emit"][0] == "nodemeter.emit_cli" and table["worker"][0].startswith(
        "nodemeter_stream."
    )
    for name, (module, help_text) in table.items():
        assert importlib.util.find_spec(module) is not None, name
        assert help_text and "\n" not in help_text


def test_a_command_imports_only_its_own_module() -> None:
    probe = (
        "import sys\nfrom nodemeter.cli import main\n"
        "try:\n    main(['sql', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.endswith('_cli')))"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "['nodemeter_stream.analytics.sql_cli']"
