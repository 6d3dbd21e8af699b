"""Retention: how long each store keeps data (``core.settings.RetentionSettings``), and enforcing it.

Why in ``core/``: retention concerns every store of both layers (the topic, MongoDB, Cassandra, the
Delta lake), like the register of processing (``privacy/register.py``) that states it; ``core`` is the one
package every layer depends on, and no single layer owns all four stores.

Why a job and not only the servers' own expiry: FerretDB has no TTL indexes (the job's ``delete_many``
works the same on MongoDB), and Delta has no expiry at all. Where a server can expire data itself it
is asked to as well:

- **Kafka**: ``retention.ms`` on the topics, set when the producer creates them
  (``ingestion/kafka_publisher.py``) and set again here on existing topics, so a changed setting
  reaches them. The broker deletes whole segments, so a record may outlive the setting by up to a
  segment's age.
- **Cassandra**: ``default_time_to_live`` on the tables whose rows expire a fixed time after they are
  written (``profiles``; ``speed_partials``, ``speed_windows``, ``stream_batches``), taken from the
  settings and altered here when they differ. It is not in a CQL migration: a migration is applied
  once, so a value templated into it would ignore later changes of the setting, and a table's default
  TTL only applies to rows written after it is set. Rows written before (or under a longer TTL) are
  therefore also deleted here by their own timestamp. The batch views get no TTL: they hold the
  current version only, and a TTL would empty them if the recomputation stopped.
- **Delta**: ``DELETE`` of whole ingestion-day partitions older than the cutoff, in the archive and in
  the silver table; the files stay readable by time travel until the nightly VACUUM
  (``batch_layer/maintenance.py``) removes them after ``batch_layer.vacuum_retention_hours``.

Each function takes ``now`` so that a test can age data by writing old timestamps, not by waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from delta.tables import DeltaTable
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.settings import RetentionSettings, Settings
from stores.cassandra_schema import CASSANDRA_TABLES, current_ttls, delete_rows_older_than, set_table_ttls
from stores.connections import Database, Session, cassandra_session, mongo_client, mongo_database
from stores.documents import mongo_raw_store

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400


def cutoff_instant(now: datetime, days: int) -> datetime:
    """The instant before which data is older than ``days`` (UTC): what is older goes."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware: a naive instant is ambiguous")
    return now.astimezone(UTC) - timedelta(days=days)


def cutoff_day(now: datetime, days: int) -> date:
    """The first UTC day that is kept: a day partition goes once every instant in it is past the cutoff.

    Day ``d`` covers ``[d, d + 1 day)``; all of it is older than the cutoff ``c`` exactly when
    ``d + 1 day <= c``, that is when ``d < c.date()``. So a partition is dropped a day later than its
    oldest record would be, never earlier.
    """
    return cutoff_instant(now, days).date()


def table_ttls(retention: RetentionSettings) -> dict[str, int]:
    """The ``default_time_to_live`` (seconds) each table under retention should have."""
    return {
        table.name: getattr(retention, table.days_setting) * SECONDS_PER_DAY for table in CASSANDRA_TABLES
    }


@dataclass(frozen=True)
class StoreRetention:
    """What the retention did to one store."""

    store: str
    kept_from: str
    """The cutoff: what is older than this was removed (an instant, a day, or a duration)."""
    removed: int
    """Documents, rows or topics changed, as ``unit`` says."""
    unit: str
    note: str = ""

    def describe(self) -> str:
        """One line for the command line and the job's log."""
        text = f"{self.store}: removed {self.removed:,} {self.unit} (keeping from {self.kept_from})"
        return f"{text}; {self.note}" if self.note else text


# -- MongoDB ---------------------------------------------------------------------------------------------


def enforce_mongo(database: Database, settings: Settings, now: datetime) -> list[StoreRetention]:
    """Delete raw documents (and their latest copy) by ``fetched_at``, dead letters by ``stored_at``
    (``stores.documents.MongoRawStore.expire``)."""
    mongo, retention = settings.mongo, settings.retention
    raw_cutoff = cutoff_instant(now, retention.raw_documents_days)
    letters_cutoff = cutoff_instant(now, retention.dead_letters_days)
    removed = mongo_raw_store(database, settings).expire(raw_cutoff, letters_cutoff)
    return [
        StoreRetention(
            f"mongodb {mongo.database}.{collection}",
            (letters_cutoff if collection == mongo.dead_letters_collection else raw_cutoff).isoformat(),
            deleted,
            "documents",
        )
        for collection, deleted in removed.items()
    ]


# -- Cassandra -------------------------------------------------------------------------------------------


def enforce_cassandra(session: Session, settings: Settings, now: datetime) -> list[StoreRetention]:
    """Set each table's default TTL from the settings, then delete the rows already past it."""
    keyspace, retention = settings.cassandra.keyspace, settings.retention
    ttls = table_ttls(retention)
    altered = set(set_table_ttls(session, keyspace, ttls))
    present = current_ttls(session, keyspace)
    results = []
    for table in CASSANDRA_TABLES:
        if table.name not in present:
            continue
        cutoff = cutoff_instant(now, getattr(retention, table.days_setting))
        removed = delete_rows_older_than(session, keyspace, table, cutoff)
        note = f"default TTL {'set to' if table.name in altered else 'is'} {ttls[table.name]} s"
        results.append(
            StoreRetention(f"cassandra {keyspace}.{table.name}", cutoff.isoformat(), removed, "rows", note)
        )
    return results


# -- Delta -----------------------------------------------------------------------------------------------


def delete_days_before(spark: SparkSession, path: Path, first_kept: date) -> int | None:
    """Delete the ingestion-day partitions before ``first_kept``; rows removed (None: no table there).

    A predicate on the partition column only, so Delta drops whole files without reading them. Nothing
    is committed when no day is old enough (no empty table version every day).
    """
    if not DeltaTable.isDeltaTable(spark, str(path)):
        return None
    table = DeltaTable.forPath(spark, str(path))
    condition = F.col("ingestion_date") < F.lit(first_kept)
    old_rows = table.toDF().where(condition).count()
    if old_rows:
        table.delete(condition)
    return old_rows


def enforce_lake(spark: SparkSession, settings: Settings, now: datetime) -> list[StoreRetention]:
    """Drop the archive's and the silver table's ingestion days older than ``retention.archive_days``.

    Silver is derived from the archive day by day, so it keeps the same days: a profile leaves both
    together, and a later full refresh of silver cannot bring it back.
    """
    first_kept = cutoff_day(now, settings.retention.archive_days)
    results = []
    for path in (settings.paths.archive_table, settings.paths.silver_table):
        removed = delete_days_before(spark, path, first_kept)
        if removed is not None:
            results.append(
                StoreRetention(
                    f"delta {path.name}",
                    first_kept.isoformat(),
                    removed,
                    "rows",
                    "files go at the next VACUUM (userpulse batch maintain)",
                )
            )
    return results


# -- Kafka -----------------------------------------------------------------------------------------------


def topic_retention_ms(admin: KafkaAdminClient, topics: Sequence[str]) -> dict[str, int | None]:
    """The ``retention.ms`` each topic has (None when only the broker's default applies)."""
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, ["retention.ms"]) for topic in topics]
    )
    result: dict[str, int | None] = {}
    for topic in topics:
        config = described.get("topic", {}).get(topic, {}).get("retention.ms")
        explicit = config is not None and config.get("config_source") == "DYNAMIC_TOPIC_CONFIG"
        result[topic] = int(config["value"]) if explicit else None
    return result


def enforce_topics(settings: Settings) -> list[StoreRetention]:
    """Set ``retention.ms`` on the existing profiles and dead-letter topics where it differs.

    An incremental alter (kafka-python uses IncrementalAlterConfigs when the broker has it): the topics'
    other settings are left as they are. The broker itself deletes the expired segments.
    """
    wanted = settings.retention.topic_retention_ms
    admin = KafkaAdminClient(**settings.kafka.client_options(), client_id="userpulse-retention")
    try:
        existing = set(admin.list_topics())
        topics = [
            t for t in (settings.kafka.profiles_topic, settings.kafka.dead_letter_topic) if t in existing
        ]
        current = topic_retention_ms(admin, topics) if topics else {}
        stale = [topic for topic, value in current.items() if value != wanted]
        if stale:
            admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t, {"retention.ms": str(wanted)}) for t in stale]
            )
    finally:
        admin.close()
    return [
        StoreRetention(
            f"kafka {topic}",
            f"{settings.retention.topic_days} days",
            0,
            "records (the broker deletes expired segments)",
            f"retention.ms {'set to' if topic in stale else 'is'} {wanted}",
        )
        for topic in topics
    ]


def now_utc() -> datetime:
    """The current instant, timezone-aware (what the job and the command pass as ``now``)."""
    return datetime.now(UTC)


def enforce_all(settings: Settings, spark: SparkSession, now: datetime) -> list[StoreRetention]:
    """Every store's retention, in the order of the data flow (what ``userpulse retention`` runs)."""
    results = enforce_topics(settings)
    client = mongo_client(settings)
    try:
        results += enforce_mongo(mongo_database(client, settings), settings, now)
    finally:
        client.close()
    cluster, session = cassandra_session(settings)
    try:
        results += enforce_cassandra(session, settings, now)
    finally:
        cluster.shutdown()
    return results + enforce_lake(spark, settings, now)
