from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pyspark.sql import SparkSession

from batch_layer.recompute import all_time_aggregates, batch_cutoff, latest_versions
from core.aggregates import window_seconds_of


@pytest.mark.parametrize(
    ("duration", "seconds"), [("1 minute", 60), ("30 seconds", 30), ("2 hours", 7200), ("1 day", 86400)]
)
def test_window_seconds_of_spark_intervals(duration: str, seconds: int) -> None:
    assert window_seconds_of(duration) == seconds


def test_the_cutoff_is_the_start_of_the_newest_events_window() -> None:
    newest = datetime(2026, 11, 23, 10, 50, 42, 500_000, tzinfo=UTC)

    assert batch_cutoff(newest, 60) == datetime(2026, 11, 23, 10, 50, tzinfo=UTC)
    assert batch_cutoff(newest, 300) == datetime(2026, 11, 23, 10, 50, tzinfo=UTC)
    assert batch_cutoff(datetime(2026, 11, 23, 10, 50, tzinfo=UTC), 60) == datetime(
        2026, 11, 23, 10, 50, tzinfo=UTC
    )


def test_latest_versions_keep_the_newest_fetch_then_the_highest_offset(spark: SparkSession) -> None:
    profiles = spark.createDataFrame(
        [
            ("a", datetime(2026, 1, 1, 10, 0), 0, 5, "old"),
            ("a", datetime(2026, 1, 1, 11, 0), 1, 2, "new"),
            ("b", datetime(2026, 1, 1, 9, 0), 2, 1, "lower offset"),
            ("b", datetime(2026, 1, 1, 9, 0), 2, 7, "higher offset"),
        ],
        "uuid string, fetched_at timestamp, partition int, offset long, note string",
    )

    kept = {row.uuid: row.note for row in latest_versions(profiles).collect()}

    assert kept == {"a": "new", "b": "higher offset"}


def test_all_time_aggregates_merge_windows(spark: SparkSession) -> None:
    windows = spark.createDataFrame(
        [
            ("country", "France", 2, 70, 30, 40),
            ("country", "France", 1, 25, 25, 25),
            ("country", "Iran", 1, 50, 50, 50),
        ],
        "dimension string, value string, profiles long, age_sum long, age_min int, age_max int",
    )

    merged = {(r.dimension, r.value): tuple(r)[2:] for r in all_time_aggregates(windows).collect()}

    assert merged == {("country", "France"): (3, 95, 25, 40), ("country", "Iran"): (1, 50, 50, 50)}
