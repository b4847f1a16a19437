"""Per-tenant analyst access on chDB: the users.xml recipe restricts every query of
the library to one tenant's rows, and the analyst cannot write.

chDB has no SQL access control (CREATE USER fails: no writable access storage;
EXECUTE AS is disabled), so the SQL form (policies.policy_sql) is pinned by golden
tests in tests/unit/test_sql_policies.py and the file form is run here: a store opened
with a config whose users file filters the (only) user's rows. One process owns a
chDB path, so the store is filled and read in subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.clickhouse

HERE = Path(__file__).resolve().parent

SEED = """
import sys
sys.path.insert(0, {here!r})
from analytics_data import load_known
from nodemeter_stream.sink.migrate import migrate
from nodemeter_stream.sink.store import ClickHouseConfig, connect
from nodemeter_stream.analytics.policies import tenant_tables, users_xml
c = connect(ClickHouseConfig(url="chdb://{store}", database="nm"))
migrate(c, verbose=False)
load_known(c)
open({users!r}, "w").write(
    users_xml(database="nm", tenant="acme", user="default", tables=tenant_tables(c)))
"""

READ = """
import json, sys
from datetime import UTC, datetime
import clickhouse_connect
from nodemeter_stream.analytics import queries
c = clickhouse_connect.get_client(interface="chdb", path="{store}?config-file={config}")
c.database = "nm"
out = {{}}
for name in ("priced_lines", "usage_events", "cost_hourly", "tenant_spend_daily",
             "request_node_costs", "request_costs", "usage_hourly"):
    out[name] = c.query(f"SELECT DISTINCT tenant FROM {{name}} ORDER BY tenant").result_rows
period = dict(start=datetime(2026, 10, 1, tzinfo=UTC), end=datetime(2026, 12, 1, tzinfo=UTC))
out["node_costs_globex"] = queries.run(c, "node_costs", tenant="globex", **period).rows
out["node_costs_acme"] = len(queries.run(c, "node_costs", tenant="acme", **period).rows)
out["reconcile_tenants"] = sorted({{r[0] for r in queries.run(c, "reconcile").rows}})
try:
    c.command("INSERT INTO usage_events (event_id, tenant, request_id, node_id, span_id, "
              "event_time) VALUES ('x', 'globex', 'r', 'n', 's', now64())")
    out["insert"] = "allowed"
except Exception as exc:
    out["insert"] = "READONLY" if "READONLY" in str(exc) else str(exc)[:200]
print(json.dumps(out, default=str))
"""


def py(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_users_xml_recipe_restricts_an_embedded_store_to_one_tenant(tmp_path: Path) -> None:
    store, users, config = tmp_path / "store", tmp_path / "users.xml", tmp_path / "config.xml"
    py(SEED.format(here=str(HERE), store=store, users=str(users)))
    config.write_text(
        "<clickhouse><user_directories><users_xml>"
        f"<path>{users}</path></users_xml></user_directories></clickhouse>"
    )
    out = json.loads(py(READ.format(store=store, config=config)).strip().splitlines()[-1])
    for table in ("priced_lines", "usage_events", "cost_hourly", "tenant_spend_daily",
                  "request_node_costs", "request_costs", "usage_hourly"):  # fmt: skip
        assert out[table] == [["acme"]], table
    assert out["node_costs_globex"] == []  # globex exists, but not for this analyst
    assert out["node_costs_acme"] == 4
    assert out["reconcile_tenants"] == ["acme"]
    assert out["insert"] == "READONLY"


def test_the_same_store_without_the_recipe_sees_every_tenant(tmp_path: Path) -> None:
    # the control: the restriction comes from the users file, not from the data
    store, users = tmp_path / "store", tmp_path / "users.xml"
    py(SEED.format(here=str(HERE), store=store, users=str(users)))
    code = (
        "import clickhouse_connect\n"
        f"c = clickhouse_connect.get_client(interface='chdb', path={str(store)!r})\n"
        "print(c.query('SELECT DISTINCT tenant FROM nm.priced_lines ORDER BY 1').result_rows)\n"
    )
    assert py(code).strip() == "[('acme',), ('globex',)]"
