"""The settings a cluster needs reach the real services: a list of Kafka brokers and Cassandra contact
points (one of them down), per-topic replication settings, ``NetworkTopologyStrategy`` keyspaces, the
consistency level of every statement, and a MongoDB connection URI that replaces host and port."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cassandra.cluster import NoHostAvailable
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from pydantic import SecretStr

from core.settings import Settings
from ingestion.kafka_publisher import ensure_topics
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session, mongo_client, mongo_database
from stores.speed_views import CassandraSpeedStore
from tests.integration.support.processes import free_port

pytestmark = pytest.mark.integration


def with_section(settings: Settings, section: str, **changes: object) -> Settings:
    return settings.model_copy(update={section: getattr(settings, section).model_copy(update=changes)})


@pytest.fixture
def own(own_stores: Callable[..., Settings]) -> Settings:
    """The test's own topic, keyspace and MongoDB database on the stack (removed after it)."""
    return own_stores("cluster")


def metrics(batch_id: int) -> dict[str, object]:
    return {
        "job": "speed", "batch_id": batch_id, "processed_at": datetime.now(UTC), "input_rows": 1,
        "new_profiles": 1, "duplicates": 0, "dead_lettered": 0, "under_age": 0, "late_rows_dropped": 0,
        "duration_ms": 10, "max_event_time": None, "end_offsets": {0: batch_id + 1}, "windows": set(),
    }  # fmt: skip


def test_kafka_clients_bootstrap_from_a_list_with_a_broker_down_and_topics_get_their_replication_settings(
    own: Settings,
) -> None:
    kafka = own.kafka
    settings = with_section(
        own,
        "kafka",
        servers=[f"127.0.0.1:{free_port()}", f"{kafka.host}:{kafka.port}"],  # the first answers nothing
        topic_replication_factor=1,
        min_insync_replicas=1,
    )
    topic = kafka.profiles_topic
    assert ensure_topics(settings, {topic: 2}) == [topic]
    admin = KafkaAdminClient(**settings.kafka.client_options())
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        configs = described["topic"][topic]
        assert configs["min.insync.replicas"]["value"] == "1"
        assert configs["min.insync.replicas"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert configs["retention.ms"]["value"] == str(settings.retention.topic_retention_ms)
        assert len(admin.describe_topics([topic])[0]["partitions"]) == 2
    finally:
        admin.close()


def test_cassandra_contact_points_with_one_down_and_a_network_topology_keyspace(own: Settings) -> None:
    cassandra, keyspace = own.cassandra, own.cassandra.keyspace
    settings = with_section(
        own,
        "cassandra",
        contact_points=["127.0.0.3", cassandra.host],  # nothing listens on 127.0.0.3
        datacenter_replication={cassandra.local_datacenter: 1},
    )
    cluster, session = cassandra_session(settings)
    try:
        apply_schema(session, keyspace, settings.cassandra.keyspace_replication)
        replication = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", [keyspace]
        ).one()
        assert replication is not None
        assert replication.replication == {
            "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
            cassandra.local_datacenter: "1",
        }
        store = CassandraSpeedStore(session, keyspace, concurrency=4)
        store.write_batch_metrics(metrics(0))
        assert store.end_offsets_before("speed", 1) == {0: 1}
    finally:
        cluster.shutdown()


def test_every_statement_runs_at_the_configured_consistency_level(own: Settings) -> None:
    """LOCAL_QUORUM (the default) on a single node: reads and writes succeed. TWO copies cannot be had
    from one node: the same write is refused, so the level does reach the statements."""
    quorum, keyspace = own, own.cassandra.keyspace
    assert quorum.cassandra.consistency_level == "LOCAL_QUORUM"
    cluster, session = cassandra_session(quorum)
    try:
        apply_schema(session, keyspace, quorum.cassandra.keyspace_replication)
        CassandraSpeedStore(session, keyspace, concurrency=4).write_batch_metrics(metrics(0))
    finally:
        cluster.shutdown()

    two = with_section(own, "cassandra", consistency_level="TWO")
    cluster, session = cassandra_session(two)
    try:
        with pytest.raises(NoHostAvailable, match="Cannot achieve consistency level TWO"):
            CassandraSpeedStore(session, keyspace, concurrency=4).write_batch_metrics(metrics(1))
    finally:
        cluster.shutdown()


def test_a_mongodb_connection_uri_replaces_host_and_port(own: Settings) -> None:
    mongo = own.mongo
    settings = with_section(
        own,
        "mongo",
        port=free_port(),  # nothing listens there: only the URI can reach the server
        connection_uri=SecretStr(f"mongodb://{mongo.host}:{mongo.port}/?appName=userpulse-uri-test"),
    )
    assert settings.mongo.address == f"mongodb://{mongo.host}:{mongo.port}"
    client = mongo_client(settings)
    try:
        collection = mongo_database(client, settings)["probe"]
        collection.insert_one({"_id": "a", "value": 1})
        assert collection.find_one({"_id": "a"}) == {"_id": "a", "value": 1}
    finally:
        client.close()
