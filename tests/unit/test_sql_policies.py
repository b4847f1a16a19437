"""The per-tenant analyst recipe: generated SQL and users.xml (golden, pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nodemeter.errors import ConfigError, InvalidUsageError
from nodemeter_stream.analytics.policies import (
    Limits,
    main,
    password_sha256,
    policy_name,
    policy_sql,
    tenant_filter,
    users_xml,
)

TABLES = ["cost_hourly", "priced_lines", "request_costs"]
H = password_sha256("s3cret")
KW: dict[str, object] = {
    "database": "nm",
    "tenant": "acme",
    "user": "u",
    "tables": TABLES,
    "password_sha256_hex": H,
}


def test_policy_sql_golden() -> None:
    stmts = policy_sql(
        database="nm", tenant="acme-eu", user="analyst_acme", tables=TABLES, password_sha256_hex=H
    )
    ident = f"IDENTIFIED WITH sha256_hash BY '{H}' HOST LOCAL"
    assert stmts == [
        "CREATE SETTINGS PROFILE OR REPLACE nodemeter_analyst SETTINGS readonly = 1 CONST, "
        "max_memory_usage = 4000000000 CONST, max_execution_time = 300 CONST, "
        "max_concurrent_queries_for_user = 4 CONST",
        "CREATE ROLE IF NOT EXISTS nodemeter_analyst",
        "REVOKE ALL ON *.* FROM nodemeter_analyst",
        "GRANT SELECT ON nm.cost_hourly TO nodemeter_analyst",
        "GRANT SELECT ON nm.priced_lines TO nodemeter_analyst",
        "GRANT SELECT ON nm.request_costs TO nodemeter_analyst",
        f"CREATE USER IF NOT EXISTS analyst_acme {ident}",
        f"ALTER USER analyst_acme {ident} DEFAULT DATABASE nm SETTINGS PROFILE 'nodemeter_analyst'",
        "REVOKE ALL ON *.* FROM analyst_acme",
        "GRANT nodemeter_analyst TO analyst_acme",
        "ALTER USER analyst_acme DEFAULT ROLE nodemeter_analyst",
        "CREATE ROW POLICY OR REPLACE `nodemeter:acme-eu:analyst_acme` ON nm.cost_hourly, "
        "nm.priced_lines, nm.request_costs FOR SELECT USING tenant = 'acme-eu' "
        "AS PERMISSIVE TO analyst_acme",
    ]
    assert "s3cret" not in "".join(stmts)


def test_policy_names_are_per_tenant_and_user_and_never_collide() -> None:
    # two analysts of one tenant, and tenants equal after punctuation was replaced
    pairs = [("acme", "ana"), ("acme", "bob"), ("acme.eu", "ana"), ("acme_eu", "ana")]
    pairs += [("a:b", "c"), ("a", "b_c"), ("a:b_c", "d")]
    names = [policy_name(t, u) for t, u in pairs]
    assert len(set(names)) == len(names)
    for (t, u), name in zip(pairs, names, strict=True):
        stmt = policy_sql(**(KW | {"tenant": t, "user": u}))[-1]  # type: ignore[arg-type]
        assert stmt.startswith(f"CREATE ROW POLICY OR REPLACE {name} ON ")
        assert stmt.endswith(f"TO {u}")  # the user's own, never a shared name


def test_every_statement_can_run_twice() -> None:
    idempotent = (
        "CREATE ROLE IF NOT EXISTS ",
        "CREATE USER IF NOT EXISTS ",
        "CREATE SETTINGS PROFILE OR REPLACE ",
        "CREATE ROW POLICY OR REPLACE ",
        "ALTER USER ",
        "GRANT ",
        "REVOKE ",
    )
    for stmt in policy_sql(**KW):  # type: ignore[arg-type]
        assert stmt.startswith(idempotent), stmt
    # the user's settings (password, hosts, profile) are set on every run, not only
    # when the user is created
    alter = [s for s in policy_sql(**KW) if s.startswith("ALTER USER u IDENTIFIED")]  # type: ignore[arg-type]
    assert len(alter) == 1 and "SETTINGS PROFILE 'nodemeter_analyst'" in alter[0]


def test_a_password_hash_is_required() -> None:
    for form in (policy_sql, users_xml):
        with pytest.raises(ConfigError, match="password"):
            form(**(KW | {"password_sha256_hex": None}))  # type: ignore[operator]
        with pytest.raises(ConfigError, match="64 hex"):
            form(**(KW | {"password_sha256_hex": "secret"}))  # type: ignore[operator]
    assert "no_password" not in "".join(policy_sql(**KW))  # type: ignore[arg-type]


def test_hosts_can_be_restricted() -> None:
    kw = KW | {"hosts": ["10.1.2.0/24", "2001:db8::1"]}
    assert "HOST IP '10.1.2.0/24', IP '2001:db8::1/128'" in policy_sql(**kw)[6]  # type: ignore[arg-type]
    assert "HOST ANY" in policy_sql(**(KW | {"hosts": ["any"]}))[6]  # type: ignore[arg-type]
    doc = ET.fromstring(users_xml(**kw))  # type: ignore[arg-type]
    assert [e.text for e in doc.findall("users/u/networks/ip")] == [
        "10.1.2.0/24",
        "2001:db8::1/128",
    ]
    with pytest.raises(ConfigError, match="host"):
        policy_sql(**(KW | {"hosts": ["10.0.0.0/8 OR 1"]}))  # type: ignore[arg-type]


def test_users_xml_grants_only_the_filtered_tables() -> None:
    doc = ET.fromstring(users_xml(**KW))  # type: ignore[arg-type]
    user = doc.find("users/u")
    assert user is not None
    assert user.findtext("password_sha256_hex") == H
    assert user.find("no_password") is None
    assert user.find("allow_databases") is None  # never the whole database
    assert [e.text for e in user.findall("networks/ip")] == ["::1", "127.0.0.1"]
    assert [q.text for q in user.findall("grants/query")] == [
        f"GRANT SELECT ON nm.{t}" for t in TABLES
    ]
    assert user.findtext("profile") == "nodemeter_analyst"
    profile = doc.find("profiles/nodemeter_analyst")
    assert profile is not None
    assert {e.tag: e.text for e in profile} == {
        "readonly": "1",
        "max_memory_usage": "4000000000",
        "max_execution_time": "300",
        "max_concurrent_queries_for_user": "4",
    }
    filters = {t.tag: t.findtext("filter") for t in user.findall("databases/nm/*")}
    assert filters == dict.fromkeys(TABLES, "tenant = 'acme'")


def test_the_embedded_form_is_the_passwordless_default_user_only() -> None:
    kw = KW | {"user": "default", "password_sha256_hex": None, "embedded": True}
    doc = ET.fromstring(users_xml(**kw))  # type: ignore[arg-type]
    assert doc.find("users/default/no_password") is not None
    with pytest.raises(ConfigError, match="default"):
        users_xml(**(kw | {"user": "ana"}))  # type: ignore[arg-type]


def test_limits_are_checked() -> None:
    assert (
        "max_memory_usage = 1000 CONST"
        in policy_sql(
            **(KW | {"limits": Limits(max_memory_usage=1000)})  # type: ignore[arg-type]
        )[0]
    )
    with pytest.raises(ConfigError, match="max_execution_time"):
        Limits(max_execution_time=0)


@pytest.mark.parametrize("tenant", ["acme' OR 1=1 --", "", "a b", "x\\'", "a`b"])
def test_tenants_that_could_break_the_filter_are_refused(tenant: str) -> None:
    with pytest.raises(InvalidUsageError):
        tenant_filter(tenant)
    with pytest.raises(InvalidUsageError):
        policy_name(tenant, "u")


@pytest.mark.parametrize(
    ("kw", "bad"),
    [
        ({"user": "a;DROP"}, "user"),
        ({"database": "x.y"}, "database"),
        ({"tables": ["t t"]}, "table"),
    ],
)
def test_identifiers_are_checked(kw: dict[str, object], bad: str) -> None:
    for form in (policy_sql, users_xml):
        with pytest.raises(ConfigError, match=bad):
            form(**(KW | kw))  # type: ignore[operator]


def test_no_tables_is_an_error() -> None:
    with pytest.raises(ConfigError, match="migrate"):
        policy_sql(**(KW | {"tables": []}))  # type: ignore[arg-type]


def test_command_prints_the_recipe(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["--tenant", "acme", "--user", "ana", "--tables", "priced_lines"]
    assert main(base) == 2  # no password given
    assert "password" in capsys.readouterr().err
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    assert main([*base, "--password-file", str(pw), "--host", "10.0.0.0/8"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("FOR SELECT USING tenant = 'acme' AS PERMISSIVE TO ana;\n")
    assert f"BY '{H}' HOST IP '10.0.0.0/8'" in out and "s3cret" not in out
    monkeypatch.setenv("NODEMETER_ANALYST_PASSWORD", "s3cret")
    assert main([*base, "--xml"]) == 0
    out = capsys.readouterr().out
    assert "<priced_lines><filter>tenant = 'acme'</filter></priced_lines>" in out
    assert f"<password_sha256_hex>{H}</password_sha256_hex>" in out
    assert main(["--tenant", "acme", "--tables", "priced_lines", "--embedded"]) == 0
    assert "<default>" in capsys.readouterr().out
    assert main([*base, "--password-sha256", "nothex"]) == 2
