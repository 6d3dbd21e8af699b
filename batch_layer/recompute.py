"""The authoritative recomputation: archive -> silver profiles -> batch views in Cassandra.

Reads the whole Delta archive, parses it with the shared schema, keeps the latest version of each
profile (by uuid), applies the shared transformations and aggregate definitions, and writes a new
version of the batch views. The version becomes current in one single-row write, so readers never
see a half-written view; then older versions are deleted.

The batch cutoff is the start of the window holding the newest event: every window before it is
complete in the archive. Serving reads batch windows before the cutoff and speed windows from it on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.aggregates import DIMENSIONS, window_aggregates
from core.parsing import parse_kafka_records, valid_envelopes
from core.settings import Settings
from core.spark import collect_dicts
from core.stores import cassandra_session
from core.transformations import split_by_minimum_age, transform_profiles
from infra.cassandra_schema import apply_schema

logger = logging.getLogger(__name__)

VIEW_NAME = "profiles"
"""The row of ``batch_current`` this recomputation owns."""


def latest_versions(profiles: DataFrame) -> DataFrame:
    """The latest version of each profile: newest ``fetched_at``, then highest Kafka coordinates."""
    newest_first = Window.partitionBy("uuid").orderBy(
        F.col("fetched_at").desc(), F.col("partition").desc(), F.col("offset").desc()
    )
    return profiles.withColumn("_rank", F.row_number().over(newest_first)).where("_rank = 1").drop("_rank")


def silver_profiles(archive: DataFrame, processing_date: date, pseudonymization_key: bytes) -> DataFrame:
    """Archive rows -> the cleaned, pseudonymized, deduplicated profiles (one row per uuid)."""
    kafka_rows = archive.withColumnRenamed("kafka_timestamp", "timestamp")
    profiles = transform_profiles(
        valid_envelopes(parse_kafka_records(kafka_rows)), processing_date, pseudonymization_key
    )
    return latest_versions(profiles)


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
    epoch = int(max_event_time.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_seconds, UTC)


def window_seconds_of(window_duration: str) -> int:
    """Seconds in a Spark interval string such as ``"1 minute"`` or ``"30 seconds"``."""
    amount, unit = window_duration.split()
    seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[unit.rstrip("s")]
    return int(amount) * seconds


@dataclass(frozen=True)
class BatchViewVersion:
    """What a recomputation wrote and made current."""

    version: int
    cutoff: datetime | None
    profiles: int
    removed_versions: list[int]


class BatchViewStore:
    """The batch view tables of one keyspace."""

    def __init__(self, session: Session, keyspace: str, concurrency: int) -> None:
        self.session = session
        self.keyspace = keyspace
        self.concurrency = concurrency
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
        execute_concurrent_with_args(
            self.session, statement, list(parameters), concurrency=self.concurrency, raise_on_first_error=True
        )

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
    newest_event: datetime | None


def refresh_silver_profiles(settings: Settings, spark: SparkSession) -> SilverRefresh:
    """Rewrite the silver table from the whole archive: one cleaned, pseudonymized row per uuid.

    Ages are taken at the date of the archive's newest event, so the same archive always gives the
    same table (and the same views).
    """
    archive = spark.read.format("delta").load(str(settings.paths.archive_table))
    newest_event = (
        valid_envelopes(parse_kafka_records(archive.withColumnRenamed("kafka_timestamp", "timestamp")))
        .agg(F.max("envelope.fetched_at"))
        .first()[0]
    )
    processing_date = (newest_event.astimezone(UTC) if newest_event else datetime.now(UTC)).date()
    key = settings.secrets.pseudonymization_key.get_secret_value().encode()
    silver = silver_profiles(archive, processing_date, key).drop("full_name")
    silver.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
        str(settings.paths.silver_table)
    )
    written = spark.read.format("delta").load(str(settings.paths.silver_table))
    return SilverRefresh(written.count(), newest_event.astimezone(UTC) if newest_event else None)


def recompute_batch_views(
    settings: Settings, spark: SparkSession, version: int | None = None
) -> BatchViewVersion:
    """Batch views from the silver table: a new version, made current, older versions removed."""
    silver = spark.read.format("delta").load(str(settings.paths.silver_table))
    window_duration = settings.speed_layer.window_duration
    newest_event = silver.agg(F.max("fetched_at")).first()[0]
    version = version if version is not None else int(datetime.now(UTC).timestamp() * 1000)
    cluster, session = cassandra_session(settings)
    try:
        apply_schema(session, settings.cassandra.keyspace, settings.cassandra.replication_factor)
        store = BatchViewStore(
            session, settings.cassandra.keyspace, settings.speed_layer.cassandra_concurrency
        )
        if newest_event is None:  # an empty archive: an empty view, no cutoff
            store.make_current(version, None, 0)
            return BatchViewVersion(version, None, 0, [])
        cutoff = batch_cutoff(newest_event.astimezone(UTC), window_seconds_of(window_duration))
        adults, _under_age = split_by_minimum_age(silver, settings.speed_layer.minimum_age)
        complete = adults.where(F.col("fetched_at") < F.lit(cutoff))
        window_rows = window_aggregates(complete, window_duration).persist()
        windows = collect_dicts(window_rows)
        totals = collect_dicts(all_time_aggregates(window_rows))
        window_rows.unpersist()
        profiles = complete.count()
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
