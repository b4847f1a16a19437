"""Secrets never printed: config reprs, URL errors, librdkafka settings (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodemeter.errors import ConfigError, RegistryError
from nodemeter.meter import MeterConfig
from nodemeter.redact import is_secret, redact_mapping, redact_url
from nodemeter.registry import RegistryClient
from nodemeter_stream.sink.store import ClickHouseConfig, server_password

SECRET = "s3cr3t-Xy"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://api:{SECRET}@reg.example:8081/path", "https://api:***@reg.example:8081/path"),
        (f"http://h:8123/?user=u&password={SECRET}", "http://h:8123/?user=u&password=***"),
        (f"http://h/?access_token={SECRET}&db=x", "http://h/?access_token=***&db=x"),
        (f"http://h/?API_KEY={SECRET}", "http://h/?API_KEY=***"),
        (f"http://u:{SECRET}@[::1]:8123/?pwd={SECRET}", "http://u:***@[::1]:8123/?pwd=***"),
        (f"http://u:{SECRET}@h:notaport/", "http://***"),
        ("http://h:8123/?database=nm", "http://h:8123/?database=nm"),
        ("chdb:///var/lib/nm", "chdb:///var/lib/nm"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)


def test_secret_settings_are_masked() -> None:
    conf = {
        "sasl.password": SECRET,
        "sasl.oauthbearer.config": f"principal=svc clientSecret={SECRET}",
        "sasl.oauthbearer.client.secret": SECRET,
        "ssl.key.pem": SECRET,
        "sasl.jaas.config": SECRET,
        "linger.ms": 5,
        "sasl.mechanism": "OAUTHBEARER",
    }
    shown = redact_mapping(conf)
    assert SECRET not in repr(shown)
    assert shown["linger.ms"] == 5 and shown["sasl.mechanism"] == "OAUTHBEARER"
    assert not is_secret("bootstrap.servers")


def test_meter_config_repr_hides_the_registry_password_and_oauth_config() -> None:
    cfg = MeterConfig(
        registry_url=f"https://api:{SECRET}@reg.example:8081",
        producer_config={"sasl.oauthbearer.config": f"clientSecret={SECRET}"},
    )
    text = repr(cfg)
    assert SECRET not in text
    assert "registry_url='https://api:***@reg.example:8081'" in text
    assert "'sasl.oauthbearer.config': '***'" in text


@pytest.mark.parametrize(
    "url", [f"ftp://u:{SECRET}@reg:8081", f"http://u:{SECRET}@reg:port", f"http://:{SECRET}@"]
)
def test_registry_bad_url_error_hides_the_password(url: str) -> None:
    with pytest.raises(RegistryError) as err:
        RegistryClient(url)
    assert SECRET not in str(err.value)


def test_clickhouse_config_hides_query_passwords() -> None:
    cfg = ClickHouseConfig(url=f"http://h:8123/?user=u&password={SECRET}", database="nm")
    assert SECRET not in cfg.redacted() and SECRET not in repr(cfg)
    with pytest.raises(ConfigError) as err:
        ClickHouseConfig(url=f"ftp://u:{SECRET}@h/?password={SECRET}", database="nm")
    assert SECRET not in str(err.value)


def test_server_password_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODEMETER_CLICKHOUSE_PASSWORD", raising=False)
    monkeypatch.delenv("NODEMETER_CLICKHOUSE_PASSWORD_FILE", raising=False)
    assert server_password() is None
    monkeypatch.setenv("NODEMETER_CLICKHOUSE_PASSWORD", "from-env")
    assert server_password() == "from-env"
    f = tmp_path / "pw"
    f.write_text("from-file\nignored\n")
    monkeypatch.setenv("NODEMETER_CLICKHOUSE_PASSWORD_FILE", str(f))
    assert server_password() == "from-file"  # the file wins
    monkeypatch.setenv("NODEMETER_CLICKHOUSE_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot read"):
        server_password()
