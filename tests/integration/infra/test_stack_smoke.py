"""Smoke tests: each real service does the one thing the platform needs from it, reached through the
platform's own connections (``stores.connections``), in the test's own topic, keyspace and database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from pyspark.sql import SparkSession

from core.settings import Settings
from stores.connections import cassandra_session, mongo_client, mongo_database
from tests.integration.support.kafka_helpers import create_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(own_stores: Callable[..., Settings]) -> Settings:
    """The test's own topic, keyspace and MongoDB database (removed after it)."""
    return own_stores("smoke")


@pytest.fixture
def kafka_topic(settings: Settings) -> str:
    """The test's own profiles topic, with two partitions."""
    create_topic(settings, settings.kafka.profiles_topic, partitions=2)
    return settings.kafka.profiles_topic


def produce(settings: Settings, topic: str, messages: dict[str, str]) -> None:
    producer = KafkaProducer(**settings.kafka.client_options(), acks="all")
    for key, value in messages.items():
        producer.send(topic, key=key.encode(), value=value.encode()).get(timeout=30)
    producer.close()


def test_kafka_keyed_message_round_trip(settings: Settings, kafka_topic: str) -> None:
    produce(settings, kafka_topic, {"user-1": '{"hello": "kafka"}'})

    consumer = KafkaConsumer(
        kafka_topic,
        **settings.kafka.client_options(),
        group_id=f"{kafka_topic}-group",
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,
    )
    try:
        record = next(iter(consumer))
    finally:
        consumer.close()

    assert (record.key, record.value) == (b"user-1", b'{"hello": "kafka"}')


def test_cassandra_keyspace_table_and_row(settings: Settings) -> None:
    keyspace = settings.cassandra.keyspace
    cluster, session = cassandra_session(settings)
    try:
        replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = {replication}")
        session.execute(f"CREATE TABLE {keyspace}.profiles (uuid text PRIMARY KEY, country text, age int)")
        insert = session.prepare(f"INSERT INTO {keyspace}.profiles (uuid, country, age) VALUES (?, ?, ?)")
        session.execute(insert, ("u-1", "France", 42))

        row = session.execute(f"SELECT country, age FROM {keyspace}.profiles WHERE uuid = %s", ("u-1",)).one()

        assert (row.country, row.age) == ("France", 42)
    finally:
        cluster.shutdown()


def test_mongo_insert_and_find(settings: Settings) -> None:
    with mongo_client(settings) as client:
        collection = mongo_database(client, settings)["smoke"]
        collection.insert_one({"_id": "u-1", "name": {"first": "Zoé"}, "age": 42})

        assert collection.find_one({"_id": "u-1"}) == {"_id": "u-1", "name": {"first": "Zoé"}, "age": 42}


def test_spark_reads_kafka_and_round_trips_delta(
    settings: Settings, spark: SparkSession, kafka_topic: str, tmp_path: Path
) -> None:
    messages = {f"user-{index}": f'{{"n": {index}}}' for index in range(20)}
    produce(settings, kafka_topic, messages)
    table_path = str(tmp_path / "archive")

    query = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", kafka_topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "partition", "offset")
        .writeStream.format("delta")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start(table_path)
    )
    query.awaitTermination(timeout=300)
    assert query.exception() is None

    archived = spark.read.format("delta").load(table_path)
    assert {row.key: row.value for row in archived.collect()} == messages
    assert archived.select("partition").distinct().count() == 2
