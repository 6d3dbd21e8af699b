"""The speed layer: Kafka -> parse, validate, transform, pseudonymize -> MongoDB raw documents and
Cassandra real-time views, exactly-once in effect.

Each micro-batch (``foreachBatch``) is one Spark pass, and no record reaches the driver:

1. in the executors, each Kafka partition's records get their subjects' data keys
   (``speed_layer.executor.with_data_keys``);
2. the JVM parses and validates them and opens the sealed identifiers (``core.parsing``), then
   transforms and pseudonymizes them (``core.transformations``);
3. in the executors again, each Kafka partition's records are applied to the stores by the version rule
   (``speed_layer.task``: states, partials keyed by batch id and partition, raw documents, dead
   letters), which a replay of the batch after a crash repeats identically;
4. the driver collects one summary row per Kafka partition and writes the batch's metrics row.

No stateful Spark operator is involved, so nothing waits for a watermark: a batch's rows are visible
as soon as it commits, and late rows are added to their own (older) window instead of being dropped.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener
from pyspark.sql.streaming.listener import QueryProgressEvent
from pyspark.sql.types import BinaryType, StructField, StructType

from core.parsing import DATA_KEY_COLUMN, parse_kafka_records
from core.settings import Settings
from core.streaming import require_topic, run_until_consumed
from core.transformations import transform_profiles
from speed_layer.executor import SUMMARY_SCHEMA, BatchContext, apply_records, outcome_of, with_data_keys
from speed_layer.task import TaskOutcome
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session, mongo_client, mongo_database
from stores.documents import MongoRawStore, mongo_raw_store
from stores.outages import ride_out
from stores.speed_views import CassandraSpeedStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOutcome:
    """What one micro-batch did (also stored as a row of ``stream_batches``)."""

    batch_id: int
    input_rows: int
    new_profiles: int
    duplicates: int
    dead_lettered: int
    under_age: int
    duration_ms: int
    erased: int = 0
    """Records of subjects erased since they were published: skipped, their identifiers unreadable."""


def kafka_lag(end_offsets_json: str | None, latest_offsets_json: str | None) -> dict[int, int]:
    """Records behind the latest offset, per partition, from a Kafka source's progress offsets."""
    if not end_offsets_json or not latest_offsets_json:
        return {}
    end, latest = json.loads(end_offsets_json), json.loads(latest_offsets_json)
    return {
        int(partition): int(latest_offset) - int(end.get(topic, {}).get(partition, latest_offset))
        for topic, partitions in latest.items()
        for partition, latest_offset in partitions.items()
    }


class StopRequestedError(RuntimeError):
    """Raised in a micro-batch that starts after a stop was requested; nothing of it is written."""


CARRIED_COLUMNS = (
    "topic", "raw_value", "kafka_key", "kafka_timestamp", "dead_letter_reason", "usable", "identifiers_text",
)  # fmt: skip
"""The parsed record's columns the executors need besides the transformed profile."""


def _with_data_key(kafka_schema: StructType) -> StructType:
    """The Kafka source's schema with the ``data_key`` column ``with_data_keys`` adds."""
    return StructType([*kafka_schema.fields, StructField(DATA_KEY_COLUMN, BinaryType(), nullable=True)])


class SpeedLayerJob:
    """The streaming job, its stores and its micro-batch function."""

    def __init__(
        self,
        settings: Settings,
        spark: SparkSession,
        cassandra: CassandraSpeedStore,
        mongo: MongoRawStore,
        topic: str,
        checkpoint_dir: str,
    ) -> None:
        self.settings = settings
        self.spark = spark
        self.cassandra = cassandra
        self.mongo = mongo
        self.topic = topic
        self.checkpoint_dir = checkpoint_dir
        self.job_name = settings.speed_layer.job_name
        self._pseudonymization_key = settings.secrets.pseudonymization_key_bytes()
        self._listener: BatchProgressListener | None = None
        self.stop_requested = threading.Event()
        """Set to stop at the next batch boundary: the batch under way finishes, the next one refuses."""

    # -- the micro-batch -------------------------------------------------------------------------------

    def process_batch(self, batch: DataFrame, batch_id: int) -> BatchOutcome:
        """Parse, transform and apply one micro-batch to the stores; idempotent for a given ``batch_id``."""
        if self.stop_requested.is_set():
            # Under load the next batch starts the moment the last one ends, leaving no gap to stop
            # in. Refusing it before it writes anything fails the query without committing the batch,
            # so the next run reads those offsets again.
            raise StopRequestedError(f"stop requested: batch {batch_id} is left for the next run")
        # A store that does not answer fails the attempt; the batch is run again whole (it is
        # idempotent), for up to the outage tolerance.
        return ride_out(
            lambda: self._process_batch(batch, batch_id),
            f"speed batch {batch_id}",
            f"the job resumes from checkpoint {self.checkpoint_dir} at that batch",
            self.settings,
        )

    def _process_batch(self, batch: DataFrame, batch_id: int) -> BatchOutcome:
        started = time.monotonic()
        processed_at = datetime.now(UTC)
        context = BatchContext(self.settings, batch_id, processed_at, self.job_name, self.checkpoint_dir)
        # One Spark pass: keys looked up and stores written in the executors; a summary row per Kafka
        # partition is all the driver receives.
        # No more tasks than cores: a Kafka partition beyond them would run in a second wave, after
        # the others, and double the batch's time. Coalescing merges whole Kafka partitions, so a task
        # still holds every copy of its uuids.
        tasks = self.spark.sparkContext.defaultParallelism
        keyed = batch.coalesce(tasks).mapInArrow(
            functools.partial(with_data_keys, self.settings), _with_data_key(batch.schema)
        )
        records = self._batch_records(
            parse_kafka_records(keyed, self.settings.profiles.limits, keep_identifiers_text=True)
        )
        summaries = records.mapInArrow(functools.partial(apply_records, context), SUMMARY_SCHEMA).collect()
        totals = TaskOutcome(partition=-1)
        end_offsets = self.cassandra.end_offsets_before(self.job_name, batch_id)
        for task in (outcome_of(row) for row in summaries):
            totals.add(task)
            end_offsets[task.partition] = max(end_offsets.get(task.partition, 0), task.end_offset)
        if totals.new_profiles or totals.later_copies:
            self.mongo.trim_latest()
        outcome = BatchOutcome(
            batch_id=batch_id,
            input_rows=totals.input_rows,
            new_profiles=totals.new_profiles,
            duplicates=totals.later_copies,
            dead_lettered=totals.dead_lettered,
            under_age=totals.under_age,
            duration_ms=int((time.monotonic() - started) * 1000),
            erased=totals.erased,
        )
        if totals.input_rows:
            self.cassandra.write_batch_metrics(
                {
                    "job": self.job_name,
                    "batch_id": batch_id,
                    "processed_at": processed_at,
                    "input_rows": outcome.input_rows,
                    "new_profiles": outcome.new_profiles,
                    "duplicates": outcome.duplicates,
                    "dead_lettered": outcome.dead_lettered,
                    "under_age": outcome.under_age,
                    "late_rows_dropped": 0,  # no watermark: late rows land in their own window
                    "duration_ms": outcome.duration_ms,
                    "max_event_time": totals.max_event_time,
                    "end_offsets": end_offsets,
                    "windows": totals.windows,
                }
            )
        logger.info(
            "speed batch %d: %d rows, %d new profiles, %d later copies, %d dead-lettered, %d under age, "
            "%d of erased subjects, %d ms",
            batch_id,
            outcome.input_rows,
            outcome.new_profiles,
            outcome.duplicates,
            outcome.dead_lettered,
            outcome.under_age,
            outcome.erased,
            outcome.duration_ms,
        )
        return outcome

    def _batch_records(self, parsed: DataFrame) -> DataFrame:
        """Every record of a batch in one frame: its Kafka columns, dead-letter reason, whether it is
        usable, and its transformed profile (nulls when it is not usable)."""
        flagged = parsed.withColumn("usable", F.col("envelope").isNotNull())
        return transform_profiles(
            flagged,
            self._pseudonymization_key,
            carry=CARRIED_COLUMNS,
        )

    # -- the query -------------------------------------------------------------------------------------

    def start(self, available_now: bool = False) -> StreamingQuery:
        """Start the streaming query; with ``available_now`` it stops once the topic is consumed."""
        speed = self.settings.speed_layer
        require_topic(self.settings.kafka, self.topic)
        kafka_rows = (
            self.spark.readStream.format("kafka")
            .options(**self.settings.kafka.spark_options())
            .option("subscribe", self.topic)
            .option("startingOffsets", speed.starting_offsets)
            .option("maxOffsetsPerTrigger", speed.max_offsets_per_trigger)
            .option("kafka.fetch.max.wait.ms", str(speed.kafka_fetch_max_wait_ms))
            .load()
        )
        writer = (
            kafka_rows.writeStream.queryName(self.query_name)
            .foreachBatch(self.process_batch)
            .option("checkpointLocation", self.checkpoint_dir)
        )
        writer = (
            writer.trigger(availableNow=True)
            if available_now
            else writer.trigger(processingTime=speed.trigger_interval)
        )
        if self._listener is None:
            self._listener = BatchProgressListener(self.cassandra, self.job_name, self.query_name)
            self.spark.streams.addListener(self._listener)
        return writer.start()

    def run_until_consumed(self, timeout_s: float = 3600.0) -> None:
        """Process everything the topic holds now (``availableNow``) and return; raise if the query fails."""
        run_until_consumed(lambda: self.start(available_now=True), timeout_s)

    def stop_listening(self) -> None:
        """Remove the progress listener (call after the query stopped)."""
        if self._listener is not None:
            self.spark.streams.removeListener(self._listener)
            self._listener = None

    @property
    def query_name(self) -> str:
        return f"{self.job_name}_{self.topic}".replace(".", "_")


class BatchProgressListener(StreamingQueryListener):
    """Adds each batch's input rate and Kafka lag per partition to its ``stream_batches`` row."""

    def __init__(self, store: CassandraSpeedStore, job_name: str, query_name: str) -> None:
        self.store = store
        self.job_name = job_name
        self.query_name = query_name

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 (Spark's listener API)
        pass

    def onQueryProgress(self, event: QueryProgressEvent) -> None:  # noqa: N802
        progress = event.progress
        if progress.name != self.query_name or progress.numInputRows == 0:
            return
        if self.store.session.is_shutdown:
            # Spark delivers the last progress after the query ended; the job has closed its stores.
            logger.debug("progress of batch %d after shutdown: not stored", progress.batchId)
            return
        lag: dict[int, int] = {}
        for source in progress.sources:
            lag.update(kafka_lag(source.endOffset, source.latestOffset))
        try:
            self.store.write_batch_progress(
                self.job_name, progress.batchId, float(progress.processedRowsPerSecond or 0.0), lag
            )
        except Exception as error:  # metrics are best effort: Spark delivers events late, even after stop
            logger.warning("could not store the progress of batch %d: %s", progress.batchId, error)
        logger.info(
            "speed progress batch %d: %d rows at %.0f rows/s, lag %s",
            progress.batchId,
            progress.numInputRows,
            progress.processedRowsPerSecond or 0.0,
            lag,
        )

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        pass


@contextmanager
def speed_layer_job(
    settings: Settings, spark: SparkSession, topic: str | None = None, checkpoint_dir: str | None = None
) -> Iterator[SpeedLayerJob]:
    """A ready job: Cassandra schema applied, MongoDB indexes created, connections closed on exit."""
    cluster, session = cassandra_session(settings)
    client = mongo_client(settings)
    try:
        keyspace = settings.cassandra.keyspace
        apply_schema(session, keyspace, settings.cassandra.keyspace_replication)
        database = mongo_database(client, settings)
        mongo = mongo_raw_store(database, settings)
        mongo.ensure_indexes()
        cassandra = CassandraSpeedStore(
            session, keyspace, settings.cassandra.concurrency, settings.cassandra.rows_per_batch
        )
        job = SpeedLayerJob(
            settings,
            spark,
            cassandra,
            mongo,
            topic or settings.kafka.profiles_topic,
            checkpoint_dir or settings.paths.checkpoint(settings.speed_layer.job_name),
        )
        try:
            yield job
        finally:
            job.stop_listening()
    finally:
        client.close()
        cluster.shutdown()
