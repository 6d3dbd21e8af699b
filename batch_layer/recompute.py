"""The authoritative recomputation: archive -> silver profiles -> batch views in Cassandra.

The silver table holds, per UTC ingestion day (its Delta partition), every valid copy of a profile in the
archive, cleaned and pseudonymized: one row per record. A refresh rewrites a range of days (Delta
``replaceWhere``) and leaves the others as they are, so a fix can be backfilled day by day. The records
of that range the parse refuses go to the dead-letter store (the speed layer may have put them there
already: a record's dead letter is stored once, by the layer that met it first).

The batch views apply the counting rule (``core.versions``, in Spark: ``core.aggregates``) to the silver
copies the speed layer has also seen, up to a horizon: the end of the speed layer's last micro-batch whose
records are all in the archive. Serving adds the speed layer's partials of the later batches, so the
merged view counts every record once, and the batch view only corrects what the speed layer counted
(``docs/architecture.md``). A new version becomes current in one single-row write, unless an erasure
started meanwhile; then older versions are deleted.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Observation, Row, SparkSession
from pyspark.sql import functions as F

from batch_layer.archive import archived_end_offsets
from core.aggregates import (
    COPY_COLUMNS,
    age_counts,
    counted_profiles,
    total_views,
    window_floor,
    window_seconds_of,
    window_views,
)
from core.parsing import dead_letter_records, parse_kafka_records
from core.pseudonymization import hmac_sha256_hex_column
from core.settings import Settings
from core.spark import as_utc, collect_dicts, observed, row_dict
from core.transformations import transform_profiles, utc_date
from core.validation import RecordLimits
from stores.batch_views import BatchCurrent, BatchViewStore
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session, mongo_client, mongo_database
from stores.documents import dead_letter_document, mongo_raw_store
from stores.speed_views import CassandraSpeedStore
from stores.subject_keys import SubjectKeyStore, stored_subject_keys, subject_keys_frame

logger = logging.getLogger(__name__)

BATCH_JOB = "batch"
"""How the dead letters the batch layer stores name their layer."""

SILVER_STATS_COLUMNS: tuple[str, ...] = (
    "fetched_at", "source", "gender", "country", "nationality", "email_domain", "age", "age_band",
    "registration_date", "partition", "offset",
)  # fmt: skip
"""Silver columns Delta keeps min/max statistics of (for data skipping). Not the uuid or the pseudonyms:
the statistics stay in the transaction log after an erasure deleted the rows (until the log is cleaned
up), and a uuid there would outlive its subject."""


DayRange = tuple[date, date]
"""First and last UTC ingestion day, both included."""


def parsed_records(archive: DataFrame, subject_keys: DataFrame | None, limits: RecordLimits) -> DataFrame:
    """Archive rows -> ``core.parsing.parse_kafka_records`` rows with their ``ingestion_date`` (derived
    again as the archive derives it). Sealed identifiers are opened with ``subject_keys``.

    Why the task id: Spark 4.1 pushes a filter below the projection that computes what it tests,
    pasting the expression in (SPARK-47672), and then splits the pasted JSON parse into one
    ``from_json`` per field read. Here that parsed every record some forty times and made the batch
    layer 2 to 5 times slower (measured). A filter is not pushed below a projection holding a
    non-deterministic expression such as ``spark_partition_id``, so the JSON is parsed once; the
    callers' filters test ``_task``.
    """
    kafka_rows = archive.withColumnRenamed("kafka_timestamp", "timestamp")
    parsed = parse_kafka_records(kafka_rows, limits, subject_keys).withColumn("_task", F.spark_partition_id())
    return parsed.withColumn("ingestion_date", utc_date(F.col("kafka_timestamp")))


def silver_profiles(parsed: DataFrame, pseudonymization_key: bytes) -> DataFrame:
    """``parsed_records`` -> silver rows: every usable copy, cleaned and pseudonymized, with its
    ``ingestion_date`` and the keyed pseudonym of its uuid (``subject_pseudonym``: how erasure finds a
    subject's rows, and the views leave erased subjects out, without a uuid in the Delta log)."""
    envelopes = parsed.where(F.col("envelope").isNotNull() & (F.col("_task") >= 0)).drop("_task")
    profiles = transform_profiles(envelopes, pseudonymization_key, carry=("ingestion_date",))
    return profiles.withColumn(
        "subject_pseudonym", hmac_sha256_hex_column(F.col("uuid"), pseudonymization_key)
    )


@dataclass(frozen=True)
class SilverRefresh:
    """What a silver refresh wrote."""

    profiles: int
    """Rows now in the refreshed days (one per usable copy)."""
    days: tuple[date, ...]
    """The refreshed days that have profiles."""
    newest_event: datetime | None
    """The newest ``fetched_at`` among them."""
    dead_letters: int = 0
    """Records of those days the parse refused (each stored in the dead-letter store once)."""


def _store_partition_dead_letters(settings: Settings, rows: Iterable[Any]) -> None:
    """Store one partition's dead letters (runs in an executor: it connects to MongoDB itself)."""
    documents = [dead_letter_document(row.asDict(), BATCH_JOB) for row in rows]
    if not documents:
        return
    client = mongo_client(settings)
    try:
        mongo_raw_store(mongo_database(client, settings), settings).insert_dead_letters(
            documents, datetime.now(UTC)
        )
    finally:
        client.close()


WINDOW_ROWS_PER_WRITE = 5_000
"""Window view rows an executor holds and writes at a time."""


def _store_partition_windows(
    settings: Settings, version: int, window_seconds: int, rows: Iterable[Row]
) -> None:
    """Store one partition's window view rows of ``version`` (runs in an executor: it connects to
    Cassandra itself), a bounded chunk at a time."""
    remaining = iter(rows)
    chunk = list(islice(remaining, WINDOW_ROWS_PER_WRITE))
    if not chunk:
        return
    cluster, session = cassandra_session(settings)
    try:
        cassandra = settings.cassandra
        store = BatchViewStore(session, cassandra.keyspace, cassandra.concurrency, cassandra.rows_per_batch)
        width = timedelta(seconds=window_seconds)
        while chunk:
            windows = [row_dict(row) for row in chunk]
            store.write_windows(version, [{**w, "window_end": w["window_start"] + width} for w in windows])
            chunk = list(islice(remaining, WINDOW_ROWS_PER_WRITE))
    finally:
        cluster.shutdown()


def store_window_views(settings: Settings, version: int, window_seconds: int, windows: DataFrame) -> None:
    """Write ``window_views`` rows as ``version``'s from the executors: their number grows with the
    archive's days, so they never travel through the driver."""
    windows.foreachPartition(functools.partial(_store_partition_windows, settings, version, window_seconds))


def store_dead_letters(settings: Settings, parsed: DataFrame) -> None:
    """Store the refused records of ``parsed_records`` in the dead-letter store, from the executors (each
    once: a record the speed layer stored already is left as it is)."""
    letters = dead_letter_records(parsed).where(F.col("_task") >= 0)
    columns = (
        "topic",
        "partition",
        "offset",
        "kafka_timestamp",
        "kafka_key",
        "raw_value",
        "dead_letter_reason",
    )
    letters.select(*columns).foreachPartition(functools.partial(_store_partition_dead_letters, settings))


def _day_predicate(days: DayRange) -> str:
    """The ``replaceWhere`` (and filter) condition selecting ``days`` of a table partitioned by day."""
    first, last = days
    return f"ingestion_date >= '{first.isoformat()}' AND ingestion_date <= '{last.isoformat()}'"


def silver_has_current_layout(spark: SparkSession, settings: Settings) -> bool:
    """Whether the silver table exists with today's columns and per-day partitions (tables written
    before held the latest version of each uuid, without ``subject_pseudonym``)."""
    path = str(settings.paths.silver_table)
    if not DeltaTable.isDeltaTable(spark, path):
        return False
    table = DeltaTable.forPath(spark, path)
    partitioned = table.detail().first().partitionColumns == ["ingestion_date"]
    return partitioned and "subject_pseudonym" in table.toDF().columns


def refresh_silver_profiles(
    settings: Settings,
    spark: SparkSession,
    days: DayRange | None = None,
    data_keys: Mapping[str, bytes] | None = None,
) -> SilverRefresh:
    """Rewrite the silver days ``days`` (every archived day when None) from the archive, and store the
    dead letters of those days.

    Sealed identifiers are opened with ``data_keys`` (uuid -> key; read from the key table when None):
    the records of erased subjects have no key and are left out.

    Only the selected days' Delta partitions are replaced, in one atomic commit; a selected day without
    records in the archive becomes empty. A table in an older layout is rebuilt whole, once.
    """
    path = str(settings.paths.silver_table)
    if (
        days is not None
        and DeltaTable.isDeltaTable(spark, path)
        and not silver_has_current_layout(spark, settings)
    ):
        logger.warning("silver table %s predates the current layout: rebuilding every day", path)
        days = None
    started = time.perf_counter()
    if not DeltaTable.isDeltaTable(spark, str(settings.paths.archive_table)):
        logger.info("silver: no archive yet, nothing to refresh")
        return SilverRefresh(0, (), None)
    archive = spark.read.format("delta").load(str(settings.paths.archive_table))
    if days is not None:
        archive = archive.where(_day_predicate(days))
    if data_keys is None:
        data_keys = stored_subject_keys(settings)
    subject_keys = subject_keys_frame(spark, data_keys)
    key = settings.secrets.pseudonymization_key_bytes()
    limits = settings.profiles.limits
    # What the write wrote, observed as it writes (reading the rewritten days back took ~4 s per 1M), and
    # whether the parse refused any record (rare: the producer refuses the same records).
    refused = Observation("silver_refused")
    parsed = parsed_records(archive, subject_keys, limits).observe(
        refused, F.count(F.when(F.col("dead_letter_reason").isNotNull(), 1)).alias("dead_letters")
    )
    written = Observation("silver_written")
    silver = silver_profiles(parsed, key).observe(
        written,
        F.count(F.lit(1)).alias("profiles"),
        F.max("fetched_at").alias("newest"),
        F.collect_set("ingestion_date").alias("days"),
    )
    writer = (
        silver.write.format("delta")
        .mode("overwrite")
        .partitionBy("ingestion_date")
        .option("delta.dataSkippingStatsColumns", ",".join(SILVER_STATS_COLUMNS))
    )
    if days is None:
        writer = writer.option("overwriteSchema", "true")
    else:
        writer = writer.option("replaceWhere", _day_predicate(days))
    writer.save(path)
    written_metrics = observed(written) or {"profiles": 0, "days": [], "newest": None}
    dead = (observed(refused) or {"dead_letters": 0})["dead_letters"]
    if dead:  # a second parse, only when some record was refused
        store_dead_letters(settings, parsed_records(archive, subject_keys, limits))
    result = SilverRefresh(
        profiles=written_metrics["profiles"],
        days=tuple(sorted(written_metrics["days"])),
        newest_event=as_utc(written_metrics["newest"]),
        dead_letters=dead,
    )
    logger.info(
        "silver: %d rows in days %s, %d dead letters; %.1f s",
        result.profiles,
        "all" if days is None else f"{days[0]}..{days[1]}",
        result.dead_letters,
        time.perf_counter() - started,
    )
    return result


@dataclass(frozen=True)
class BatchViewVersion:
    """What a recomputation wrote, and whether it became current."""

    version: int
    cutoff: datetime | None
    profiles: int
    removed_versions: list[int]
    speed_batch_id: int | None = None
    made_current: bool = True
    note: str | None = None
    """Why the version did not become current (it was deleted again)."""


MAX_ATTEMPTS = 3
"""Recomputations in a row when erasures keep starting during them (each one makes the view stale)."""


def choose_horizon(
    archived: Mapping[int, int], speed_batches: Iterable[tuple[int, Mapping[int, int]]]
) -> tuple[int | None, dict[int, int]]:
    """The speed layer's last batch whose records are all archived, and the offsets after it.

    ``archived``: the next offset to archive per Kafka partition; ``speed_batches``: each batch's id and
    end offsets, newest first. Without any speed batch the view covers the whole archive (``None``); when
    no batch is archived yet, it covers nothing (batch id -1: every speed partial counts).
    """
    seen_any = False
    for batch_id, ends in speed_batches:
        seen_any = True
        if all(end <= archived.get(partition, 0) for partition, end in ends.items()):
            return batch_id, dict(ends)
    return (-1, {}) if seen_any else (None, dict(archived))


def within_horizon(copies: DataFrame, horizon: Mapping[int, int]) -> DataFrame:
    """The copies at offsets before ``horizon`` in their Kafka partition."""
    condition = F.lit(False)
    for partition, end in horizon.items():
        condition = condition | ((F.col("partition") == F.lit(partition)) & (F.col("offset") < F.lit(end)))
    return copies.where(condition)


def recompute_batch_views(
    settings: Settings, spark: SparkSession, version: int | None = None
) -> BatchViewVersion:
    """Batch views from the silver table up to the speed layer's horizon: a new version, made current,
    older versions removed."""
    cluster, session = cassandra_session(settings)
    try:
        apply_schema(session, settings.cassandra.keyspace, settings.cassandra.keyspace_replication)
        cassandra = settings.cassandra
        store = BatchViewStore(session, cassandra.keyspace, cassandra.concurrency, cassandra.rows_per_batch)
        speed = CassandraSpeedStore(
            session, cassandra.keyspace, cassandra.concurrency, cassandra.rows_per_batch
        )
        keys = SubjectKeyStore(
            session, cassandra.keyspace, settings.secrets.pseudonymization_key_bytes(), cassandra.concurrency
        )
        for _attempt in range(MAX_ATTEMPTS):
            result = _recompute_once(settings, spark, store, speed, keys, version)
            if result.made_current or result.note is not None:
                return result
            logger.warning("an erasure started during the recomputation: computing again")
        raise RuntimeError(
            f"erasures started during each of {MAX_ATTEMPTS} recomputations: run it again later"
        )
    finally:
        cluster.shutdown()


def _recompute_once(
    settings: Settings,
    spark: SparkSession,
    store: BatchViewStore,
    speed: CassandraSpeedStore,
    keys: SubjectKeyStore,
    version: int | None,
) -> BatchViewVersion:
    started_at = datetime.now(UTC)
    # Read before the erased subjects: an erasure logs its subject, then takes its sequence number.
    erasure_seq = store.erasure_seq()
    erased = keys.erased_pseudonyms()
    speed_batch_id, horizon = choose_horizon(
        archived_end_offsets(spark, settings), speed.batch_end_offsets(settings.speed_layer.job_name)
    )
    version = version if version is not None else int(started_at.timestamp() * 1000)
    silver = (
        spark.read.format("delta").load(str(settings.paths.silver_table))
        if _has_silver(spark, settings)
        else None
    )
    window_duration = settings.profiles.window_duration
    window_seconds = window_seconds_of(window_duration)
    totals: list[dict[str, Any]] = []
    newest_event = None
    profiles = 0
    if silver is not None:
        copies = within_horizon(silver, horizon)
        if erased:
            gone = spark.createDataFrame([(pseudonym,) for pseudonym in erased], "subject_pseudonym string")
            copies = copies.join(F.broadcast(gone), "subject_pseudonym", "left_anti")
        counted = counted_profiles(
            copies.select(*COPY_COLUMNS), settings.profiles.minimum_age, window_duration
        )
        counts = age_counts(counted).persist(StorageLevel.MEMORY_AND_DISK)
        started = time.monotonic()
        store_window_views(settings, version, window_seconds, window_views(counts))
        logger.info("window views of version %d written in %.1f s", version, time.monotonic() - started)
        # One row per dimension value: a small result, written from the driver.
        totals = collect_dicts(total_views(counts))
        # Every counted profile has exactly one age band.
        profiles = sum(row["profiles"] for row in totals if row["dimension"] == "age_band")
        counts.unpersist()
        newest_event = as_utc(copies.agg(F.max("fetched_at")).first()[0])
    cutoff = window_floor(newest_event, window_seconds) if newest_event is not None else None
    store.write_totals(version, totals)
    view = BatchCurrent(
        version, cutoff, profiles, datetime.now(UTC), speed_batch_id, horizon, erasures_seen=erasure_seq
    )
    waiting = [
        correction.seq
        for correction in store.corrections()
        if correction.seq <= erasure_seq
        and correction.speed_batch_id is not None
        and (speed_batch_id is None or correction.speed_batch_id > speed_batch_id)
    ]
    if waiting:
        # The subject's changes in the speed batches after this view's horizon would stay counted.
        store.delete_version(version)
        note = (
            f"not made current: erasures {waiting} happened after speed batch {speed_batch_id}, which the "
            "archive has not passed yet; archive again, then recompute"
        )
        logger.warning("batch views version %d %s", version, note)
        return BatchViewVersion(version, cutoff, profiles, [], speed_batch_id, made_current=False, note=note)
    previous = store.current()
    if not store.make_current(view, erasure_seq):
        store.delete_version(version)
        return BatchViewVersion(version, cutoff, profiles, [], speed_batch_id, made_current=False)
    store.delete_corrections_through(erasure_seq)
    removed = sorted(v for v in store.versions() if v != version)
    for old in removed:
        store.delete_version(old)
    logger.info(
        "batch views version %d: %d profiles up to speed batch %s (newest window %s; was %s), removed %s",
        version,
        profiles,
        speed_batch_id,
        cutoff,
        previous.version if previous else None,
        removed,
    )
    return BatchViewVersion(version, cutoff, profiles, removed, speed_batch_id)


def _has_silver(spark: SparkSession, settings: Settings) -> bool:
    return DeltaTable.isDeltaTable(spark, str(settings.paths.silver_table))
