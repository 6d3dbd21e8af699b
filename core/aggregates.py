"""Per-dimension profile counts and ages in tumbling event-time windows: the views both layers keep.

The counting rule (``core.versions``) in Spark, for the batch layer: from every valid copy of every
profile, each uuid's first copy (its window) and latest copy (its attributes, counted if old enough),
then profiles per age for each (dimension, window, value). A view row carries those age counts
(``ages``) besides the count, age sum, minimum and maximum, so that the speed layer's changes (which can
remove a profile from a value) combine with it exactly. The average age is not stored: it is
``age_sum / profiles``, computed where it is read.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

DIMENSIONS: tuple[str, ...] = ("country", "gender", "nationality", "email_domain", "age_band")
"""Profile columns the aggregates are broken down by."""

COPY_COLUMNS: tuple[str, ...] = ("uuid", "fetched_at", "partition", "offset", "age", *DIMENSIONS)
"""The columns of a transformed copy (``core.transformations.transform_profiles``) the rule reads."""

VIEW_COLUMNS: tuple[str, ...] = ("profiles", "age_sum", "age_min", "age_max", "ages")
"""The measures of a view row: count, age sum, youngest, oldest, and profiles per age."""


def counted_profiles(copies: DataFrame, minimum_age: int, window_duration: str) -> DataFrame:
    """One row per counted uuid of ``copies`` (every valid copy, ``COPY_COLUMNS``): the window of its
    first copy (``window_start``), and the age and dimension values of its latest copy.

    ``core.versions``' rule: copies ordered by (``fetched_at``, ``partition``, ``offset``); a uuid is
    counted when its latest copy is at least ``minimum_age``. A max of structs compares their fields in
    order, so the latest copy's struct carries its attributes along.
    """
    sighting = F.struct("fetched_at", "partition", "offset")
    latest = F.struct("fetched_at", "partition", "offset", "age", *DIMENSIONS)
    per_uuid = copies.groupBy("uuid").agg(F.min(sighting).alias("first"), F.max(latest).alias("latest"))
    counted = per_uuid.where(F.col("latest.age") >= F.lit(minimum_age))
    return counted.select(
        F.window("first.fetched_at", window_duration).getField("start").alias("window_start"),
        F.col("latest.age").alias("age"),
        *(F.col("latest").getField(name).alias(name) for name in DIMENSIONS),
    )


def age_counts(counted: DataFrame) -> DataFrame:
    """Profiles per (``dimension``, ``window_start``, ``value``, ``age``) of ``counted_profiles``.

    One row per profile and dimension first, so a single group-by covers every dimension in one shuffle.
    A null value (impossible for a valid envelope) is left out of its dimension.
    """
    pairs = F.explode(
        F.array(
            *(
                F.struct(F.lit(name).alias("dimension"), F.col(name).cast("string").alias("value"))
                for name in DIMENSIONS
            )
        )
    )
    return (
        counted.select("window_start", "age", pairs.alias("pair"))
        .select("window_start", "age", "pair.dimension", "pair.value")
        .where(F.col("value").isNotNull())
        .groupBy("dimension", "window_start", "value", "age")
        .agg(F.count(F.lit(1)).alias("profiles"))
    )


def _measures() -> tuple[Column, ...]:
    return (
        F.sum("profiles").alias("profiles"),
        F.sum(F.col("age") * F.col("profiles")).alias("age_sum"),
        F.min("age").alias("age_min"),
        F.max("age").alias("age_max"),
        F.map_from_entries(F.collect_list(F.struct("age", "profiles"))).alias("ages"),
    )


def window_views(counts: DataFrame) -> DataFrame:
    """View rows per (``dimension``, ``window_start``, ``value``) from ``age_counts``."""
    return counts.groupBy("dimension", "window_start", "value").agg(*_measures())


def total_views(counts: DataFrame) -> DataFrame:
    """All-time view rows per (``dimension``, ``value``) from ``age_counts``."""
    by_age = counts.groupBy("dimension", "value", "age").agg(F.sum("profiles").alias("profiles"))
    return by_age.groupBy("dimension", "value").agg(*_measures())


def window_seconds_of(window_duration: str) -> int:
    """Seconds in a Spark interval string such as ``"1 minute"`` or ``"30 seconds"``."""
    amount, unit = window_duration.split()
    seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[unit.rstrip("s")]
    return int(amount) * seconds


def window_floor(moment: datetime, window_seconds: int) -> datetime:
    """The start of the tumbling window (aligned to the epoch, as Spark's) that holds ``moment``."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_seconds, UTC)
