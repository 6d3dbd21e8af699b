"""The stack as testcontainers, when a Docker engine answers: the images of ``infra/images.py``, so
Kafka and Cassandra run the local stack's versions.

Untested on the CI machine, which has no Docker engine; the images' versions are unit-tested.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from pydantic import SecretStr
from testcontainers.community.cassandra import CassandraContainer
from testcontainers.community.kafka import KafkaContainer
from testcontainers.community.mongodb import MongoDbContainer

from core.settings import CassandraSettings, KafkaSettings, MongoSettings, Settings
from infra.images import MONGO_IMAGE, cassandra_image, kafka_image


class ApacheKafkaContainer(KafkaContainer):
    """testcontainers' Kafka module in KRaft mode on Apache Kafka's own image.

    The module drives Confluent's images: its start script runs their configure scripts, and
    ``with_kraft()`` wants a Confluent version number. The listeners, the controller and the wait for
    "Kafka Server started" are the module's; only the start script is the apache image's.
    """

    def __init__(self, image: str) -> None:
        super().__init__(image)
        self.kraft_enabled = True
        self.with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")  # as the local stack

    def start_script(self, host: str, port: int) -> str:
        """Advertise the mapped port to clients and the container's address to the broker listener,
        then run the image's own entry point (it formats the storage with ``CLUSTER_ID``)."""
        broker = "$(hostname -i | cut -d' ' -f1)"
        return (
            "#!/bin/sh\n"
            f"export KAFKA_ADVERTISED_LISTENERS={self.listener_name}://{host}:{port},BROKER://{broker}:9092\n"
            "exec /etc/kafka/docker/run\n"
        )

    def tc_start(self) -> None:
        host = self.get_container_host_ip()
        port = int(self.get_exposed_port(self.port))
        self.create_file(self.start_script(host, port).encode(), self.TC_START_SCRIPT)


def containers_settings(base: Settings, resources: ExitStack) -> tuple[Settings, dict[str, Any]]:
    """Start Kafka, Cassandra and MongoDB containers (stopped when ``resources`` closes); return the
    settings pointing at them and the containers by service ("kafka", "cassandra", "mongo")."""
    kafka = resources.enter_context(ApacheKafkaContainer(kafka_image()))
    cassandra = resources.enter_context(CassandraContainer(cassandra_image()))
    mongo = resources.enter_context(MongoDbContainer(MONGO_IMAGE))
    kafka_host, kafka_port = kafka.get_bootstrap_server().rsplit(":", 1)
    [(cassandra_host, cassandra_port)] = cassandra.get_contact_points()
    settings = base.model_copy(
        update={
            "kafka": KafkaSettings(host=kafka_host, port=int(kafka_port)),
            "cassandra": CassandraSettings(host=cassandra_host, port=cassandra_port),
            "mongo": MongoSettings(
                host=mongo.get_container_host_ip(),
                port=int(mongo.get_exposed_port(mongo.port)),
                username=mongo.username,
                password=SecretStr(mongo.password),
            ),
        }
    )
    return settings, {"kafka": kafka, "cassandra": cassandra, "mongo": mongo}
