"""The per-tenant analyst recipe: generated SQL and users.xml (golden, pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from nodemeter.errors import ConfigError, InvalidUsageError
from nodemeter_stream.analytics.policies import main, policy_sql, tenant_filter, users_xml

TABLES = ["cost_hourly", "priced_lines", "request_costs"]


def test_policy_sql_golden() -> None:
    assert policy_sql(database="nm", tenant="acme-eu", user="analyst_acme", tables=TABLES) == [
        "CREATE ROLE IF NOT EXISTS nodemeter_analyst",
        "GRANT SELECT ON nm.cost_hourly TO nodemeter_analyst",
        "GRANT SELECT ON nm.priced_lines TO nodemeter_analyst",
        "GRANT SELECT ON nm.request_costs TO nodemeter_analyst",
        "CREATE USER IF NOT EXISTS analyst_acme IDENTIFIED WITH no_password DEFAULT DATABASE nm",
        "GRANT nodemeter_analyst TO analyst_acme",
        "ALTER USER analyst_acme DEFAULT ROLE nodemeter_analyst",
        "CREATE ROW POLICY OR REPLACE tenant_acme_eu ON nm.cost_hourly, nm.priced_lines, "
        "nm.request_costs FOR SELECT USING tenant = 'acme-eu' TO analyst_acme",
    ]


def test_users_xml_filters_each_table() -> None:
    doc = ET.fromstring(users_xml(database="nm", tenant="acme", user="ana", tables=TABLES))
    user = doc.find("users/ana")
    assert user is not None
    assert user.findtext("profile") == "nodemeter_analyst"
    assert doc.findtext("profiles/nodemeter_analyst/readonly") == "2"
    filters = {t.tag: t.findtext("filter") for t in user.findall("databases/nm/*")}
    assert filters == dict.fromkeys(TABLES, "tenant = 'acme'")


@pytest.mark.parametrize("tenant", ["acme' OR 1=1 --", "", "a b", "x\\'"])
def test_tenants_that_could_break_the_filter_are_refused(tenant: str) -> None:
    with pytest.raises(InvalidUsageError):
        tenant_filter(tenant)


@pytest.mark.parametrize(
    ("kw", "bad"),
    [
        ({"user": "a;DROP"}, "user"),
        ({"database": "x.y"}, "database"),
        ({"tables": ["t t"]}, "table"),
    ],
)
def test_identifiers_are_checked(kw: dict[str, object], bad: str) -> None:
    args: dict[str, object] = {"database": "nm", "tenant": "acme", "user": "u", "tables": TABLES}
    with pytest.raises(ConfigError, match=bad):
        policy_sql(**(args | kw))  # type: ignore[arg-type]


def test_no_tables_is_an_error() -> None:
    with pytest.raises(ConfigError, match="migrate"):
        policy_sql(database="nm", tenant="acme", user="u", tables=[])


def test_command_prints_the_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tenant", "acme", "--user", "ana", "--tables", "priced_lines"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("FOR SELECT USING tenant = 'acme' TO ana;\n")
    assert main(["--tenant", "acme", "--user", "ana", "--tables", "priced_lines", "--xml"]) == 0
    assert (
        "<priced_lines><filter>tenant = 'acme'</filter></priced_lines>" in capsys.readouterr().out
    )
