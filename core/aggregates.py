"""Per-dimension profile counts and age statistics in tumbling event-time windows, for both layers.

Each row is additive: partial aggregates of the same (dimension, value, window) from several
micro-batches, or from the speed and the batch layer, combine by summing ``profiles`` and ``age_sum``
and taking the min of ``age_min`` and the max of ``age_max``. The average age is therefore not stored:
it is ``age_sum / profiles``, computed where it is read.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

DIMENSIONS: tuple[str, ...] = ("country", "gender", "nationality", "email_domain", "age_band")
"""Profile columns the aggregates are broken down by."""

AGGREGATED_COLUMNS: tuple[str, ...] = ("fetched_at", "age", *DIMENSIONS)
"""The profile columns ``window_aggregates`` reads."""

AGGREGATED_SCHEMA = "fetched_at timestamp, age int, " + ", ".join(f"{name} string" for name in DIMENSIONS)
"""Their types, as a Spark DDL schema (for a frame built from collected rows)."""

AGGREGATE_COLUMNS: tuple[str, ...] = (
    "dimension",
    "value",
    "window_start",
    "window_end",
    "profiles",
    "age_sum",
    "age_min",
    "age_max",
)
"""Columns of ``window_aggregates``, in order."""


def window_aggregates(profiles: DataFrame, window_duration: str = "1 minute") -> DataFrame:
    """Profile count and age sum, min and max per dimension value and tumbling window of ``fetched_at``.

    Input: profiles of ``core.transformations.transform_profiles`` (``fetched_at``, ``age`` and the
    ``DIMENSIONS``). Output: ``AGGREGATE_COLUMNS``; average age = ``age_sum / profiles``. A null dimension
    value (impossible for a valid envelope) is left out of that dimension's counts. A streaming caller
    sets its watermark on ``fetched_at`` before calling.
    """
    unpivot, measures, output = _aggregate_columns(window_duration)
    return (
        profiles.select(*unpivot)
        .select("window", "age", "pair.dimension", "pair.value")
        .where(F.col("value").isNotNull())
        .groupBy("dimension", "value", "window")
        .agg(*measures)
        .select(*output)
    )


@functools.cache  # built once per window length and reused on every frame (the speed layer's batches)
def _aggregate_columns(
    window_duration: str,
) -> tuple[tuple[Column, ...], tuple[Column, ...], tuple[Column, ...]]:
    """The expressions of ``window_aggregates``: the unpivot, the measures, the output columns."""
    # One row per (profile, dimension): a single groupBy then covers every dimension in one shuffle.
    by_dimension = F.explode(
        F.array(
            *(
                F.struct(F.lit(name).alias("dimension"), F.col(name).cast("string").alias("value"))
                for name in DIMENSIONS
            )
        )
    )
    unpivot = (
        F.window("fetched_at", window_duration).alias("window"),
        F.col("age"),
        by_dimension.alias("pair"),
    )
    measures = (
        F.count(F.lit(1)).alias("profiles"),
        F.sum("age").alias("age_sum"),
        F.min("age").alias("age_min"),
        F.max("age").alias("age_max"),
    )
    output = (
        F.col("dimension"),
        F.col("value"),
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        *(F.col(name) for name in ("profiles", "age_sum", "age_min", "age_max")),
    )
    return unpivot, measures, output


def window_seconds_of(window_duration: str) -> int:
    """Seconds in a Spark interval string such as ``"1 minute"`` or ``"30 seconds"``."""
    amount, unit = window_duration.split()
    seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[unit.rstrip("s")]
    return int(amount) * seconds


def window_floor(moment: datetime, window_seconds: int) -> datetime:
    """The start of the tumbling window (aligned to the epoch, as Spark's) that holds ``moment``."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_seconds, UTC)
