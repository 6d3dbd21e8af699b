"""Smoke tests: each real service does the one thing the platform needs from it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cassandra.cluster import Cluster
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from pymongo import MongoClient
from pyspark.sql import SparkSession

from core.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka_topic(stack_settings: Settings, unique_name: Callable[[str], str]) -> Iterator[str]:
    """A fresh two-partition topic, deleted after the test."""
    topic = unique_name("smoke")
    admin = KafkaAdminClient(bootstrap_servers=stack_settings.kafka.bootstrap_servers)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    try:
        yield topic
    finally:
        admin.delete_topics([topic])
        admin.close()


def produce(settings: Settings, topic: str, messages: dict[str, str]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    for key, value in messages.items():
        producer.send(topic, key=key.encode(), value=value.encode()).get(timeout=30)
    producer.close()


def test_kafka_keyed_message_round_trip(stack_settings: Settings, kafka_topic: str) -> None:
    produce(stack_settings, kafka_topic, {"user-1": '{"hello": "kafka"}'})

    consumer = KafkaConsumer(
        kafka_topic,
        bootstrap_servers=stack_settings.kafka.bootstrap_servers,
        group_id=f"{kafka_topic}-group",
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,
    )
    try:
        record = next(iter(consumer))
    finally:
        consumer.close()

    assert (record.key, record.value) == (b"user-1", b'{"hello": "kafka"}')


def test_cassandra_keyspace_table_and_row(
    stack_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    keyspace = unique_name("smoke")
    cluster = Cluster([stack_settings.cassandra.host], port=stack_settings.cassandra.port)
    session = cluster.connect()
    try:
        replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = {replication}")
        session.execute(f"CREATE TABLE {keyspace}.profiles (uuid text PRIMARY KEY, country text, age int)")
        insert = session.prepare(f"INSERT INTO {keyspace}.profiles (uuid, country, age) VALUES (?, ?, ?)")
        session.execute(insert, ("u-1", "France", 42))

        row = session.execute(f"SELECT country, age FROM {keyspace}.profiles WHERE uuid = %s", ("u-1",)).one()

        assert (row.country, row.age) == ("France", 42)
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        cluster.shutdown()


def test_mongo_insert_and_find(stack_settings: Settings, unique_name: Callable[[str], str]) -> None:
    with MongoClient(stack_settings.mongo.uri, serverSelectionTimeoutMS=10_000) as client:
        collection = client[stack_settings.mongo.database][unique_name("smoke")]
        try:
            collection.insert_one({"_id": "u-1", "name": {"first": "Zoé"}, "age": 42})

            assert collection.find_one({"_id": "u-1"}) == {"_id": "u-1", "name": {"first": "Zoé"}, "age": 42}
        finally:
            collection.drop()


def test_spark_reads_kafka_and_round_trips_delta(
    stack_settings: Settings, spark: SparkSession, kafka_topic: str, tmp_path: Path
) -> None:
    messages = {f"user-{index}": f'{{"n": {index}}}' for index in range(20)}
    produce(stack_settings, kafka_topic, messages)
    table_path = str(tmp_path / "archive")

    query = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", stack_settings.kafka.bootstrap_servers)
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
