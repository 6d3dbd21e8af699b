"""Per-dimension window aggregates: one row per (dimension, value, window), additive counts and ages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.aggregates import AGGREGATE_COLUMNS, DIMENSIONS, window_aggregates
from core.transformations import age_band_of

PROFILE_SCHEMA_DDL = (
    "uuid string, fetched_at timestamp, country string, gender string, nationality string, "
    "email_domain string, age int, age_band string"
)


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 23, 12, minute, second, tzinfo=UTC)


def profile(
    uuid: str, fetched_at: datetime, country: str, gender: str, nat: str, domain: str | None, age: int
) -> tuple:
    return (uuid, fetched_at, country, gender, nat, domain, age, age_band_of(age))


# Two profiles in 12:00-12:01 (one at its very start), two in 12:01-12:02 (one at 12:01:00 exactly).
PROFILES = [
    profile("a", at(0, 0), "Iran", "female", "IR", "example.com", 29),
    profile("b", at(0, 59), "Iran", "male", "IR", "example.com", 17),
    profile("c", at(1, 0), "Brazil", "female", "BR", "example.com", 82),
    profile("d", at(1, 30), "Iran", "female", "IR", None, 34),
]


def utc(row: dict[str, Any]) -> dict[str, Any]:
    """A collected row with its window bounds back in UTC (collected naive, in the local zone)."""
    return row | {
        "window_start": row["window_start"].astimezone(UTC),
        "window_end": row["window_end"].astimezone(UTC),
    }


def collected(aggregates: DataFrame) -> set[tuple]:
    return {tuple(utc(row.asDict()).values()) for row in aggregates.collect()}


@pytest.fixture(scope="module")
def profiles(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(PROFILES, PROFILE_SCHEMA_DDL)


def test_columns_and_dimensions(profiles: DataFrame) -> None:
    aggregates = window_aggregates(profiles)
    assert tuple(aggregates.columns) == AGGREGATE_COLUMNS
    assert dict(aggregates.dtypes) == {
        "dimension": "string",
        "value": "string",
        "window_start": "timestamp",
        "window_end": "timestamp",
        "profiles": "bigint",
        "age_sum": "bigint",
        "age_min": "int",
        "age_max": "int",
    }
    assert DIMENSIONS == ("country", "gender", "nationality", "email_domain", "age_band")


def test_one_minute_windows(profiles: DataFrame) -> None:
    first, second = (at(0), at(1)), (at(1), at(2))
    expected = {
        ("country", "Iran", *first, 2, 46, 17, 29),
        ("country", "Iran", *second, 1, 34, 34, 34),
        ("country", "Brazil", *second, 1, 82, 82, 82),
        ("gender", "female", *first, 1, 29, 29, 29),
        ("gender", "male", *first, 1, 17, 17, 17),
        ("gender", "female", *second, 2, 116, 34, 82),
        ("nationality", "IR", *first, 2, 46, 17, 29),
        ("nationality", "IR", *second, 1, 34, 34, 34),
        ("nationality", "BR", *second, 1, 82, 82, 82),
        ("email_domain", "example.com", *first, 2, 46, 17, 29),
        ("email_domain", "example.com", *second, 1, 82, 82, 82),  # d has no domain: not counted there
        ("age_band", "25-34", *first, 1, 29, 29, 29),
        ("age_band", "<18", *first, 1, 17, 17, 17),
        ("age_band", "65+", *second, 1, 82, 82, 82),
        ("age_band", "25-34", *second, 1, 34, 34, 34),
    }
    assert collected(window_aggregates(profiles)) == expected


def test_window_duration(profiles: DataFrame) -> None:
    window = (at(0), at(10))
    aggregates = window_aggregates(profiles, "10 minutes").where(F.col("dimension").isin("country", "gender"))
    assert collected(aggregates) == {
        ("country", "Iran", *window, 3, 80, 17, 34),
        ("country", "Brazil", *window, 1, 82, 82, 82),
        ("gender", "female", *window, 3, 145, 29, 82),
        ("gender", "male", *window, 1, 17, 17, 17),
    }


def test_each_dimension_counts_every_profile_once(profiles: DataFrame) -> None:
    totals = {
        row["dimension"]: row["total"]
        for row in window_aggregates(profiles, "1 hour")
        .groupBy("dimension")
        .agg(F.sum("profiles").alias("total"))
        .collect()
    }
    assert totals == {"country": 4, "gender": 4, "nationality": 4, "email_domain": 3, "age_band": 4}


def test_aggregates_work_on_a_stream(spark: SparkSession) -> None:
    stream = spark.readStream.format("rate").load()
    profiles = stream.select(
        F.col("value").cast("string").alias("uuid"),
        F.col("timestamp").alias("fetched_at"),
        *(F.lit("x").alias(name) for name in DIMENSIONS),
        F.lit(30).alias("age"),
    ).withWatermark("fetched_at", "1 minute")
    assert window_aggregates(profiles).isStreaming
