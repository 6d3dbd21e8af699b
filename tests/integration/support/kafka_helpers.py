"""Kafka helpers of the integration tests: reading a whole topic back, creating a topic. What a test owns
(its topics, keyspace, database, lake) and its removal: ``infra.isolation``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from core.settings import Settings


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


def create_topic(settings: Settings, topic: str, partitions: int = 3) -> None:
    """Create ``topic`` with ``partitions`` partitions (one replica)."""
    admin = KafkaAdminClient(**settings.kafka.client_options())
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
