"""The archive: every record of the profiles topic, as received, in a Delta table partitioned by
ingestion date. The immutable master dataset the batch views are recomputed from.

A Structured Streaming query with ``trigger(availableNow=True)`` and its own checkpoint: each run
appends exactly the offsets that arrived since the last one. Delta's streaming sink records each
batch id in the table's transaction log, so a batch replayed after a crash is not appended twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import reduce

from delta.tables import DeltaTable
from kafka import KafkaConsumer, TopicPartition
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
    days: tuple[date, ...] = ()
    """The UTC ingestion days the new records went to, oldest first: the silver days to refresh."""


def archived_end_offsets(spark: SparkSession, settings: Settings) -> dict[int, int]:
    """The next offset to archive per Kafka partition (last archived offset + 1), none before a first run."""
    if not DeltaTable.isDeltaTable(spark, settings.paths.archive_table):
        return {}
    rows = (
        spark.read.format("delta")
        .load(settings.paths.archive_table)
        .groupBy("partition")
        .agg(F.max("offset").alias("last"))
        .collect()
    )
    return {row.partition: row.last + 1 for row in rows}


def topic_end_offsets(settings: Settings) -> dict[int, int]:
    """The profiles topic's end offset per partition (what an up-to-date archive has consumed)."""
    consumer = KafkaConsumer(**settings.kafka.client_options())
    try:
        partitions = [
            TopicPartition(settings.kafka.profiles_topic, p)
            for p in consumer.partitions_for_topic(settings.kafka.profiles_topic) or ()
        ]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def ingestion_days_from(spark: SparkSession, settings: Settings, offsets: dict[int, int]) -> tuple[date, ...]:
    """The ingestion days of the archived records at or after ``offsets`` (per Kafka partition).

    A Kafka partition missing from ``offsets`` counts from its start. Delta keeps min/max statistics of
    ``offset`` per file, so the files archived before ``offsets`` are skipped, not read.
    """
    if not DeltaTable.isDeltaTable(spark, settings.paths.archive_table):
        return ()
    archive = spark.read.format("delta").load(settings.paths.archive_table)
    newer = [(F.col("partition") == p) & (F.col("offset") >= o) for p, o in offsets.items()]
    unknown = ~F.col("partition").isin(list(offsets)) if offsets else F.lit(True)
    rows = archive.where(reduce(lambda a, b: a | b, newer, unknown)).select("ingestion_date").distinct()
    return tuple(sorted(row.ingestion_date for row in rows.collect()))


def run_archive(
    settings: Settings,
    spark: SparkSession,
    topic: str | None = None,
    days_since: dict[int, int] | None = None,
) -> ArchiveRun:
    """Append the topic's new records to the archive table and return what was appended.

    ``days`` of the result are the ingestion days of the records past ``days_since`` (next offset per
    Kafka partition), by default the archive's end before this run. A scheduler passes the end it saw
    after its last successful run instead, so the days of a run that appended and then failed are not lost.
    """
    topic = topic or settings.kafka.profiles_topic
    require_topic(settings.kafka, topic)
    before = archived_end_offsets(spark, settings) if days_since is None else days_since
    kafka_rows = (
        spark.readStream.format("kafka")
        .options(**settings.kafka.spark_options())
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
        .option("checkpointLocation", settings.paths.checkpoint(settings.batch_layer.archive_job_name))
        .trigger(availableNow=True)
    )
    runs = run_until_consumed(lambda: writer.start(settings.paths.archive_table))
    # recentProgress keeps the last 100 batches of a run (spark.sql.streaming.numRecentProgressUpdates).
    progress = [p for query in runs for p in query.recentProgress if p.numInputRows]
    records = sum(p.numInputRows for p in progress)
    # Read back from the table rather than from the query: the Delta sink decides what is appended (a
    # replayed batch it had already committed is skipped there), and ``days_since`` may predate this run.
    days = ingestion_days_from(spark, settings, before)
    return ArchiveRun(batches=len(progress), records=records, days=days)
