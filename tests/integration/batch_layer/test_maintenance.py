"""Delta maintenance against real Delta tables written by the batch layer: OPTIMIZE compacts, VACUUM
deletes the files no longer referenced once they are older than the retention, and no row changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import materialize
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from batch_layer.archive import run_archive
from batch_layer.maintenance import current_files, maintain_lake
from batch_layer.recompute import refresh_silver_profiles
from core.settings import Settings
from orchestration.assets import lake_maintenance
from orchestration.resources import batch_layer_resources
from stores.lake import data_files_in
from tests.integration.support.kafka_helpers import create_topic
from tests.integration.support.profiles_input import known_input

pytestmark = pytest.mark.integration

RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


@pytest.fixture
def lake_settings(own_stores: Callable[..., Settings]) -> Settings:
    """A topic, lake and checkpoint folder of this test's own; small archiving batches, so that files
    pile up."""
    settings = own_stores("maintain", batch_layer={"max_offsets_per_trigger": 60})
    create_topic(settings, settings.kafka.profiles_topic)
    return settings


def produce(settings: Settings, records: list[tuple[str | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=5)
    try:
        for key, value in records:
            producer.send(settings.kafka.profiles_topic, key=key.encode() if key else None, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()


def contents(spark: SparkSession, path: Path) -> list[tuple[object, ...]]:
    """Every row of a Delta table, sorted, as plain tuples (bytes for binary columns)."""
    rows = spark.read.format("delta").load(str(path)).collect()
    return sorted((tuple(bytes(v) if isinstance(v, bytearray) else v for v in row) for row in rows), key=repr)


def test_optimize_compacts_and_vacuum_deletes_only_files_older_than_the_retention(
    spark: SparkSession, lake_settings: Settings
) -> None:
    good, _, _ = known_input()
    for start in range(0, 300, 100):  # three appends, each of several micro-batches: many small files
        produce(lake_settings, good[start : start + 100])
        run_archive(lake_settings, spark)
        refresh_silver_profiles(lake_settings, spark)  # each refresh leaves the previous files behind
    tables = (lake_settings.paths.archive_table, lake_settings.paths.silver_table)
    before = {path: contents(spark, path) for path in tables}
    files = {path: (current_files(spark, path), data_files_in(spark, path)) for path in tables}
    archive_files, archive_on_disk = files[lake_settings.paths.archive_table]
    assert archive_on_disk == archive_files >= 6  # appends only: every file is referenced
    silver_files, silver_on_disk = files[lake_settings.paths.silver_table]
    assert silver_on_disk > silver_files  # the files of the earlier refreshes are still there

    # The configured retention (7 days): compaction happens, but every file is younger than that.
    kept = {result.path: result for result in maintain_lake(lake_settings, spark)}

    archive = kept[lake_settings.paths.archive_table]
    assert archive.files_after < archive_files  # compacted ...
    assert archive.files_on_disk_optimized == archive_on_disk + archive.files_after  # ... next to the old
    for path in tables:
        referenced, on_disk = files[path]
        result = kept[path]
        assert (result.files_before, result.files_on_disk_before) == (referenced, on_disk)
        assert result.files_after <= referenced  # a silver day written as one file stays as it is
        assert result.files_vacuumed == 0
        assert data_files_in(spark, path) == result.files_on_disk_optimized
        assert contents(spark, path) == before[path]

    # Retention 0 (allowed only once Delta's own guard is off, as here in the test): every file the
    # current version does not reference is older than that, and goes.
    spark.conf.set(RETENTION_CHECK, "false")
    try:
        vacuumed = {result.path: result for result in maintain_lake(lake_settings, spark, retention_hours=0)}
    finally:
        spark.conf.unset(RETENTION_CHECK)

    for path in tables:
        result = vacuumed[path]
        assert result.files_before == result.files_after == kept[path].files_after  # already compact
        assert result.files_on_disk_after == current_files(spark, path) == data_files_in(spark, path)
        assert result.files_vacuumed == kept[path].files_on_disk_optimized - result.files_after > 0
        assert contents(spark, path) == before[path]


def test_the_maintenance_asset_reports_what_it_did(spark: SparkSession, lake_settings: Settings) -> None:
    good, _, _ = known_input()
    for start in range(0, 200, 100):
        produce(lake_settings, good[start : start + 100])
        run_archive(lake_settings, spark)
    files = current_files(spark, lake_settings.paths.archive_table)
    resources = batch_layer_resources(
        {
            "kafka.profiles_topic": lake_settings.kafka.profiles_topic,
            "paths.lake_dir": str(lake_settings.paths.lake_dir),
            "paths.checkpoints_dir": str(lake_settings.paths.checkpoints_dir),
        }
    )

    result = materialize([lake_maintenance], resources=resources)

    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}
    assert metadata == {"archive_files_before": files, "archive_files_after": 1, "archive_files_vacuumed": 0}
