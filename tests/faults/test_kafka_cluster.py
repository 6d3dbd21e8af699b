"""A Kafka cluster of three KRaft brokers on this machine (``infra.stack.local_kafka_cluster``), its topic
replicated three times with two in sync required: once ``userpulse speed`` has committed a
micro-batch, one broker is killed (SIGKILL) while the producer publishes and the speed layer consumes,
and stays down. Nothing is lost, nothing counted twice, and the archive, run with the broker still
down, holds every record once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from kafka import KafkaAdminClient
from pyspark.sql import SparkSession

from batch_layer.archive import run_archive, topic_end_offsets
from core.settings import Settings
from infra.stack import LocalStack, local_kafka_cluster
from ingestion.kafka_publisher import ensure_topics
from tests.faults.stream import (
    BackgroundProducer,
    ReseeingSource,
    catch_up_and_check,
    committed_batches,
    speed_layer_process,
    wait_until,
)
from tests.integration.support.processes import free_port

pytestmark = pytest.mark.faults

BROKERS = 3


@pytest.fixture
def kafka_cluster(
    own_stores: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[Settings, LocalStack]]:
    """Three brokers on free ports under the test's folder, and settings with the test's own stores on
    them (Cassandra and FerretDB are the stack's), topics replicated three times, two in sync."""
    nodes = [(free_port(), free_port()) for _ in range(BROKERS)]
    settings = own_stores(
        "kafka3",
        kafka={
            "servers": [f"127.0.0.1:{port}" for port, _ in nodes],
            "topic_replication_factor": 3,
            "min_insync_replicas": 2,
        },
        local_stack={"kafka_heap": "384m"},
        paths={"stack_dir": tmp_path / "kafka-cluster"},
    )
    cluster = local_kafka_cluster(settings, nodes)
    cluster.up()
    try:
        yield settings, cluster
    finally:
        cluster.down()


def in_sync_replicas(settings: Settings, topic: str) -> list[int]:
    """How many replicas of each partition of ``topic`` are in sync, by partition."""
    admin = KafkaAdminClient(**settings.kafka.client_options())
    try:
        [described] = admin.describe_topics([topic])
    finally:
        admin.close()
    partitions = sorted(described["partitions"], key=lambda partition: partition["partition_index"])
    return [len(partition["isr_nodes"]) for partition in partitions]


@pytest.mark.timeout(1200)
def test_a_broker_of_three_killed_during_produce_and_speed_loses_and_doubles_nothing(
    spark: SparkSession, kafka_cluster: tuple[Settings, LocalStack]
) -> None:
    settings, cluster = kafka_cluster
    topic = settings.kafka.profiles_topic
    ensure_topics(settings, {topic: 3, settings.kafka.dead_letter_topic: 1})
    assert in_sync_replicas(settings, topic) == [3, 3, 3]

    source = ReseeingSource(61)
    BackgroundProducer(settings, source, count=1_000, rate_per_s=1_000).start().join(timeout_s=120)
    with speed_layer_process(settings, USERPULSE_SPEED_LAYER__MAX_OFFSETS_PER_TRIGGER="500") as process:
        wait_until(
            lambda: committed_batches(settings) > 0 or process.poll() is not None,
            timeout_s=300,
            what="a micro-batch committed by the speed layer on the cluster",
        )
        assert process.poll() is None, "the speed layer exited before the broker was killed"
        producer = BackgroundProducer(settings, source, count=4_000, rate_per_s=200).start()
        time.sleep(3)
        victim = cluster.services[1]  # every node leads one of the three partitions
        pid = victim.pid()
        assert pid is not None and producer.running()
        os.killpg(pid, signal.SIGKILL)
        time.sleep(5)
        assert producer.running(), "the producer finished before it had to publish without the broker"
        producer.join(timeout_s=300)
        assert process.poll() is None, "the speed layer stopped when the broker died"
    assert in_sync_replicas(settings, topic) == [2, 2, 2]  # the killed broker is still down

    assert sum(topic_end_offsets(settings).values()) == 5_000  # every profile once on the topic
    catch_up_and_check(settings, spark)  # the topic recounted, every store compared: 0 lost, 0 doubled
    archived = run_archive(settings, spark)
    archive = DeltaTable.forPath(spark, str(settings.paths.archive_table)).toDF()
    assert archived.records == archive.select("partition", "offset").distinct().count() == 5_000
