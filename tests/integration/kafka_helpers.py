"""Kafka and Cassandra helpers of the integration tests: reading a whole topic back, creating and
removing the topics and keyspaces a test owns."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from core.settings import Settings
from stores.cassandra_schema import drop_keyspace as drop_keyspace_of
from stores.connections import cassandra_session, mongo_client


@dataclass(frozen=True)
class TopicRecord:
    key: str | None
    value: Any
    raw_value: bytes
    partition: int
    offset: int


def read_topic(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[TopicRecord]:
    """All records of ``topic`` up to its current end offsets (JSON values decoded)."""
    consumer = KafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end_offsets = consumer.end_offsets(partitions)
        records: list[TopicRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end_offsets[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: read {len(records)} records, end offsets {end_offsets}")
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(
                    TopicRecord(
                        r.key.decode() if r.key is not None else None,
                        json.loads(r.value),
                        r.value,
                        r.partition,
                        r.offset,
                    )
                    for r in batch
                )
        return records
    finally:
        consumer.close()


def delete_topics(settings: Settings, *topics: str) -> None:
    """Delete the topics that exist among ``topics``."""
    admin = KafkaAdminClient(**settings.kafka.client_options())
    try:
        existing = set(admin.list_topics())
        to_delete = [topic for topic in topics if topic in existing]
        if to_delete:
            admin.delete_topics(to_delete)
    finally:
        admin.close()


def create_topic(settings: Settings, topic: str, partitions: int = 3) -> None:
    """Create ``topic`` with ``partitions`` partitions (one replica)."""
    admin = KafkaAdminClient(**settings.kafka.client_options())
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def drop_keyspace(settings: Settings, keyspace: str) -> None:
    """Drop a test's Cassandra keyspace if it exists."""
    cluster, session = cassandra_session(settings)
    try:
        drop_keyspace_of(session, keyspace)
    finally:
        cluster.shutdown()


def own_stores_overrides(stack_settings: Settings, name: str, folder: Path) -> dict[str, str]:
    """Settings overrides (``section.field`` -> value, as ``UserPulseResource`` takes them) that give a
    test its own topics (``name``, ``name_dlq``), keyspace and MongoDB database (``name``), and lake and
    checkpoints under ``folder``, on the running stack."""
    overrides = {
        "kafka.host": stack_settings.kafka.host,
        "kafka.port": str(stack_settings.kafka.port),
        "kafka.profiles_topic": name,
        "kafka.dead_letter_topic": f"{name}_dlq",
        "cassandra.host": stack_settings.cassandra.host,
        "cassandra.port": str(stack_settings.cassandra.port),
        "cassandra.keyspace": name,
        "mongo.host": stack_settings.mongo.host,
        "mongo.port": str(stack_settings.mongo.port),
        "mongo.database": name,
        "paths.lake_dir": str(folder / "lake"),
        "paths.checkpoints_dir": str(folder / "checkpoints"),
    }
    if stack_settings.mongo.username is not None and stack_settings.mongo.password is not None:
        overrides["mongo.username"] = stack_settings.mongo.username
        overrides["mongo.password"] = stack_settings.mongo.password.get_secret_value()
    return overrides


def drop_own_stores(stack_settings: Settings, name: str) -> None:
    """Remove what ``own_stores_overrides`` gave a test: its topics, keyspace and MongoDB database."""
    delete_topics(stack_settings, name, f"{name}_dlq")
    drop_keyspace(stack_settings, name)
    client = mongo_client(stack_settings)
    try:
        client.drop_database(name)
    finally:
        client.close()


def own_settings(stack_settings: Settings, name: str, folder: Path, **sections: Any) -> Settings:
    """``stack_settings`` with the test's own topics, keyspace, MongoDB database, lake and checkpoints
    (``own_stores_overrides``), and more fields per section (``profiles={"window_duration": ...}``)."""
    overrides = own_stores_overrides(stack_settings, name, folder)
    updates: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        section, field = dotted.split(".", 1)
        updates.setdefault(section, {})[field] = value
    for section, fields in sections.items():
        updates.setdefault(section, {}).update(fields)
    return stack_settings.model_copy(
        update={
            section: type(getattr(stack_settings, section)).model_validate(
                {**getattr(stack_settings, section).model_dump(), **fields}
            )
            for section, fields in updates.items()
        }
    )
