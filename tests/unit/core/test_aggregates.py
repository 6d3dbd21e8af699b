"""The counting rule in Spark (``core.aggregates``, the batch layer) gives what it gives in Python
(``core.versions``, the speed layer and the recount): the same uuids counted, in the same windows, with
the same values and ages."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import DataFrame, SparkSession

from core.aggregates import (
    COPY_COLUMNS,
    DIMENSIONS,
    VIEW_COLUMNS,
    age_counts,
    counted_profiles,
    total_views,
    window_seconds_of,
    window_views,
)
from core.transformations import age_band_of
from core.versions import ATTRIBUTES, AgeFigures, ProfileCopy, Sighting, recount

COPY_SCHEMA = (
    "uuid string, fetched_at timestamp, partition int, offset long, age int, country string, gender string, "
    "nationality string, email_domain string, age_band string"
)
BASE = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def copy_row(uuid: str, minute: float, offset: int, age: int, country: str, partition: int = 0) -> tuple:
    fetched_at = BASE + timedelta(minutes=minute)
    return (
        uuid,
        fetched_at,
        partition,
        offset,
        age,
        country,
        "female",
        "FR",
        "example.com",
        age_band_of(age),
    )


def as_copy(row: tuple) -> ProfileCopy:
    values = dict(zip(COPY_COLUMNS, row, strict=True))
    attributes = {name: values.get(name) for name in ATTRIBUTES}
    return ProfileCopy(
        values["uuid"], Sighting(values["fetched_at"], values["partition"], values["offset"]), attributes
    )


def spark_counts(spark: SparkSession, rows: list[tuple], minimum_age: int = 18) -> dict[tuple, Counter[int]]:
    frame: DataFrame = spark.createDataFrame(rows, COPY_SCHEMA)
    counts = age_counts(counted_profiles(frame, minimum_age, "1 minute"))
    result: dict[tuple, Counter[int]] = {}
    for row in counts.collect():
        key = (row.dimension, row.window_start.astimezone(UTC), row.value)
        result.setdefault(key, Counter())[row.age] += row.profiles
    return result


def test_first_window_latest_attributes_and_late_copies(spark: SparkSession) -> None:
    rows = [
        copy_row("a", 0.5, 0, 30, "France"),  # first copy: window 12:00
        copy_row("a", 5.5, 7, 31, "Spain"),  # re-fetched: counted in 12:00 as Spain, 31
        copy_row("b", 3.2, 3, 40, "Iran"),
        copy_row("b", 1.1, 9, 40, "Iran"),  # a late copy fetched earlier: b moves to 12:01
        copy_row("c", 2.0, 4, 17, "Chile"),  # under age: not counted
        copy_row("d", 2.0, 5, 17, "Peru"),
        copy_row("d", 4.0, 6, 18, "Peru"),  # latest copy adult: counted in its first window, 12:02
    ]
    counted = spark_counts(spark, rows)
    assert counted[("country", BASE, "Spain")] == Counter({31: 1})
    assert ("country", BASE, "France") not in counted
    assert counted[("country", BASE + timedelta(minutes=1), "Iran")] == Counter({40: 1})
    assert counted[("country", BASE + timedelta(minutes=2), "Peru")] == Counter({18: 1})
    assert not any(key[2] == "Chile" for key in counted)
    assert counted == recount([as_copy(row) for row in rows], 18, 60)


@pytest.mark.parametrize("seed", range(5))
def test_spark_and_python_agree_on_random_copies(spark: SparkSession, seed: int) -> None:
    rand = random.Random(seed)
    rows = [
        copy_row(
            f"u{rand.randrange(25)}",
            rand.uniform(0, 6),
            offset,
            rand.randrange(14, 70),
            rand.choice(["France", "Spain", "Iran"]),
            partition=0,
        )
        for offset in range(120)
    ]
    assert spark_counts(spark, rows) == recount([as_copy(row) for row in rows], 18, 60)


def test_view_rows_carry_counts_age_extremes_and_profiles_per_age(spark: SparkSession) -> None:
    rows = [
        copy_row("a", 0.1, 0, 30, "France"),
        copy_row("b", 0.2, 1, 50, "France"),
        copy_row("c", 0.3, 2, 30, "France"),
        copy_row("d", 1.3, 3, 44, "France"),
    ]
    counts = age_counts(counted_profiles(spark.createDataFrame(rows, COPY_SCHEMA), 18, "1 minute"))
    windows = {
        (row.window_start.astimezone(UTC), row.value): row
        for row in window_views(counts).where("dimension = 'country'").collect()
    }
    first = windows[(BASE, "France")]
    assert (first.profiles, first.age_sum, first.age_min, first.age_max) == (3, 110, 30, 50)
    assert first.ages == {30: 2, 50: 1}
    [total] = total_views(counts).where("dimension = 'country'").collect()
    assert (total.profiles, total.age_sum, total.age_min, total.age_max) == (4, 154, 30, 50)
    assert total.ages == {30: 2, 50: 1, 44: 1}
    assert AgeFigures.of(total.ages) == AgeFigures(4, 154, 30, 50)
    assert set(VIEW_COLUMNS) <= set(total.asDict())
    assert {row.dimension for row in counts.collect()} == set(DIMENSIONS)


@pytest.mark.parametrize(
    ("duration", "seconds"), [("1 minute", 60), ("30 seconds", 30), ("2 hours", 7200), ("1 day", 86400)]
)
def test_window_seconds_of_spark_intervals(duration: str, seconds: int) -> None:
    assert window_seconds_of(duration) == seconds
