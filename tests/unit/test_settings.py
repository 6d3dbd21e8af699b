from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cassandra.auth import PlainTextAuthProvider
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr, ValidationError

from core.settings import CassandraSettings, KafkaSettings, MongoSettings, Settings
from core.stores import cassandra_security, mongo_client


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings()

    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.cassandra.port == 9042
    assert settings.mongo.uri == "mongodb://127.0.0.1:27017/"


def test_environment_overrides_a_nested_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERPULSE_KAFKA__PORT", "19092")
    monkeypatch.setenv("USERPULSE_SECRETS__PSEUDONYMIZATION_KEY", "s3cret")

    settings = Settings()

    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.secrets.pseudonymization_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_an_invalid_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERPULSE_CASSANDRA__PORT", "not-a-port")

    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_mongo_uri_carries_quoted_credentials_only_when_set() -> None:
    anonymous = MongoSettings()
    authenticated = MongoSettings(username="app", password=SecretStr("p@ss:word"))

    assert anonymous.uri == "mongodb://127.0.0.1:27017/"
    assert authenticated.uri == "mongodb://app:p%40ss%3Aword@127.0.0.1:27017/?authSource=admin"


def test_the_archive_schedule_is_a_checked_cron_expression(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().batch_layer.archive_schedule == "*/15 * * * *"
    assert Settings().batch_layer.archive_trigger == "schedule"
    assert Settings().demo.new_offsets_check_s == 10
    monkeypatch.setenv("USERPULSE_BATCH_LAYER__ARCHIVE_SCHEDULE", "every 15 minutes")

    with pytest.raises(ValidationError, match="cron"):
        Settings()


def test_kafka_sasl_needs_its_credentials() -> None:
    with pytest.raises(ValidationError, match="SASL_PLAINTEXT needs sasl_username and sasl_password"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="app")


def test_kafka_security_reaches_every_client_and_spark_alike(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="app",
        sasl_password=SecretStr('pa"ss'),
        ssl_ca_file=ca_file,
    )

    assert kafka.client_options() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "bootstrap_timeout_ms": 5000,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "app",
        "sasl_plain_password": 'pa"ss',
        "ssl_cafile": str(ca_file),
    }
    assert kafka.spark_options() == {
        "kafka.bootstrap.servers": "127.0.0.1:9092",
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="app" password="pa\\"ss";',
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": str(ca_file),
    }
    assert 'pa"ss' not in repr(kafka)


def test_plaintext_kafka_adds_no_security_option() -> None:
    assert KafkaSettings().spark_options() == {
        "kafka.bootstrap.servers": "127.0.0.1:9092",
        "kafka.security.protocol": "PLAINTEXT",
    }


def self_signed_certificate() -> bytes:
    """A PEM certificate of a throwaway CA (what ``ssl_ca_file`` points at)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "userpulse test CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_cassandra_login_and_tls_reach_the_driver(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(self_signed_certificate())
    cassandra = CassandraSettings(username="app", password=SecretStr("s3cret"), ssl_ca_file=ca_file)

    security = cassandra_security(cassandra)

    assert isinstance(security["auth_provider"], PlainTextAuthProvider)
    assert security["auth_provider"].username == "app" and security["auth_provider"].password == "s3cret"
    assert security["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert cassandra_security(CassandraSettings()) == {}


def test_mongo_tls_reaches_the_client(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(self_signed_certificate())
    mongo = MongoSettings(tls_ca_file=ca_file)

    assert mongo.tls_options() == {"tls": True, "tlsCAFile": str(ca_file)}
    mongo_client(Settings(mongo=mongo)).close()  # pymongo accepts them (it loads the CA file)
    assert MongoSettings().tls_options() == {}
