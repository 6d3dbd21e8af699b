"""The Delta archive of the topic against the real Kafka and Spark: every record once, whatever reruns."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from batch_layer.archive import run_archive
from core.settings import Settings
from infra.isolation import local_folder
from tests.integration.support.kafka_helpers import create_topic

pytestmark = pytest.mark.integration

Coordinates = tuple[int, int]


@pytest.fixture
def archive_settings(own_stores: Callable[..., Settings]) -> Settings:
    """Settings with stores of this test's own: a three-partition topic, lake and checkpoint folder."""
    settings = own_stores("archive", batch_layer={"max_offsets_per_trigger": 40})
    create_topic(settings, settings.kafka.profiles_topic)
    return settings


def produce(settings: Settings, first: int, count: int) -> dict[Coordinates, tuple[bytes | None, bytes]]:
    """``count`` records, some without a key and some not JSON at all: the archive keeps them all."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    produced = {}
    try:
        for number in range(first, first + count):
            key = None if number % 7 == 0 else f"user-{number}".encode()
            value = b"\xff\xfe not json" if number % 11 == 0 else f'{{"n": {number}}}'.encode()
            metadata = producer.send(settings.kafka.profiles_topic, key=key, value=value).get(timeout=30)
            produced[(metadata.partition, metadata.offset)] = (key, value)
    finally:
        producer.close()
    return produced


def archived(spark: SparkSession, settings: Settings) -> dict[Coordinates, tuple[bytes | None, bytes]]:
    rows = spark.read.format("delta").load(str(settings.paths.archive_table)).collect()
    assert len(rows) == len({(row.partition, row.offset) for row in rows}), "a record was archived twice"
    for row in rows:
        assert row.ingestion_date == row.kafka_timestamp.astimezone(UTC).date()
    return {
        (r.partition, r.offset): (bytes(r.key) if r.key is not None else None, bytes(r.value)) for r in rows
    }


def test_each_run_appends_exactly_the_new_offsets_once(
    spark: SparkSession, archive_settings: Settings
) -> None:
    first = produce(archive_settings, 0, 150)

    first_run = run_archive(archive_settings, spark)

    assert (first_run.records, archived(spark, archive_settings)) == (150, first)
    assert first_run.batches >= 3  # 40 offsets per trigger
    today = datetime.now(UTC).date().isoformat()
    assert (local_folder(archive_settings.paths.archive_table) / f"ingestion_date={today}").is_dir()

    assert run_archive(archive_settings, spark).records == 0  # nothing new, nothing appended
    assert archived(spark, archive_settings) == first

    second = produce(archive_settings, 150, 60)
    assert run_archive(archive_settings, spark).records == 60
    assert archived(spark, archive_settings) == first | second


def test_a_batch_replayed_after_a_crash_is_not_appended_twice(
    spark: SparkSession, archive_settings: Settings
) -> None:
    produced = produce(archive_settings, 0, 120)
    run_archive(archive_settings, spark)

    # As after a crash between the Delta commit and the checkpoint's commit: the last batch runs again.
    commits = (
        local_folder(archive_settings.paths.checkpoint(archive_settings.batch_layer.archive_job_name))
        / "commits"
    )
    last = max((p for p in commits.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    last.unlink()
    (commits / f".{last.name}.crc").unlink(missing_ok=True)
    run_archive(archive_settings, spark)

    assert archived(spark, archive_settings) == produced
