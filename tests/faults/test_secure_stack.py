"""The local stack with authentication on, by settings alone: Kafka with SASL/PLAIN, Cassandra with
``PasswordAuthenticator``. A second stack on ports of its own (the test run's stack keeps running): the
producer and the speed layer work through it with credentials, and a client without them is refused.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cassandra import AuthenticationFailed
from cassandra.cluster import Cluster, NoHostAvailable
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from pydantic import SecretStr

from core.settings import CassandraSettings, KafkaSettings, MongoSettings, Settings
from infra.stack import LocalStack
from stores.connections import mongo_client
from tests.faults.stream import topic_input
from tests.integration.support.kafka_helpers import create_topic
from tests.integration.support.processes import cli_environment, free_port
from tests.integration.support.profiles_input import counted

pytestmark = pytest.mark.faults


@pytest.fixture
def secure_settings(stack_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A stack of its own with Kafka SASL and Cassandra logins on, started for the test."""
    settings = stack_settings.model_copy(
        update={
            "kafka": KafkaSettings(
                port=free_port(), controller_port=free_port(), profiles_topic="secure_profiles",
                dead_letter_topic="secure_profiles_dlq", security_protocol="SASL_PLAINTEXT",
                sasl_username="userpulse", sasl_password=SecretStr("kafka-s3cret"),
            ),
            "cassandra": CassandraSettings(
                port=free_port(), storage_port=free_port(), keyspace="secure",
                username="userpulse", password=SecretStr("cassandra-s3cret"),
            ),
            "mongo": MongoSettings(port=free_port(), database="secure"),
            "paths": stack_settings.paths.model_copy(
                update={"stack_dir": tmp_path / "stack", "checkpoints_dir": str(tmp_path / "checkpoints")}
            ),
        }
    )  # fmt: skip
    stack = LocalStack(settings)
    try:
        stack.up()
        yield settings
    finally:
        stack.down()


def userpulse(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "userpulse.cli", *arguments],
        env=cli_environment(
            settings,
            USERPULSE_KAFKA__DEAD_LETTER_TOPIC=settings.kafka.dead_letter_topic,
            USERPULSE_SPARK__DRIVER_MEMORY="1g",
        ),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def test_the_pipeline_runs_with_kafka_sasl_and_cassandra_logins_and_refuses_anonymous_clients(
    secure_settings: Settings,
) -> None:
    settings = secure_settings
    create_topic(settings, settings.kafka.profiles_topic)

    produced = userpulse(settings, "produce", "--count", "300", "--source", "synthetic")
    speed = userpulse(settings, "speed", "--available-now")

    assert produced.returncode == 0, produced.stderr
    assert speed.returncode == 0, speed.stderr
    adults = counted(topic_input(settings).copies)
    with mongo_client(settings) as client:
        stored = client[settings.mongo.database][settings.mongo.raw_profiles_collection].count_documents({})
    assert stored == len(adults) > 0

    anonymous_kafka = {**settings.kafka.client_options(), "security_protocol": "PLAINTEXT"}
    del anonymous_kafka["sasl_mechanism"], anonymous_kafka["sasl_plain_username"]
    del anonymous_kafka["sasl_plain_password"]
    with pytest.raises(KafkaError):
        KafkaAdminClient(**anonymous_kafka).list_topics()
    wrong_password = {**settings.kafka.client_options(), "sasl_plain_password": "guess"}
    with pytest.raises(KafkaError):
        KafkaAdminClient(**wrong_password).list_topics()
    cluster = Cluster([settings.cassandra.host], port=settings.cassandra.port, protocol_version=5)
    try:
        with pytest.raises(NoHostAvailable) as refused:
            cluster.connect()
    finally:
        cluster.shutdown()
    assert any(isinstance(error, AuthenticationFailed) for error in refused.value.errors.values())
