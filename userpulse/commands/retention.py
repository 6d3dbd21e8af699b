"""``userpulse retention``: enforce every store's retention now and say what was removed.

The same functions as the daily Dagster job ``retention`` (``orchestration/definitions.py``), for a run
by hand, e.g. after shortening a retention setting.
"""

from __future__ import annotations

from rich.console import Console

from core.settings import get_settings
from core.spark import build_spark_session
from privacy.retention import enforce_all, now_utc

console = Console(stderr=True)


def retention() -> None:
    """Delete what is older than the retention of each store (retention.* settings) and print, per
    store, what was removed: MongoDB documents, Cassandra rows (and their default TTL), Delta archive
    and silver days, the topics' retention.ms."""
    settings = get_settings()
    spark = build_spark_session(settings, app_name="userpulse-retention")
    try:
        results = enforce_all(settings, spark, now_utc())
    finally:
        spark.stop()
    for result in results:
        console.print(result.describe())
