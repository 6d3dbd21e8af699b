"""Retention against the real stores: data written with old timestamps goes, recent data stays.

The data is aged by its timestamps, not by waiting: raw documents and dead letters with an old
``fetched_at``/``stored_at``, Cassandra rows with an old ``fetched_at``, window or processing time, and
an archive day written by the archive's own record function with an old Kafka timestamp (silver derived
from it by the real refresh). The Dagster job ``retention`` then runs, as the schedule would start it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from pyspark.sql import SparkSession

from batch_layer.archive import archive_records
from batch_layer.recompute import refresh_silver_profiles
from core.settings import Settings
from core.versions import ProfileState, Sighting
from infra.isolation import drop_own_stores, own_stores_overrides
from ingestion.kafka_publisher import ensure_topics
from orchestration.jobs import retention_job
from orchestration.resources import PlatformSettings, batch_layer_resources
from stores.cassandra_schema import CASSANDRA_TABLES, apply_schema, current_ttls
from stores.connections import cassandra_session, mongo_client
from stores.documents import mongo_raw_store
from stores.speed_views import BATCH_METRIC_COLUMNS, CassandraSpeedStore, partial_row, state_row
from stores.topics import topic_retention_ms
from tests.integration.support.kafka_helpers import create_topic
from tests.integration.support.profiles_input import known_input

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
RETENTION = {
    "raw_documents_days": 10,
    "dead_letters_days": 5,
    "profiles_days": 20,
    "speed_views_days": 3,
    "archive_days": 40,
    "topic_days": 2,
}
"""Short, distinct retentions: the test proves each store reads its own setting."""


@dataclass(frozen=True)
class RetentionCase:
    settings: Settings
    overrides: dict[str, str]


@pytest.fixture
def case(
    stack_settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[RetentionCase]:
    """Own topics, keyspace, MongoDB database and lake; the retention settings above."""
    name = unique_name("retention")
    overrides = {
        **own_stores_overrides(stack_settings, name, tmp_path),
        **{f"retention.{field}": str(days) for field, days in RETENTION.items()},
    }
    yield RetentionCase(PlatformSettings(overrides=overrides).settings(), overrides)
    drop_own_stores(stack_settings, name)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def write_mongo(settings: Settings) -> None:
    """Raw documents (and their latest copy) 11 and 9 days old, dead letters 6 and 4 days old."""
    client = mongo_client(settings)
    try:
        store = mongo_raw_store(client[settings.mongo.database], settings)
        store.insert_profiles(
            [
                {"_id": "old-doc", "fetched_at": days_ago(11), "user": {"name": {"first": "Old"}}},
                {"_id": "recent-doc", "fetched_at": days_ago(9), "user": {"name": {"first": "Recent"}}},
            ]
        )
        store.insert_dead_letters([{"_id": "t:0:1", "reason": "old"}], days_ago(6))
        store.insert_dead_letters([{"_id": "t:0:2", "reason": "recent"}], days_ago(4))
    finally:
        client.close()


def profile_row(uuid: str, fetched_at: datetime) -> tuple[object, ...]:
    """The ``profiles`` row of a profile first and last seen at ``fetched_at``."""
    sighting = Sighting(fetched_at, 0, 1)
    attributes = {"source": "synthetic", "gender": "female", "age": 30}
    return state_row(uuid, ProfileState(sighting, sighting, attributes, counted=True), 1, None)


def write_cassandra(settings: Settings) -> None:
    """Profiles 21 and 1 days old, speed windows 4 days and 1 hour old, batch metrics 4 days and 0 old."""
    keyspace = settings.cassandra.keyspace
    cluster, session = cassandra_session(settings)
    try:
        apply_schema(session, keyspace, settings.cassandra.keyspace_replication)
        store = CassandraSpeedStore(session, keyspace, concurrency=8)
        store.write_states(
            [profile_row("old-profile", days_ago(21)), profile_row("recent-profile", days_ago(1))]
        )
        starts = [days_ago(days).replace(second=0, microsecond=0) for days in (4, 1 / 24)]
        store.write_partials(
            [partial_row(("country", start, "France"), Counter({30: 1}), 1, 0, 60) for start in starts]
        )
        for batch_id, processed_at in ((1, days_ago(4)), (2, NOW)):
            metrics = dict.fromkeys(BATCH_METRIC_COLUMNS, 0)
            store.write_batch_metrics(
                {
                    **metrics,
                    "job": "speed",
                    "batch_id": batch_id,
                    "processed_at": processed_at,
                    "max_event_time": None,
                    "end_offsets": {},
                    "windows": set(),
                }
            )
    finally:
        cluster.shutdown()


def write_lake(settings: Settings, spark: SparkSession) -> None:
    """Archive ten records received 42 days ago and ten received yesterday; silver refreshed from it."""
    good, _, _ = known_input()
    rows = [
        (key.encode() if key else None, fetched_at(value, received), settings.kafka.profiles_topic, 0, offset,
         received, 0)
        for offset, ((key, value), received) in enumerate(
            zip(good[:20], [days_ago(42)] * 10 + [days_ago(1)] * 10, strict=True)
        )
    ]  # fmt: skip
    kafka_rows = spark.createDataFrame(
        rows,
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
        "timestampType int",
    )
    archive_records(kafka_rows).write.format("delta").partitionBy("ingestion_date").save(
        str(settings.paths.archive_table)
    )
    refresh_silver_profiles(settings, spark)


def fetched_at(value: bytes, moment: datetime) -> bytes:
    """The envelope fetched at ``moment`` (a record cannot be fetched after it was written to Kafka)."""
    return json.dumps({**json.loads(value), "fetched_at": moment.isoformat()}).encode()


def lake_days(spark: SparkSession, path: str) -> dict[str, int]:
    rows = spark.read.format("delta").load(path).groupBy("ingestion_date").count().collect()
    return {row.ingestion_date.isoformat(): row["count"] for row in rows}


def test_the_retention_job_removes_what_is_older_than_each_store_allows(
    spark: SparkSession, case: RetentionCase
) -> None:
    settings = case.settings
    topic, dead_letter_topic = settings.kafka.profiles_topic, settings.kafka.dead_letter_topic
    wanted_ms = RETENTION["topic_days"] * 86_400_000
    create_topic(settings, topic)  # an existing topic, created without retention.ms
    assert ensure_topics(settings, {dead_letter_topic: 1}) == [dead_letter_topic]  # created with it
    write_mongo(settings)
    write_cassandra(settings)
    write_lake(settings, spark)
    old_day, recent_day = days_ago(42).date().isoformat(), days_ago(1).date().isoformat()
    assert lake_days(spark, settings.paths.archive_table) == {old_day: 10, recent_day: 10}
    assert set(lake_days(spark, settings.paths.silver_table)) == {old_day, recent_day}
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        assert topic_retention_ms(admin, [topic, dead_letter_topic]) == {
            topic: None,
            dead_letter_topic: wanted_ms,
        }
    finally:
        admin.close()

    result = retention_job.execute_in_process(resources=batch_layer_resources(case.overrides))

    assert result.success
    # the old document, its latest copy, a letter and its newest-letters copy
    assert result.output_for_node("mongo_retention") == 4
    assert result.output_for_node("cassandra_retention") == 1 + 1 + 1 + 1  # profile, partial, window, batch
    assert result.output_for_node("lake_retention") == 10 + 10  # the old archive day and its silver day

    # Kafka: both topics now keep records for topic_days.
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        assert topic_retention_ms(admin, [topic, dead_letter_topic]) == {
            topic: wanted_ms,
            dead_letter_topic: wanted_ms,
        }
    finally:
        admin.close()

    # MongoDB: only the recent documents are left, in every collection.
    client = mongo_client(settings)
    try:
        database = client[settings.mongo.database]
        mongo = settings.mongo
        assert [d["_id"] for d in database[mongo.raw_profiles_collection].find()] == ["recent-doc"]
        assert [d["_id"] for d in database[mongo.latest_profiles_collection].find()] == ["recent-doc"]
        assert [d["reason"] for d in database[mongo.dead_letters_collection].find()] == ["recent"]
        assert [d["reason"] for d in database[mongo.newest_dead_letters_collection].find()] == ["recent"]
        tallies = database[mongo.dead_letter_tallies_collection].find()
        assert [(t["reason"], t["count"]) for t in tallies] == [("recent", 1)]  # the old one's recounted away
    finally:
        client.close()

    # Cassandra: the old rows are gone, the tables expire new rows by themselves from now on.
    keyspace = settings.cassandra.keyspace
    cluster, session = cassandra_session(settings)
    try:
        assert [r.uuid for r in session.execute(f"SELECT uuid FROM {keyspace}.profiles")] == [
            "recent-profile"
        ]
        windows = session.execute(
            f"SELECT window_start FROM {keyspace}.speed_windows WHERE dimension = 'country'"
        )
        assert [w.window_start.replace(tzinfo=UTC) > days_ago(1) for w in windows] == [True]
        partials = session.execute(f"SELECT window_start FROM {keyspace}.speed_partials")
        assert [p.window_start.replace(tzinfo=UTC) > days_ago(1) for p in partials] == [True]
        assert [b.batch_id for b in session.execute(f"SELECT batch_id FROM {keyspace}.stream_batches")] == [2]
        ttls = current_ttls(session, keyspace)
        for table in CASSANDRA_TABLES:
            assert ttls[table.name] == RETENTION[table.days_setting] * 86_400, table.name
        assert ttls["batch_current"] == 0  # the current batch view never expires
        CassandraSpeedStore(session, keyspace, concurrency=8).write_states([profile_row("new-profile", NOW)])
        row = session.execute(
            f"SELECT TTL(source) AS ttl FROM {keyspace}.profiles WHERE uuid = 'new-profile'"
        ).one()
        assert RETENTION["profiles_days"] * 86_400 - 600 < row.ttl <= RETENTION["profiles_days"] * 86_400
    finally:
        cluster.shutdown()

    # Delta: the old ingestion day is gone from the archive and from silver; yesterday stays whole.
    assert lake_days(spark, settings.paths.archive_table) == {recent_day: 10}
    assert set(lake_days(spark, settings.paths.silver_table)) == {recent_day}

    # A second run finds nothing more to remove, and commits nothing to the lake.
    archive_version = (
        spark.sql(f"DESCRIBE HISTORY delta.`{settings.paths.archive_table}` LIMIT 1").first().version
    )
    again = retention_job.execute_in_process(resources=batch_layer_resources(case.overrides))
    assert [
        again.output_for_node(op) for op in ("mongo_retention", "cassandra_retention", "lake_retention")
    ] == [0, 0, 0]
    assert (
        spark.sql(f"DESCRIBE HISTORY delta.`{settings.paths.archive_table}` LIMIT 1").first().version
        == archive_version
    )
