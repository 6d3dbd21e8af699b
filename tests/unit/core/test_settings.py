from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr, ValidationError

from core.settings import (
    PROJECT_ROOT,
    CassandraSettings,
    KafkaSettings,
    MongoSettings,
    Settings,
    SparkSettings,
    loopback_addresses,
)
from core.spark import session_config
from stores.cassandra_schema import replication_cql
from stores.connections import cassandra_cluster, cassandra_security, mongo_client
from userpulse.commands.settings import SETTINGS_TABLE_END, SETTINGS_TABLE_START, effective, settings_markdown


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


def test_cluster_addresses_are_lists_written_with_commas_or_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERPULSE_KAFKA__SERVERS", "b1:9092, b2:9092,b3:9092")
    monkeypatch.setenv("USERPULSE_CASSANDRA__CONTACT_POINTS", '["10.0.0.1", "10.0.0.2"]')
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "b1:9092,b2:9092,b3:9092"
    assert settings.kafka.client_options()["bootstrap_servers"] == "b1:9092,b2:9092,b3:9092"
    assert settings.kafka.spark_options()["kafka.bootstrap.servers"] == "b1:9092,b2:9092,b3:9092"
    assert settings.cassandra.nodes == ["10.0.0.1", "10.0.0.2"]
    # Unset, the single host of the local stack.
    assert KafkaSettings().bootstrap_servers == "127.0.0.1:9092"
    assert CassandraSettings().nodes == ["127.0.0.1"]


def test_topics_are_created_with_the_replication_settings_and_refuse_an_impossible_quorum() -> None:
    kafka = KafkaSettings(topic_replication_factor=3, min_insync_replicas=2)
    assert kafka.topic_configs(1000) == {"retention.ms": "1000", "min.insync.replicas": "2"}
    assert KafkaSettings().topic_configs(1000) == {"retention.ms": "1000"}
    with pytest.raises(ValidationError, match="no write could ever be acknowledged"):
        KafkaSettings(topic_replication_factor=1, min_insync_replicas=2)


def test_keyspaces_replicate_per_data_centre_when_asked() -> None:
    assert CassandraSettings(replication_factor=3).keyspace_replication == {
        "class": "SimpleStrategy",
        "replication_factor": 3,
    }
    per_dc = CassandraSettings(datacenter_replication={"dc1": 3, "dc2": 2})
    assert per_dc.keyspace_replication == {"class": "NetworkTopologyStrategy", "dc1": 3, "dc2": 2}
    assert replication_cql(per_dc.keyspace_replication) == (
        "{'class': 'NetworkTopologyStrategy', 'dc1': '3', 'dc2': '2'}"
    )
    with pytest.raises(ValueError, match="invalid replication option"):
        replication_cql({"class": "SimpleStrategy", "dc1'} AND durable_writes = false --": 1})
    with pytest.raises(ValidationError):
        CassandraSettings(consistency_level="SOME")


def test_the_consistency_level_reaches_the_driver() -> None:
    settings = Settings().model_copy(
        update={
            "cassandra": CassandraSettings(
                consistency_level="LOCAL_ONE", contact_points=["10.0.0.1", "10.0.0.2"]
            )
        }
    )
    cluster = cassandra_cluster(settings)
    assert cluster.contact_points == ["10.0.0.1", "10.0.0.2"]
    assert cluster.profile_manager.default.consistency_level == ConsistencyLevel.LOCAL_ONE
    assert (
        cassandra_cluster(Settings()).profile_manager.default.consistency_level
        == ConsistencyLevel.LOCAL_QUORUM
    )


def test_a_mongo_connection_uri_wins_and_is_never_shown_with_its_password() -> None:
    uri = "mongodb://app:s3cret@db1:27017,db2:27017/userpulse?replicaSet=rs0&tls=true"
    mongo = MongoSettings(connection_uri=SecretStr(uri), username="ignored", port=1)
    assert mongo.uri == uri
    assert mongo.address == "mongodb://db1:27017,db2:27017"
    assert MongoSettings().address == "127.0.0.1:27017"
    shown = effective(Settings().model_copy(update={"mongo": mongo}))
    assert shown["USERPULSE_MONGO__CONNECTION_URI"] == "**********"
    assert "s3cret" not in json.dumps(shown)


def test_the_spark_driver_address_is_a_setting() -> None:
    settings = Settings().model_copy(
        update={"spark": SparkSettings(driver_host="10.1.2.3", driver_bind_address="0.0.0.0")}
    )
    config = session_config(settings, "/usr/bin/python3")
    assert config["spark.driver.host"] == "10.1.2.3"
    assert config["spark.driver.bindAddress"] == "0.0.0.0"


def test_a_dotenv_file_counts_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("USERPULSE_KAFKA__PORT=19092\nUSERPULSE_MONGO__PORT=27018\nOTHER_TOOL=x\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USERPULSE_MONGO__PORT", "27019")
    settings = Settings()
    assert settings.kafka.port == 19092
    assert settings.mongo.port == 27019


def test_the_lake_and_checkpoints_are_uris_or_absolute_folders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USERPULSE_PATHS__LAKE_DIR", "s3a://userpulse-lake/prod/")
    monkeypatch.setenv("USERPULSE_PATHS__CHECKPOINTS_DIR", "state/checkpoints")
    settings = Settings()
    paths = settings.paths
    # A URI is kept as written (pathlib would have made it "s3a:/userpulse-lake/prod").
    assert paths.archive_table == "s3a://userpulse-lake/prod/archive"
    assert paths.silver_table == "s3a://userpulse-lake/prod/silver_profiles"
    assert (
        session_config(settings, "python3")["spark.sql.warehouse.dir"]
        == "s3a://userpulse-lake/prod/warehouse"
    )
    # A relative folder is made absolute: executors resolve paths in their own working folder.
    assert paths.checkpoint("speed-layer") == str(tmp_path / "state" / "checkpoints" / "speed-layer")
    monkeypatch.setenv("USERPULSE_PATHS__LAKE_DIR", "")
    with pytest.raises(ValidationError, match="lake_dir"):
        Settings()


def test_the_settings_page_documents_every_setting() -> None:
    """docs/settings.md holds ``userpulse settings --markdown``: regenerate it when a setting changes."""
    readme = (PROJECT_ROOT / "docs" / "settings.md").read_text()
    start, end = readme.index(SETTINGS_TABLE_START), readme.index(SETTINGS_TABLE_END)
    assert readme[start + len(SETTINGS_TABLE_START) : end].strip() == settings_markdown().strip()


def test_a_cluster_deployment_refuses_addresses_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().deployment == "local"  # the default, which may use them all
    monkeypatch.setenv("USERPULSE_DEPLOYMENT", "cluster")
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    for still_local in (
        "kafka (127.0.0.1:9092)",
        "cassandra (127.0.0.1)",
        "mongo (127.0.0.1:27017)",
        "local[2]",
        "spark.driver_host (127.0.0.1)",
        "paths.lake_dir (a folder of this machine",
        "paths.checkpoints_dir (a folder of this machine",
    ):
        assert still_local in message

    monkeypatch.setenv("USERPULSE_KAFKA__SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("USERPULSE_CASSANDRA__CONTACT_POINTS", "c1,c2")
    monkeypatch.setenv("USERPULSE_MONGO__CONNECTION_URI", "mongodb://m1,localhost/?replicaSet=rs")
    monkeypatch.setenv("USERPULSE_SPARK__MASTER", "spark://127.0.0.1:7077")
    monkeypatch.setenv("USERPULSE_SPARK__DRIVER_HOST", "10.0.0.9")
    monkeypatch.setenv("USERPULSE_PATHS__LAKE_DIR", "s3a://lake/userpulse")
    monkeypatch.setenv("USERPULSE_PATHS__CHECKPOINTS_DIR", "hdfs://nn:8020/userpulse/checkpoints")
    with pytest.raises(ValidationError, match=r"object_store.endpoint \(http://127.0.0.1:8333\)"):
        Settings()  # the lake's object store is still the local default
    monkeypatch.setenv("USERPULSE_OBJECT_STORE__ENDPOINT", "")  # AWS S3 itself
    with pytest.raises(ValidationError, match=r"spark.master \(spark://127.0.0.1:7077\)"):
        Settings()  # a standalone master, but on this machine
    monkeypatch.setenv("USERPULSE_SPARK__MASTER", "spark://s:7077")
    with pytest.raises(ValidationError, match=r"mongo \(mongodb://m1,localhost\)"):
        Settings()  # one host of the replica set is still this machine

    monkeypatch.setenv("USERPULSE_MONGO__CONNECTION_URI", "mongodb://m1,m2/?replicaSet=rs")
    assert Settings().deployment == "cluster"
    assert loopback_addresses(Settings()) == []
