"""The batch recomputation against the real Kafka, Spark/Delta and Cassandra: views equal a recount."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch_layer.archive import run_archive
from batch_layer.recompute import recompute_batch_views, refresh_silver_profiles
from core.settings import Settings
from core.spark import as_utc
from stores.connections import mongo_client
from tests.integration.support.batch_views import stored_views
from tests.integration.support.kafka_helpers import create_topic
from tests.integration.support.profiles_input import all_time, counted, produce_known_input, recount

pytestmark = pytest.mark.integration


@pytest.fixture
def batch_settings(own_stores: Callable[..., Settings]) -> Settings:
    settings = own_stores("batch")
    create_topic(settings, settings.kafka.profiles_topic)
    return settings


def test_batch_views_equal_the_recount_and_a_rerun_changes_nothing(
    spark: SparkSession, batch_settings: Settings
) -> None:
    # No speed layer: the views cover the whole archive.
    produced = produce_known_input(batch_settings, batch_settings.kafka.profiles_topic)
    expected_windows = recount(produced.copies)
    expected_totals = all_time(expected_windows)
    newest = max(copy.order[0] for copy in produced.copies)
    run_archive(batch_settings, spark)

    refreshed = refresh_silver_profiles(batch_settings, spark)
    first = recompute_batch_views(batch_settings, spark)

    version, cutoff, windows, totals = stored_views(batch_settings)
    assert (version, cutoff) == (first.version, newest.replace(second=0, microsecond=0))
    assert first.speed_batch_id is None
    assert windows == expected_windows
    assert totals == expected_totals
    assert first.profiles == len(counted(produced.copies))
    silver = spark.read.format("delta").load(str(batch_settings.paths.silver_table))
    # Silver holds every usable copy, once.
    assert silver.count() == silver.select("partition", "offset").distinct().count() == len(produced.copies)
    assert "full_name" not in silver.columns
    # What the refresh reports (observed during its write) is what the table holds.
    per_day = silver.groupBy("ingestion_date").agg(
        F.count(F.lit(1)).alias("n"), F.max("fetched_at").alias("newest")
    )
    rows = per_day.collect()
    assert refreshed.profiles == silver.count()
    assert refreshed.days == tuple(sorted(row.ingestion_date for row in rows))
    assert refreshed.newest_event == max(as_utc(row.newest) for row in rows)
    # The batch layer stores the dead letters it meets (here no speed layer met them first).
    assert refreshed.dead_letters == len(produced.bad)
    with mongo_client(batch_settings) as client:
        letters = list(
            client[batch_settings.mongo.database][batch_settings.mongo.dead_letters_collection].find()
        )
    assert {(letter["partition"], letter["offset"]) for letter in letters} == set(produced.bad)
    assert {letter["job"] for letter in letters} == {"batch"}

    refresh_silver_profiles(batch_settings, spark)
    second = recompute_batch_views(batch_settings, spark)

    again = stored_views(batch_settings)
    assert second.version != first.version and second.removed_versions == [first.version]
    assert again[1:] == (cutoff, windows, totals)
