"""Per-tenant analyst access on chDB: with the users.xml recipe, an analyst sees only
its tenant's rows in every table and view of the database, or is refused; the library
queries work and return only that tenant; the analyst cannot write or lift its limits.

chDB has no SQL access control (CREATE USER fails: no writable access storage;
EXECUTE AS is disabled), so the SQL form (policies.policy_sql) is parsed by the real
engine and pinned by golden tests in tests/unit/test_sql_policies.py, and the file form
is run here: a store opened with a config whose users file restricts the (only,
``default``) user. One process owns a chDB path, so the store is filled and read in
subprocesses.
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

# Fill the store, then give every table with a `tenant` column rows of both tenants
# (default values elsewhere), so an empty table cannot hide a leak; and count, as the
# administrator, each table's rows per tenant. Every table and view is listed.
SEED = """
import json, sys
sys.path.insert(0, {here!r})
from analytics_data import load_known
from nodemeter_stream.sink.migrate import migrate
from nodemeter_stream.sink.store import ClickHouseConfig, connect
from nodemeter_stream.analytics.policies import tenant_tables, users_xml
c = connect(ClickHouseConfig(url="chdb://{store}", database="nm"))
migrate(c, verbose=False)
load_known(c)
tables = c.query(
    "SELECT name, engine, name IN (SELECT table FROM system.columns "
    "WHERE database = 'nm' AND name = 'tenant') FROM system.tables "
    "WHERE database = 'nm' ORDER BY name").result_rows
for name, engine, has_tenant in tables:
    if not engine.endswith("MergeTree"):
        continue
    for tenant in ("acme", "globex"):
        if has_tenant and not c.query(
                f"SELECT count() FROM nm.{{name}} WHERE tenant = '{{tenant}}'").result_rows[0][0]:
            c.command(f"INSERT INTO nm.{{name}} (tenant) VALUES ('{{tenant}}')")
    if not has_tenant and not c.query(f"SELECT count() FROM nm.{{name}}").result_rows[0][0]:
        c.command(f"INSERT INTO nm.{{name}} SELECT * FROM generateRandom() LIMIT 1")
out = {{}}
for name, engine, has_tenant in tables:
    per = c.query(f"SELECT tenant, count() FROM nm.{{name}} GROUP BY tenant") if has_tenant \\
        else c.query(f"SELECT '', count() FROM nm.{{name}}")
    out[name] = {{"engine": engine, "tenant": bool(has_tenant),
                 "rows": {{str(t): int(n) for t, n in per.result_rows}}}}
open({users!r}, "w").write(
    users_xml(database="nm", tenant="acme", user="default", tables=tenant_tables(c),
              embedded=True))
print(json.dumps(out))
"""

READ = """
import json, sys
from datetime import UTC, datetime
import clickhouse_connect
from nodemeter_stream.analytics import queries
c = clickhouse_connect.get_client(interface="chdb", path="{store}?config-file={config}")
c.database = "nm"
seen, merged = {{}}, {{}}
for name, info in json.loads(sys.argv[1]).items():
    # directly, and through the merge() table function
    for into, src in ((seen, f"nm.{{name}}"), (merged, f"merge('nm', '^{{name}}$')")):
        q = (f"SELECT tenant, count() FROM {{src}} GROUP BY tenant" if info["tenant"]
             else f"SELECT '', count() FROM {{src}}")
        try:
            into[name] = {{str(t): int(n) for t, n in c.query(q).result_rows}}
        except Exception as exc:
            # merge() leaves out the tables the user may not read: none left, refused
            refused = "ACCESS_DENIED" in str(exc) or "CANNOT_EXTRACT_TABLE_STRUCTURE" in str(exc)
            into[name] = "refused" if refused else str(exc)[:300]
out = {{"seen": seen, "merged": merged}}
for probe in ("SELECT count() FROM nm.priced_lines SETTINGS max_memory_usage = 99999999999",
              "INSERT INTO nm.usage_events (event_id, tenant) VALUES ('x', 'globex')",
              "SELECT count() FROM file('/etc/passwd', 'LineAsString')"):
    try:
        c.query(probe)
        out[probe] = "allowed"
    except Exception as exc:
        s = str(exc)
        out[probe] = next((k for k in ("ACCESS_DENIED", "READONLY") if k in s), s[:300])
period = dict(start=datetime(2026, 10, 1, tzinfo=UTC), end=datetime(2026, 12, 1, tzinfo=UTC))
out["node_costs_globex"] = queries.run(c, "node_costs", tenant="globex", **period).rows
out["node_costs_acme"] = len(queries.run(c, "node_costs", tenant="acme", **period).rows)
out["reconcile_tenants"] = sorted({{r[0] for r in queries.run(c, "reconcile").rows}})
out["limits"] = c.query("SELECT getSetting('readonly'), getSetting('max_memory_usage')").result_rows
print(json.dumps(out, default=str))
"""


def py(code: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def seed(tmp_path: Path) -> tuple[Path, Path, dict[str, dict[str, object]]]:
    store, users = tmp_path / "store", tmp_path / "users.xml"
    admin = json.loads(py(SEED.format(here=str(HERE), store=store, users=str(users))))
    return store, users, admin


def test_an_analyst_sees_only_its_rows_in_every_table_and_view_or_is_refused(
    tmp_path: Path,
) -> None:
    store, users, admin = seed(tmp_path)
    config = tmp_path / "config.xml"
    config.write_text(
        "<clickhouse><user_directories><users_xml>"
        f"<path>{users}</path></users_xml></user_directories></clickhouse>"
    )
    out = json.loads(py(READ.format(store=store, config=config), json.dumps(admin)))
    seen = out["seen"]
    assert set(seen) == set(admin) and len(admin) >= 15  # every table and view, none skipped
    readable = []
    for name, info in admin.items():
        rows = info["rows"]
        assert isinstance(rows, dict)
        if seen[name] == "refused":
            continue
        # readable: exactly the tenant's own rows, and other tenants exist there
        assert info["tenant"], f"{name} has no tenant column and is readable"
        assert rows.get("globex"), f"{name}: the seed left no foreign rows to leak"
        assert seen[name] == {"acme": rows["acme"]}, name
        readable.append(name)
    # what is refused: materialized views and tables without a tenant column, not more
    refused = {n for n, s in seen.items() if s == "refused"}
    assert refused == {
        n for n, i in admin.items() if i["engine"] == "MaterializedView" or not i["tenant"]
    }
    assert {"price_book_rates", "cost_hourly_mv", "usage_hourly_mv"} <= refused
    assert {"priced_lines", "usage_events", "cost_hourly", "request_costs"} <= set(readable)
    for name in seen:  # the merge() table function: the same, no more
        assert out["merged"][name] == seen[name], (name, out["merged"][name])
    assert out["SELECT count() FROM file('/etc/passwd', 'LineAsString')"] == "ACCESS_DENIED"
    assert out["INSERT INTO nm.usage_events (event_id, tenant) VALUES ('x', 'globex')"] in (
        "READONLY",
        "ACCESS_DENIED",
    )
    assert (
        out["SELECT count() FROM nm.priced_lines SETTINGS max_memory_usage = 99999999999"]
        == "READONLY"
    )
    assert out["limits"] == [[1, 4_000_000_000]]
    # the library queries still work, and see one tenant
    assert out["node_costs_globex"] == []  # globex exists, but not for this analyst
    assert out["node_costs_acme"] >= 4
    assert out["reconcile_tenants"] == ["acme"]


def test_the_same_store_without_the_recipe_sees_every_tenant(tmp_path: Path) -> None:
    # the control: the restriction comes from the users file, not from the data
    store, _, admin = seed(tmp_path)
    assert set(admin["priced_lines"]["rows"]) == {"acme", "globex"}  # type: ignore[arg-type]
    code = (
        "import clickhouse_connect\n"
        f"c = clickhouse_connect.get_client(interface='chdb', path={str(store)!r})\n"
        "print(c.query('SELECT DISTINCT tenant FROM nm.cost_hourly_mv ORDER BY 1').result_rows)\n"
    )
    assert py(code) == "[('acme',), ('globex',)]"


PARSE = """
import json, sys, clickhouse_connect
c = clickhouse_connect.get_client(interface="chdb", path=":memory:")
print(json.dumps([c.query("SELECT formatQuery({s:String})", parameters={"s": s}).result_rows[0][0]
                  for s in json.loads(sys.argv[1])]))
"""


def test_the_sql_recipe_parses_in_the_real_engine() -> None:
    # chDB cannot run access-control statements (no writable access storage), but its
    # parser is the server's: every statement of the recipe must parse.
    from nodemeter_stream.analytics.policies import password_sha256, policy_sql

    stmts = []
    for hosts in ([], ["any"], ["10.0.0.0/8", "2001:db8::/32"]):
        stmts += policy_sql(
            database="nm",
            tenant="acme.eu",
            user="analyst_acme",
            tables=["priced_lines", "request_costs"],
            password_sha256_hex=password_sha256("x"),
            hosts=hosts,
        )
    formatted = json.loads(py(PARSE, json.dumps(stmts)))
    assert len(formatted) == len(stmts)
    policy = formatted[-1]
    assert policy.startswith("CREATE ROW POLICY OR REPLACE `nodemeter:acme.eu:analyst_acme` ON")
    assert policy.endswith("FOR SELECT USING tenant = 'acme.eu' TO analyst_acme")
    assert "HOST IP '10.0.0.0/8', '2001:db8::/32'" in formatted[-6]
