"""The archive: every record of the profiles topic, as received, in a Delta table partitioned by
ingestion date. The immutable master dataset the batch views are recomputed from.

A Structured Streaming query with ``trigger(availableNow=True)`` and its own checkpoint: each run
appends exactly the offsets that arrived since the last one. Delta's streaming sink records each
batch id in the table's transaction log, so a batch replayed after a crash is not appended twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.settings import Settings
from core.streaming import require_topic, run_until_consumed
from core.transformations import utc_date

ARCHIVE_COLUMNS: tuple[str, ...] = (
    "key", "value", "topic", "partition", "offset", "kafka_timestamp", "ingestion_date",
)  # fmt: skip
"""Columns of the archive table: the Kafka record untouched, plus the partition column."""


def archive_records(kafka_rows: DataFrame) -> DataFrame:
    """Kafka source rows -> archive rows: bytes kept as they are, plus the UTC ingestion date."""
    return kafka_rows.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        F.col("timestamp").alias("kafka_timestamp"),
        # The UTC date of the broker's timestamp: the same on every run, whatever the session time zone.
        utc_date(F.col("timestamp")).alias("ingestion_date"),
    )


@dataclass(frozen=True)
class ArchiveRun:
    """What one archiving run appended."""

    batches: int
    records: int


def run_archive(settings: Settings, spark: SparkSession, topic: str | None = None) -> ArchiveRun:
    """Append the topic's new records to the archive table and return what was appended."""
    topic = topic or settings.kafka.profiles_topic
    require_topic(settings.kafka.bootstrap_servers, topic)
    kafka_rows = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", settings.batch_layer.max_offsets_per_trigger)
        .load()
    )
    writer = (
        archive_records(kafka_rows)
        .writeStream.format("delta")
        .queryName(settings.batch_layer.archive_job_name)
        .partitionBy("ingestion_date")
        .option(
            "checkpointLocation", str(settings.paths.checkpoints_dir / settings.batch_layer.archive_job_name)
        )
        .trigger(availableNow=True)
    )
    runs = run_until_consumed(lambda: writer.start(str(settings.paths.archive_table)))
    # recentProgress keeps the last 100 batches of a run (spark.sql.streaming.numRecentProgressUpdates).
    progress = [p for query in runs for p in query.recentProgress if p.numInputRows]
    return ArchiveRun(batches=len(progress), records=sum(p.numInputRows for p in progress))
