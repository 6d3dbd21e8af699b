"""The batch recomputation against the real Kafka, Spark/Delta and Cassandra: views equal a recount."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch_layer.archive import run_archive
from batch_layer.recompute import recompute_batch_views, refresh_silver_profiles
from core.settings import Settings
from core.spark import as_utc
from tests.integration.batch_views import batch_recount, stored_views
from tests.integration.kafka_helpers import create_topic, delete_topics, drop_keyspace
from tests.integration.profiles_input import known_input, produce_known_input

pytestmark = pytest.mark.integration


@pytest.fixture
def batch_settings(
    stack_settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Settings]:
    name = unique_name("batch")
    create_topic(stack_settings, name)
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
    drop_keyspace(stack_settings, name)


def test_batch_views_equal_the_recount_and_a_rerun_changes_nothing(
    spark: SparkSession, batch_settings: Settings
) -> None:
    produce_known_input(batch_settings, batch_settings.kafka.profiles_topic)
    _, envelopes, _ = known_input()
    expected_cutoff, expected_windows, expected_totals = batch_recount(envelopes)
    run_archive(batch_settings, spark)

    refreshed = refresh_silver_profiles(batch_settings, spark)
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
    # What the refresh reports (observed during its write) is what the table holds.
    per_day = silver.groupBy("ingestion_date").agg(
        F.count(F.lit(1)).alias("n"), F.max("fetched_at").alias("newest")
    )
    rows = per_day.collect()
    assert refreshed.profiles == silver.count()
    assert refreshed.days == tuple(sorted(row.ingestion_date for row in rows))
    assert refreshed.newest_event == max(as_utc(row.newest) for row in rows)

    refresh_silver_profiles(batch_settings, spark)
    second = recompute_batch_views(batch_settings, spark)

    again = stored_views(batch_settings)
    assert second.version != first.version and second.removed_versions == [first.version]
    assert again[1:] == (cutoff, windows, totals)
