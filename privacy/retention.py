"""Retention: how long each store keeps data (``core.settings.RetentionSettings``), and enforcing it.

Retention concerns every store of both layers (the topic, MongoDB, Cassandra, the Delta lake), like the
register of processing (``privacy/register.py``) that states it, so no layer owns it: it is a loop over
the stores that hold personal data, each removing what is older than its retention
(``stores.personal_data.PersonalDataStore.expire``).

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

Each store's ``expire`` takes ``now`` so that a test can age data by writing old timestamps, not by
waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import SparkSession

from core.settings import Settings
from privacy.stores import connected_stores, personal_data_stores
from stores.personal_data import StoreRetention


def now_utc() -> datetime:
    """The current instant, timezone-aware (what the job and the command pass as ``now``)."""
    return datetime.now(UTC)


def enforce_all(settings: Settings, spark: SparkSession, now: datetime) -> list[StoreRetention]:
    """Every store's retention, store by store (``privacy.stores.personal_data_stores``): what
    ``userpulse retention`` runs."""
    with connected_stores(settings) as (session, database):
        stores = personal_data_stores(settings, spark, session, database)
        return [line for store in stores for line in store.expire(settings.retention, now)]
