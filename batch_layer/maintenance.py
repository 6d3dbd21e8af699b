"""Delta maintenance of the lake: OPTIMIZE (compaction) and VACUUM with the configured retention.

Why it is needed: the archive grows by a few small files per streaming micro-batch and per ingestion
day, and every silver refresh replaces a day's files, leaving the old ones behind for time travel.
Many small files slow every read of the archive; unreferenced files only cost disk. OPTIMIZE rewrites
each partition's small files into larger ones (a new table version with the same rows); VACUUM deletes
the files no version within the retention needs any more.

Both are safe next to the other jobs: OPTIMIZE only commits if no concurrent commit removed the files
it compacted (Delta's optimistic concurrency; the loser fails and is retried), and VACUUM keeps every
file a reader of a version younger than the retention may still open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from core.settings import Settings, location_name
from stores.lake import data_files_in

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableMaintenance:
    """What maintenance did to one Delta table."""

    path: str
    files_before: int
    """Data files of the current version before OPTIMIZE."""
    files_after: int
    """Data files of the current version after OPTIMIZE (the rows are the same)."""
    files_on_disk_before: int
    """Data files in the table's folder before maintenance, referenced or not."""
    files_on_disk_optimized: int
    """Data files in the folder after OPTIMIZE: the compacted files were added, none was deleted."""
    files_on_disk_after: int
    """Data files in the folder after VACUUM."""

    @property
    def name(self) -> str:
        """The table's name: the last part of its location."""
        return location_name(self.path)

    @property
    def files_vacuumed(self) -> int:
        """Data files VACUUM deleted."""
        return self.files_on_disk_optimized - self.files_on_disk_after


def current_files(spark: SparkSession, path: str) -> int:
    """Data files the table's current version references."""
    return int(DeltaTable.forPath(spark, path).detail().first().numFiles)


def maintain_table(spark: SparkSession, path: str, retention_hours: float) -> TableMaintenance | None:
    """OPTIMIZE then VACUUM one table (None when there is no Delta table at ``path`` yet)."""
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    table = DeltaTable.forPath(spark, path)
    files_before, on_disk_before = current_files(spark, path), data_files_in(spark, path)
    table.optimize().executeCompaction()
    files_after, on_disk_optimized = current_files(spark, path), data_files_in(spark, path)
    # Delta refuses a retention under its own minimum (7 days by default) unless the session turned
    # spark.databricks.delta.retentionDurationCheck.enabled off: a too short setting fails loudly.
    table.vacuum(retention_hours)
    result = TableMaintenance(
        path, files_before, files_after, on_disk_before, on_disk_optimized, data_files_in(spark, path)
    )
    logger.info(
        "%s: OPTIMIZE %d -> %d files, VACUUM (retention %.1f h) deleted %d files",
        path,
        files_before,
        files_after,
        retention_hours,
        result.files_vacuumed,
    )
    return result


def maintain_lake(
    settings: Settings, spark: SparkSession, retention_hours: float | None = None
) -> list[TableMaintenance]:
    """OPTIMIZE and VACUUM the archive and the silver table (the retention defaults to the settings')."""
    hours = settings.batch_layer.vacuum_retention_hours if retention_hours is None else retention_hours
    results = [
        maintain_table(spark, path, hours)
        for path in (settings.paths.archive_table, settings.paths.silver_table)
    ]
    return [result for result in results if result is not None]
