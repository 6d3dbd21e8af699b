"""The authoritative recomputation: archive -> silver profiles -> batch views in Cassandra.

The silver table holds, per UTC ingestion day (its Delta partition), the cleaned, pseudonymized
profiles of that day's archive records: the latest version of each uuid within the day. A refresh
rewrites a range of days (Delta ``replaceWhere``) and leaves the others as they are, so a fix can be
backfilled day by day. Ages are taken at each profile's event date, as in the speed layer: a day's rows
depend on that day's records only, so rewriting a day alone gives the same rows as rewriting
everything.

The batch views are recomputed from every silver day: the latest version of each uuid ACROSS days (a
profile re-fetched on a later day, or a late copy archived on a later day, is settled here and not in
silver), the shared aggregate definitions, and a new version of the views. The version becomes current
in one single-row write, so readers never see a half-written view; then older versions are deleted.

The batch cutoff is the start of the window holding the newest event: every window before it is
complete in the archive. Serving reads batch windows before the cutoff and speed windows from it on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from cassandra.cluster import Session
from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from core.aggregates import DIMENSIONS, window_aggregates, window_floor, window_seconds_of
from core.parsing import parse_kafka_records
from core.settings import Settings
from core.spark import as_utc, collect_dicts
from core.stores import cassandra_session, execute_in_batches
from core.subject_keys import stored_subject_keys, subject_keys_frame
from core.transformations import split_by_minimum_age, transform_profiles, utc_date
from core.validation import RecordLimits
from infra.cassandra_schema import apply_schema

logger = logging.getLogger(__name__)

VIEW_NAME = "profiles"
"""The row of ``batch_current`` this recomputation owns."""

SILVER_STATS_COLUMNS: tuple[str, ...] = (
    "fetched_at", "source", "gender", "country", "nationality", "email_domain", "age", "age_band",
    "registration_date", "partition", "offset",
)  # fmt: skip
"""Silver columns Delta keeps min/max statistics of (for data skipping). Not the uuid or the pseudonyms:
the statistics stay in the transaction log after an erasure deleted the rows (until the log is cleaned
up), and a uuid there would outlive its subject."""


def latest_versions(profiles: DataFrame, keys: Sequence[str] = ("uuid",)) -> DataFrame:
    """The latest version of each profile (per ``keys``): newest ``fetched_at``, then highest Kafka
    coordinates."""
    newest_first = Window.partitionBy(*keys).orderBy(
        F.col("fetched_at").desc(), F.col("partition").desc(), F.col("offset").desc()
    )
    return profiles.withColumn("_rank", F.row_number().over(newest_first)).where("_rank = 1").drop("_rank")


DayRange = tuple[date, date]
"""First and last UTC ingestion day, both included."""


def parsed_envelopes(archive: DataFrame, subject_keys: DataFrame | None, limits: RecordLimits) -> DataFrame:
    """Archive rows -> valid envelopes (as ``core.parsing.valid_envelopes``) with their ``ingestion_date``
    (the parser keeps the Kafka columns only; the date is derived again as the archive derives it).
    Sealed identifiers are opened with ``subject_keys``; the records of erased subjects are left out.

    Why the filter also tests the task id: Spark 4.1 pushes a filter below the projection that
    computes what it tests, pasting the expression in (SPARK-47672), and then splits the pasted JSON
    parse into one ``from_json`` per field read. Here that parsed every record some forty times and
    made the batch layer 2 to 5 times slower (measured). A filter is not pushed below a projection
    holding a non-deterministic expression such as ``spark_partition_id``, so the JSON is parsed once.
    """
    kafka_rows = archive.withColumnRenamed("kafka_timestamp", "timestamp")
    parsed = parse_kafka_records(kafka_rows, limits, subject_keys).withColumn("_task", F.spark_partition_id())
    envelopes = parsed.where(F.col("envelope").isNotNull() & (F.col("_task") >= 0)).drop("_task")
    return envelopes.withColumn("ingestion_date", utc_date(F.col("kafka_timestamp")))


def silver_profiles(
    archive: DataFrame, subject_keys: DataFrame | None, pseudonymization_key: bytes, limits: RecordLimits
) -> DataFrame:
    """Archive rows -> silver rows: cleaned, pseudonymized, the latest version of each uuid per
    ``ingestion_date`` (the last column)."""
    envelopes = parsed_envelopes(archive, subject_keys, limits)
    profiles = transform_profiles(envelopes, pseudonymization_key, carry=("ingestion_date",))
    return latest_versions(profiles, ("uuid", "ingestion_date"))


def current_profiles(silver: DataFrame) -> DataFrame:
    """The latest version of each uuid across every ingestion day of the silver table."""
    return latest_versions(silver)


def all_time_aggregates(window_rows: DataFrame) -> DataFrame:
    """Per-window aggregates merged into all-time ones per dimension value (counts and sums add up)."""
    return window_rows.groupBy("dimension", "value").agg(
        F.sum("profiles").alias("profiles"),
        F.sum("age_sum").alias("age_sum"),
        F.min("age_min").alias("age_min"),
        F.max("age_max").alias("age_max"),
    )


def batch_cutoff(max_event_time: datetime, window_seconds: int) -> datetime:
    """The start of the window holding ``max_event_time``: the views are complete before it."""
    return window_floor(max_event_time, window_seconds)


@dataclass(frozen=True)
class BatchViewVersion:
    """What a recomputation wrote and made current."""

    version: int
    cutoff: datetime | None
    profiles: int
    removed_versions: list[int]


class BatchViewStore:
    """The batch view tables of one keyspace."""

    def __init__(self, session: Session, keyspace: str, concurrency: int, rows_per_batch: int = 5) -> None:
        self.session = session
        self.keyspace = keyspace
        self.concurrency = concurrency
        self.rows_per_batch = rows_per_batch
        table = f"{keyspace}."
        self._insert_aggregate = session.prepare(
            f"INSERT INTO {table}batch_aggregates "
            "(version, dimension, value, profiles, age_sum, age_min, age_max) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert_window_aggregate = session.prepare(
            f"INSERT INTO {table}batch_window_aggregates (version, dimension, window_start, value, "
            "window_end, profiles, age_sum, age_min, age_max) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert_window = session.prepare(
            f"INSERT INTO {table}batch_windows (version, dimension, window_start) VALUES (?, ?, ?)"
        )

    def _execute_all(self, statement: Any, parameters: Sequence[Sequence[Any]]) -> None:
        execute_in_batches(self.session, statement, parameters, self.rows_per_batch, self.concurrency)

    def current(self) -> tuple[int, datetime | None] | None:
        """The current version and its cutoff, if a view was ever made current."""
        row = self.session.execute(
            f"SELECT version, cutoff FROM {self.keyspace}.batch_current WHERE view_name = %s", (VIEW_NAME,)
        ).one()
        return (row.version, row.cutoff) if row else None

    def write_version(
        self, version: int, totals: list[dict[str, Any]], windows: list[dict[str, Any]]
    ) -> None:
        self._execute_all(
            self._insert_window,
            sorted({(version, w["dimension"], w["window_start"]) for w in windows}),
        )
        self._execute_all(
            self._insert_window_aggregate,
            [
                (version, w["dimension"], w["window_start"], w["value"], w["window_end"],
                 w["profiles"], w["age_sum"], w["age_min"], w["age_max"])
                for w in windows
            ],
        )  # fmt: skip
        self._execute_all(
            self._insert_aggregate,
            [
                (version, t["dimension"], t["value"], t["profiles"], t["age_sum"], t["age_min"], t["age_max"])
                for t in totals
            ],
        )

    def make_current(self, version: int, cutoff: datetime | None, profiles: int) -> None:
        """Switch readers to ``version`` in one single-row write."""
        self.session.execute(
            f"INSERT INTO {self.keyspace}.batch_current (view_name, version, cutoff, profiles, computed_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            (VIEW_NAME, version, cutoff, profiles, datetime.now(UTC)),
        )

    def versions(self) -> set[int]:
        """Every version that still has rows (one partition per version and dimension)."""
        rows = self.session.execute(
            f"SELECT DISTINCT version, dimension FROM {self.keyspace}.batch_aggregates"
        )
        return {row.version for row in rows}

    def delete_version(self, version: int) -> None:
        """Remove a version's rows, partition by partition (found through the window index)."""
        for dimension in DIMENSIONS:
            windows = [
                row.window_start
                for row in self.session.execute(
                    f"SELECT window_start FROM {self.keyspace}.batch_windows "
                    "WHERE version = %s AND dimension = %s",
                    (version, dimension),
                )
            ]
            for window_start in windows:
                self.session.execute(
                    f"DELETE FROM {self.keyspace}.batch_window_aggregates "
                    "WHERE version = %s AND dimension = %s AND window_start = %s",
                    (version, dimension, window_start),
                )
            for table in ("batch_windows", "batch_aggregates"):
                self.session.execute(
                    f"DELETE FROM {self.keyspace}.{table} WHERE version = %s AND dimension = %s",
                    (version, dimension),
                )


@dataclass(frozen=True)
class SilverRefresh:
    """What a silver refresh wrote."""

    profiles: int
    """Rows now in the refreshed days (one per uuid and day)."""
    days: tuple[date, ...]
    """The refreshed days that have profiles."""
    newest_event: datetime | None
    """The newest ``fetched_at`` among them."""


def _day_predicate(days: DayRange) -> str:
    """The ``replaceWhere`` (and filter) condition selecting ``days`` of a table partitioned by day."""
    first, last = days
    return f"ingestion_date >= '{first.isoformat()}' AND ingestion_date <= '{last.isoformat()}'"


def silver_is_partitioned_by_day(spark: SparkSession, settings: Settings) -> bool:
    """Whether the silver table exists in the per-day layout (tables written before it had one row per
    uuid overall and no ``ingestion_date``)."""
    path = str(settings.paths.silver_table)
    if not DeltaTable.isDeltaTable(spark, path):
        return False
    return DeltaTable.forPath(spark, path).detail().first().partitionColumns == ["ingestion_date"]


def refresh_silver_profiles(
    settings: Settings,
    spark: SparkSession,
    days: DayRange | None = None,
    data_keys: Mapping[str, bytes] | None = None,
) -> SilverRefresh:
    """Rewrite the silver days ``days`` (every archived day when None) from the archive.

    Sealed identifiers are opened with ``data_keys`` (uuid -> key; read from the key table when None):
    the records of erased subjects have no key and are left out.

    Only the selected days' Delta partitions are replaced, in one atomic commit; a selected day without
    records in the archive becomes empty. A table in the old layout is rebuilt whole, once.
    """
    path = str(settings.paths.silver_table)
    if (
        days is not None
        and DeltaTable.isDeltaTable(spark, path)
        and not silver_is_partitioned_by_day(spark, settings)
    ):
        logger.warning("silver table %s predates the per-day layout: rebuilding every day", path)
        days = None
    started = time.perf_counter()
    archive = spark.read.format("delta").load(str(settings.paths.archive_table))
    if days is not None:
        archive = archive.where(_day_predicate(days))
    if data_keys is None:
        data_keys = stored_subject_keys(settings)
    subject_keys = subject_keys_frame(spark, data_keys)
    key = settings.secrets.pseudonymization_key.get_secret_value().encode()
    # What the write wrote, observed as it writes (reading the rewritten days back took ~4 s per 1M).
    written = Observation("silver_written")
    silver = silver_profiles(archive, subject_keys, key, settings.profiles.limits).observe(
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
    observed = written.get
    result = SilverRefresh(
        profiles=observed["profiles"],
        days=tuple(sorted(observed["days"])),
        newest_event=as_utc(observed["newest"]),
    )
    logger.info(
        "silver: %d rows in days %s; %.1f s",
        result.profiles,
        "all" if days is None else f"{days[0]}..{days[1]}",
        time.perf_counter() - started,
    )
    return result


def recompute_batch_views(
    settings: Settings, spark: SparkSession, version: int | None = None
) -> BatchViewVersion:
    """Batch views from the silver table: a new version, made current, older versions removed."""
    silver = spark.read.format("delta").load(str(settings.paths.silver_table))
    window_duration = settings.profiles.window_duration
    # The newest event is the latest version of its uuid: no need to deduplicate to find it.
    newest_event = silver.agg(F.max("fetched_at")).first()[0]
    version = version if version is not None else int(datetime.now(UTC).timestamp() * 1000)
    cluster, session = cassandra_session(settings)
    try:
        apply_schema(session, settings.cassandra.keyspace, settings.cassandra.replication_factor)
        store = BatchViewStore(
            session,
            settings.cassandra.keyspace,
            settings.cassandra.concurrency,
            settings.cassandra.rows_per_batch,
        )
        if newest_event is None:  # an empty archive: an empty view, no cutoff
            store.make_current(version, None, 0)
            return BatchViewVersion(version, None, 0, [])
        cutoff = batch_cutoff(newest_event.astimezone(UTC), window_seconds_of(window_duration))
        # Only the columns the views use go through the deduplication's shuffle, once: the result is
        # kept (memory, else disk) for the aggregates and the count.
        latest = current_profiles(
            silver.select("uuid", "fetched_at", "partition", "offset", "age", *DIMENSIONS)
        )
        adults, _under_age = split_by_minimum_age(latest, settings.profiles.minimum_age)
        complete = adults.where(F.col("fetched_at") < F.lit(cutoff)).drop("uuid", "partition", "offset")
        complete = complete.persist(StorageLevel.MEMORY_AND_DISK)
        window_rows = window_aggregates(complete, window_duration).persist()
        windows = collect_dicts(window_rows)
        totals = collect_dicts(all_time_aggregates(window_rows))
        window_rows.unpersist()
        profiles = complete.count()
        complete.unpersist()
        store.write_version(version, totals, windows)
        previous = store.current()
        store.make_current(version, cutoff, profiles)
        removed = sorted(v for v in store.versions() if v != version)
        for old in removed:
            store.delete_version(old)
        logger.info(
            "batch views version %d: %d profiles before cutoff %s (previous %s), removed %s",
            version,
            profiles,
            cutoff,
            previous,
            removed,
        )
        return BatchViewVersion(version, cutoff, profiles, removed)
    finally:
        cluster.shutdown()
