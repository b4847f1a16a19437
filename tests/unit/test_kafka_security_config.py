"""Kafka TLS / SASL settings: one configuration, validated, rendered for every client
(issue 13, part 1). No broker here: tests/integration/test_kafka_security.py has those."""

from __future__ import annotations

import logging
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest

from nodemeter.errors import ConfigError, KafkaConnectionError, KafkaSecurityError
from nodemeter.kafka_security import (
    CONFIG_FILE_VAR,
    KEYS,
    KafkaSecurity,
    explain_failure,
    failure_kind,
    read_config_file,
    security_settings,
)
from nodemeter.kafkalog import ErrorWatch, client_conf, security_of, with_logger
from nodemeter.meter import MeterConfig

SECRET = "s3cr3t-Pa55"  # must never show up in a repr, a log line or an error


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (*KEYS, CONFIG_FILE_VAR):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    from nodemeter_stream.devenv.kafka import make_tls

    return make_tls(tmp_path_factory.mktemp("tls"))


def sasl_ssl(tls: Any, **kw: Any) -> KafkaSecurity:
    base: dict[str, Any] = {
        "protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "alice",
        "sasl_password": SECRET,
        "ssl_ca_file": str(tls.ca_file),
    }
    return KafkaSecurity(**{**base, **kw})


# --- defaults and rendering ------------------------------------------------------------


def test_default_is_plaintext_and_adds_only_the_protocol() -> None:
    sec = KafkaSecurity.from_env()
    assert sec.is_plaintext and sec == KafkaSecurity()
    assert sec.librdkafka() == {"security.protocol": "PLAINTEXT"}
    assert sec.aiokafka() == {"security_protocol": "PLAINTEXT"}
    assert sec.ssl_context() is None


def test_sasl_ssl_renders_for_librdkafka_and_aiokafka(tls: Any) -> None:
    sec = sasl_ssl(tls)
    assert sec.librdkafka() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": SECRET,
        "ssl.ca.location": str(tls.ca_file),
        "ssl.endpoint.identification.algorithm": "https",
    }
    kw = sec.aiokafka()
    ctx = kw.pop("ssl_context")
    assert kw == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": SECRET,
    }
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert len(ctx.get_ca_certs()) == 1  # the CA file only, not the system store


def test_mutual_tls_and_no_hostname_check(tls: Any) -> None:
    sec = KafkaSecurity(
        protocol="ssl",
        ssl_ca_file=str(tls.ca_file),
        ssl_cert_file=str(tls.cert_file),
        ssl_key_file=str(tls.key_file),
        ssl_check_hostname=False,
    )
    assert sec.protocol == "SSL" and not sec.uses_sasl
    conf = sec.librdkafka()
    assert conf["ssl.certificate.location"] == str(tls.cert_file)
    assert conf["ssl.key.location"] == str(tls.key_file)
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    ctx = sec.ssl_context()
    assert ctx is not None and not ctx.check_hostname


def test_mechanism_defaults_to_plain_and_is_normalised() -> None:
    sec = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password=SECRET)
    assert sec.sasl_mechanism == "PLAIN" and "ssl_context" not in sec.aiokafka()
    sec = KafkaSecurity(
        protocol="sasl_plaintext",
        sasl_mechanism="scram_sha_256",
        sasl_username="u",
        sasl_password=SECRET,
    )
    assert sec.sasl_mechanism == "SCRAM-SHA-256"


# --- validation: a clear error naming the variable ------------------------------------


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"NODEMETER_KAFKA_SECURITY_PROTOCOL": "TLS"}, ["NODEMETER_KAFKA_SECURITY_PROTOCOL"]),
        (
            {
                "NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "NODEMETER_KAFKA_SASL_MECHANISM": "GSSAPI",
                "NODEMETER_KAFKA_SASL_USERNAME": "u",
                "NODEMETER_KAFKA_SASL_PASSWORD": SECRET,
            },
            ["NODEMETER_KAFKA_SASL_MECHANISM"],
        ),
        (
            {"NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            ["NODEMETER_KAFKA_SASL_USERNAME", "NODEMETER_KAFKA_SASL_PASSWORD"],
        ),
        (
            {
                "NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "NODEMETER_KAFKA_SASL_USERNAME": "u",
            },
            ["NODEMETER_KAFKA_SASL_PASSWORD"],
        ),
        (
            {"NODEMETER_KAFKA_SASL_USERNAME": "u", "NODEMETER_KAFKA_SASL_PASSWORD": SECRET},
            ["NODEMETER_KAFKA_SASL_USERNAME", "PLAINTEXT"],
        ),
        (
            {
                "NODEMETER_KAFKA_SECURITY_PROTOCOL": "SSL",
                "NODEMETER_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem",
            },
            ["NODEMETER_KAFKA_SSL_CA_FILE", "/nonexistent/ca.pem", "no such file"],
        ),
        (
            {
                "NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "NODEMETER_KAFKA_SASL_USERNAME": "u",
                "NODEMETER_KAFKA_SASL_PASSWORD": SECRET,
                "NODEMETER_KAFKA_SSL_CA_FILE": "/etc/hostname",
            },
            ["NODEMETER_KAFKA_SSL_CA_FILE", "uses no TLS"],
        ),
        (
            {"NODEMETER_KAFKA_SECURITY_PROTOCOL": "SSL", "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME": "x"},
            ["NODEMETER_KAFKA_SSL_CHECK_HOSTNAME"],
        ),
        (
            {
                "NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "NODEMETER_KAFKA_SASL_USERNAME": "u",
                "NODEMETER_KAFKA_SASL_PASSWORD": SECRET,
                "NODEMETER_KAFKA_SASL_PASSWORD_FILE": "/etc/hostname",
            },
            ["NODEMETER_KAFKA_SASL_PASSWORD", "NODEMETER_KAFKA_SASL_PASSWORD_FILE", "not both"],
        ),
    ],
)
def test_invalid_settings_name_the_variable_never_the_secret(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], names: list[str]
) -> None:
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        KafkaSecurity.from_env()
    text = str(info.value)
    for name in names:
        assert name in text, text
    assert SECRET not in text


def test_a_ca_file_that_is_not_pem_and_a_lone_cert(tls: Any, tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"NODEMETER_KAFKA_SSL_CA_FILE=.* holds no PEM"):
        KafkaSecurity(protocol="SSL", ssl_ca_file=str(junk))
    with pytest.raises(ConfigError, match="CERT_FILE and NODEMETER_KAFKA_SSL_KEY_FILE go"):
        KafkaSecurity(protocol="SSL", ssl_cert_file=str(tls.cert_file))
    with pytest.raises(ConfigError, match="NODEMETER_KAFKA_SSL_KEY_FILE"):
        # a certificate and a key that do not belong together
        KafkaSecurity(
            protocol="SSL", ssl_cert_file=str(tls.ca_file), ssl_key_file=str(tls.key_file)
        )


def test_secrets_never_in_repr_str_or_describe(tls: Any) -> None:
    sec = sasl_ssl(tls, ssl_check_hostname=False)
    for text in (repr(sec), str(sec), sec.describe(), repr(MeterConfig(kafka_security=sec))):
        assert SECRET not in text, text
    assert "sasl_password=***" in repr(sec)
    assert sec.describe() == (
        f"SASL_SSL, SCRAM-SHA-512 as 'alice', CA {tls.ca_file}, hostname not checked"
    )


def test_worker_config_repr_hides_the_password(tls: Any) -> None:
    from nodemeter_stream.app import WorkerConfig

    cfg = WorkerConfig(bootstrap="k:1", kafka_security=sasl_ssl(tls))
    assert SECRET not in repr(cfg) and "SASL_SSL" in repr(cfg)


# --- environment, password file, config file -------------------------------------------


def test_from_env_with_a_password_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(SECRET + "\n")
    monkeypatch.setenv("NODEMETER_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("NODEMETER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("NODEMETER_KAFKA_SASL_USERNAME", "bob")
    monkeypatch.setenv("NODEMETER_KAFKA_SASL_PASSWORD_FILE", str(pw))
    sec = KafkaSecurity.from_env()
    assert sec.sasl_password == SECRET and sec.sasl_username == "bob"
    pw.write_text("")
    with pytest.raises(ConfigError, match=r"NODEMETER_KAFKA_SASL_PASSWORD_FILE=.*empty"):
        KafkaSecurity.from_env()
    monkeypatch.setenv("NODEMETER_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"NODEMETER_KAFKA_SASL_PASSWORD_FILE=.*cannot read"):
        KafkaSecurity.from_env()


def test_config_file_with_the_same_keys_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls: Any
) -> None:
    f = tmp_path / "kafka.env"
    f.write_text(
        "# nodemeter's Kafka security\n"
        "export NODEMETER_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n"
        "NODEMETER_KAFKA_SASL_MECHANISM = SCRAM-SHA-512\n"
        "NODEMETER_KAFKA_SASL_USERNAME='alice'\n"
        f'NODEMETER_KAFKA_SASL_PASSWORD="{SECRET}"\n'
        f"NODEMETER_KAFKA_SSL_CA_FILE={tls.ca_file}\n"
        "\n"
    )
    monkeypatch.setenv(CONFIG_FILE_VAR, str(f))
    sec = KafkaSecurity.from_env()
    assert sec == sasl_ssl(tls)
    monkeypatch.setenv("NODEMETER_KAFKA_SASL_USERNAME", "carol")
    assert KafkaSecurity.from_env().sasl_username == "carol"


def test_config_file_errors_name_file_and_line_not_the_value(tmp_path: Path) -> None:
    f = tmp_path / "kafka.env"
    f.write_text(f"NODEMETER_KAFKA_SECURITY_PROTOCOL=SSL\n{SECRET}\n")
    with pytest.raises(ConfigError) as info:
        read_config_file(f)
    assert "line 2 is not KEY=VALUE" in str(info.value) and SECRET not in str(info.value)
    f.write_text(f"NODEMETER_KAFKA_SASL_PASWORD={SECRET}\n")
    with pytest.raises(ConfigError) as info:
        read_config_file(f)
    assert "unknown key 'NODEMETER_KAFKA_SASL_PASWORD'" in str(info.value)
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError, match=r"NODEMETER_KAFKA_CONFIG=.*cannot read"):
        read_config_file(tmp_path / "missing.env")


# --- every confluent client gets it -----------------------------------------------------


def _sasl_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEMETER_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("NODEMETER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("NODEMETER_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("NODEMETER_KAFKA_SASL_PASSWORD", SECRET)


def test_client_conf_adds_the_environment_and_an_explicit_setting_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _sasl_env(monkeypatch)
    conf = with_logger({"bootstrap.servers": "b:1", "sasl.username": "explicit"})
    assert conf["security.protocol"] == "SASL_PLAINTEXT"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512" and conf["sasl.password"] == SECRET
    assert conf["sasl.username"] == "explicit"
    assert conf["logger"].name == "nodemeter.librdkafka"
    # a config naming its own protocol has chosen its security: nothing is added
    own = client_conf({"bootstrap.servers": "b:1", "security.protocol": "PLAINTEXT"})
    assert not any(k.startswith("sasl.") for k in own)
    # an explicit KafkaSecurity instead of the environment
    mine = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_username="x", sasl_password="y")
    assert client_conf({}, mine)["sasl.username"] == "x"


def test_meter_config_takes_the_environment_and_producer_config_still_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _sasl_env(monkeypatch)
    cfg = MeterConfig(bootstrap_servers="b:1")
    conf = cfg.producer_conf()
    assert conf["security.protocol"] == "SASL_PLAINTEXT" and conf["sasl.password"] == SECRET
    assert SECRET not in repr(cfg)
    # the escape hatch: a raw librdkafka setting overrides the rendered one
    raw = MeterConfig(bootstrap_servers="b:1", producer_config={"sasl.mechanism": "PLAIN"})
    assert raw.producer_conf()["sasl.mechanism"] == "PLAIN"
    assert raw.producer_conf()["sasl.username"] == "alice"
    # the budget view's consumer gets the producer's security settings
    sec = security_settings(raw.producer_conf())
    assert sec == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": SECRET,
    }


def test_meter_config_rejects_a_bad_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEMETER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError, match="NODEMETER_KAFKA_SASL_USERNAME"):
        MeterConfig(bootstrap_servers="b:1")


# --- faust ------------------------------------------------------------------------------


def test_faust_app_gets_broker_credentials(tls: Any, tmp_path: Path) -> None:
    pytest.importorskip("faust")
    import faust

    from nodemeter_stream.app import WorkerConfig, broker_credentials, faust_app

    assert broker_credentials(KafkaSecurity()) is None
    creds = broker_credentials(sasl_ssl(tls))
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.username == "alice" and creds.password == SECRET
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    plain = broker_credentials(
        KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password=SECRET)
    )
    assert plain.protocol.value == "SASL_PLAINTEXT" and plain.ssl_context is None
    tls_only = broker_credentials(KafkaSecurity(protocol="SSL", ssl_ca_file=str(tls.ca_file)))
    assert isinstance(tls_only, faust.SSLCredentials)

    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    cfg = WorkerConfig(
        bootstrap="127.0.0.1:1", kafka_security=sasl_ssl(tls), data_dir=str(tmp_path / "f")
    )
    app = faust_app(cfg)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_plain_password"] == SECRET
    assert SECRET not in repr(app.conf.broker_credentials)


# --- failures: the cause, named ----------------------------------------------------------


class _Err:
    def __init__(self, code: int, text: str) -> None:
        self._code, self._text = code, text

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return self._text


AUTH_TEXT = (
    "sasl_ssl://127.0.0.1:1/bootstrap: SASL authentication error: Authentication failed "
    "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
)
TLS_TEXT = (
    "sasl_ssl://127.0.0.1:1/bootstrap: SSL handshake failed: error:0A000086:SSL "
    "routines::certificate verify failed: broker certificate could not be verified"
)


def test_failure_kinds() -> None:
    assert failure_kind(AUTH_TEXT, -169) == "auth"
    assert failure_kind("SaslAuthenticationFailed: Authentication failed during ...") == "auth"
    assert failure_kind(TLS_TEXT, -181) == "tls"
    assert failure_kind("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed") == "tls"
    assert failure_kind("1/1 brokers are down", -187) is None
    assert failure_kind("Connection refused", -195) is None


def test_explained_failures_name_the_cause_and_mask_the_password(tls: Any) -> None:
    sec = sasl_ssl(tls)
    auth = explain_failure(sec, "h:1", AUTH_TEXT + f" pw={SECRET}", -169)
    assert auth is not None and auth.startswith("Kafka authentication failed at h:1")
    assert "NODEMETER_KAFKA_SASL_PASSWORD" in auth and "'alice'" in auth and SECRET not in auth
    bad_tls = explain_failure(sec, "h:1", TLS_TEXT, -181)
    assert bad_tls is not None and "TLS handshake failed" in bad_tls
    assert f"NODEMETER_KAFKA_SSL_CA_FILE={tls.ca_file}" in bad_tls
    assert explain_failure(sec, "h:1", "1/1 brokers are down", -187) is None


def test_error_watch_keeps_the_first_security_failure(tls: Any) -> None:
    seen: list[Any] = []
    watch = ErrorWatch(sasl_ssl(tls), "h:1", then=seen.append)
    watch(_Err(-187, "1/1 brokers are down"))
    watch.raise_if_failed()  # not a security failure
    watch(_Err(-169, AUTH_TEXT))
    watch(_Err(-181, TLS_TEXT))
    assert len(seen) == 3
    with pytest.raises(KafkaSecurityError, match="authentication failed"):
        watch.raise_if_failed()
    assert issubclass(KafkaSecurityError, KafkaConnectionError)


def test_security_of_describes_a_raw_config() -> None:
    sec = security_of(
        {
            "security.protocol": "sasl_ssl",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
            "sasl.password": SECRET,
            "ssl.ca.location": "/nonexistent",
        }
    )
    assert sec.protocol == "SASL_SSL" and sec.sasl_username == "u"
    assert security_of({"security.protocol": "nonsense"}) == KafkaSecurity()


def test_meter_reports_an_auth_failure_and_check_connection_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sasl_env(monkeypatch)
    from test_sdk_fakes import fake_meter

    meter, made = fake_meter(tmp_path, "down")
    try:
        assert made[0].conf["sasl.username"] == "alice"
        assert meter.connection_error is None
        with pytest.raises(KafkaConnectionError, match="no Kafka broker answered") as info:
            meter.check_connection(timeout=0.3)
        assert not isinstance(info.value, KafkaSecurityError)
        with caplog.at_level(logging.ERROR, logger="nodemeter"):
            meter._on_error(_Err(-169, AUTH_TEXT))
        assert "Kafka authentication failed" in caplog.text and SECRET not in caplog.text
        assert isinstance(meter.connection_error, KafkaSecurityError)
        with pytest.raises(KafkaSecurityError, match="NODEMETER_KAFKA_SASL_USERNAME"):
            meter.check_connection(timeout=5.0)
        made[0].mode = "ok"  # the broker accepts us again
        meter.check_connection(timeout=1.0)
        assert meter.connection_error is None
    finally:
        meter.close()
