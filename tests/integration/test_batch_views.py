"""The batch recomputation against the real Kafka, Spark/Delta and Cassandra: views equal a recount."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from pyspark.sql import SparkSession

from batch_layer.archive import run_archive
from batch_layer.recompute import recompute_batch_views, refresh_silver_profiles
from core.settings import Settings
from core.stores import cassandra_session
from tests.integration.kafka_helpers import delete_topics
from tests.integration.profiles_input import band, exact_age, known_input, produce_known_input

pytestmark = pytest.mark.integration

Totals = dict[tuple[str, str], list[int]]
WindowTotals = dict[tuple[str, datetime, str], list[int]]


@pytest.fixture
def batch_settings(
    stack_settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Settings]:
    name = unique_name("batch")
    admin = KafkaAdminClient(bootstrap_servers=stack_settings.kafka.bootstrap_servers)
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    admin.close()
    yield stack_settings.model_copy(
        update={
            "kafka": stack_settings.kafka.model_copy(update={"profiles_topic": name}),
            "cassandra": stack_settings.cassandra.model_copy(update={"keyspace": name}),
            "paths": stack_settings.paths.model_copy(
                update={"lake_dir": tmp_path / "lake", "checkpoints_dir": tmp_path / "checkpoints"}
            ),
        }
    )
    delete_topics(stack_settings, name)
    cluster, session = cassandra_session(stack_settings)
    session.execute(f"DROP KEYSPACE IF EXISTS {name}")
    cluster.shutdown()


def add(totals: dict[Any, list[int]], key: Any, age: int) -> None:
    total = totals.setdefault(key, [0, 0, age, age])
    total[0] += 1
    total[1] += age
    total[2] = min(total[2], age)
    total[3] = max(total[3], age)


def batch_recount(envelopes: list[dict[str, Any]]) -> tuple[datetime, WindowTotals, Totals]:
    """Cutoff, per-window and all-time totals: latest version per uuid, adults, events before the cutoff."""
    latest: dict[str, dict[str, Any]] = {}
    for envelope in envelopes:  # in production order: a later copy with a later fetch time wins
        uuid = envelope["user"]["login"]["uuid"]
        fetched_at = datetime.fromisoformat(envelope["fetched_at"])
        if uuid not in latest or fetched_at >= datetime.fromisoformat(latest[uuid]["fetched_at"]):
            latest[uuid] = envelope
    newest = max(datetime.fromisoformat(e["fetched_at"]) for e in latest.values())
    cutoff = newest.replace(second=0, microsecond=0)
    windows: WindowTotals = {}
    totals: Totals = {}
    for envelope in latest.values():
        user = envelope["user"]
        fetched_at = datetime.fromisoformat(envelope["fetched_at"])
        age = exact_age(datetime.fromisoformat(user["dob"]["date"]).date(), newest.date())
        if age < 18 or fetched_at >= cutoff:
            continue
        values = {
            "country": user["location"]["country"],
            "gender": user["gender"],
            "nationality": user["nat"],
            "email_domain": user["email"].rsplit("@", 1)[1].lower(),
            "age_band": band(age),
        }
        for dimension, value in values.items():
            add(windows, (dimension, fetched_at.replace(second=0, microsecond=0), value), age)
            add(totals, (dimension, value), age)
    return cutoff, windows, totals


def stored_views(settings: Settings) -> tuple[int, datetime, WindowTotals, Totals]:
    keyspace = settings.cassandra.keyspace
    cluster, session = cassandra_session(settings)
    try:
        current = session.execute(
            f"SELECT version, cutoff FROM {keyspace}.batch_current WHERE view_name = 'profiles'"
        ).one()
        version = current.version
        windows = {
            (r.dimension, r.window_start.replace(tzinfo=UTC), r.value): [
                r.profiles,
                r.age_sum,
                r.age_min,
                r.age_max,
            ]
            for r in session.execute(f"SELECT * FROM {keyspace}.batch_window_aggregates")
            if r.version == version
        }
        totals = {
            (r.dimension, r.value): [r.profiles, r.age_sum, r.age_min, r.age_max]
            for r in session.execute(f"SELECT * FROM {keyspace}.batch_aggregates")
            if r.version == version
        }
        versions = {
            r.version
            for r in session.execute(f"SELECT DISTINCT version, dimension FROM {keyspace}.batch_aggregates")
        }
    finally:
        cluster.shutdown()
    assert versions == {version}, "older versions were not cleaned up"
    return version, current.cutoff.replace(tzinfo=UTC), windows, totals


def test_batch_views_equal_the_recount_and_a_rerun_changes_nothing(
    spark: SparkSession, batch_settings: Settings
) -> None:
    produce_known_input(batch_settings, batch_settings.kafka.profiles_topic)
    _, envelopes, _ = known_input()
    expected_cutoff, expected_windows, expected_totals = batch_recount(envelopes)
    run_archive(batch_settings, spark)

    refresh_silver_profiles(batch_settings, spark)
    first = recompute_batch_views(batch_settings, spark)

    version, cutoff, windows, totals = stored_views(batch_settings)
    assert (version, cutoff) == (first.version, expected_cutoff)
    assert windows == expected_windows
    assert totals == expected_totals
    assert first.profiles == sum(
        count for (dimension, _), (count, *_) in totals.items() if dimension == "gender"
    )
    silver = spark.read.format("delta").load(str(batch_settings.paths.silver_table))
    assert (
        silver.count()
        == silver.select("uuid").distinct().count()
        == len({e["user"]["login"]["uuid"] for e in envelopes})
    )
    assert "full_name" not in silver.columns

    refresh_silver_profiles(batch_settings, spark)
    second = recompute_batch_views(batch_settings, spark)

    again = stored_views(batch_settings)
    assert second.version != first.version and second.removed_versions == [first.version]
    assert again[1:] == (cutoff, windows, totals)
