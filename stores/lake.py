"""The Delta lake's personal data: the archive (every record as received, its identifiers sealed) and
silver (pseudonymized profiles), both partitioned by ingestion day. What erasure and retention do to
them (``PersonalDataStore``); the batch layer writes and reads them (``batch_layer/``).

The lake is a location that Hadoop's file systems open (a local folder, ``s3a://``, ``hdfs://``): its
files are reached through Delta and Hadoop's ``FileSystem``, never through this machine's file system.
"""

from __future__ import annotations

import logging
from datetime import date, datetime

from delta.tables import DeltaTable
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from core.pseudonymization import hmac_sha256_hex_column
from core.settings import PathSettings, RetentionSettings, location_name
from stores.personal_data import StoreRetention, cutoff_day
from stores.subject_keys import subject_pseudonym

logger = logging.getLogger(__name__)

_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


class DeltaLake:
    """The archive and silver tables under ``paths``; ``pseudonymization_key`` finds a subject's rows."""

    def __init__(self, spark: SparkSession, paths: PathSettings, pseudonymization_key: bytes) -> None:
        self.spark = spark
        self.paths = paths
        self._key = pseudonymization_key

    def erase(self, uuid: str) -> dict[str, int]:
        """Delete the subject's archive records (by Kafka key) and silver rows, files included.

        The rows are matched by the keyed pseudonym of their uuid, not by the uuid: Delta keeps a
        DELETE's predicate in its transaction log, which would otherwise hold the erased uuid in clear.
        """
        subject = F.lit(subject_pseudonym(uuid, self._key))
        removed = {}
        archived = self.purge_rows(
            self.paths.archive_table, hmac_sha256_hex_column(F.col("key"), self._key) == subject
        )
        if archived is not None:
            removed["Delta archive"] = archived
        silvered = self.purge_rows(self.paths.silver_table, F.col("subject_pseudonym") == subject)
        if silvered is not None:
            removed["Delta silver"] = silvered
        return removed

    def expire(self, retention: RetentionSettings, now: datetime) -> list[StoreRetention]:
        """Drop the archive's and silver's ingestion days older than ``retention.archive_days``.

        Silver is derived from the archive day by day, so it keeps the same days: a profile leaves both
        together, and a later full refresh of silver cannot bring it back.
        """
        first_kept = cutoff_day(now, retention.archive_days)
        results = []
        for path in (self.paths.archive_table, self.paths.silver_table):
            removed = self.delete_days_before(path, first_kept)
            if removed is not None:
                note = "files go at the next VACUUM (userpulse batch maintain)"
                results.append(
                    StoreRetention(
                        f"delta {location_name(path)}", first_kept.isoformat(), removed, "rows", note
                    )
                )
        return results

    def purge_rows(self, path: str, condition: Column) -> int | None:
        """Delete the rows matching ``condition`` from a Delta table and remove the files that held them;
        the rows deleted (None when there is no table)."""
        if not DeltaTable.isDeltaTable(self.spark, path):
            return None
        table = DeltaTable.forPath(self.spark, path)
        table.delete(condition)
        metrics = table.history(1).first().operationMetrics or {}
        deleted = int(metrics.get("numDeletedRows", 0))
        if deleted:
            # Rewrite files that carry deletion vectors, so the rows are gone from every live file...
            self.spark.sql(f"REORG TABLE delta.`{path}` APPLY (PURGE)")
            # ...then delete the unreferenced ones at once. LITE only deletes files the log removed, never
            # a file a concurrent writer (the archive job) has written but not committed yet.
            self._vacuum_now(path)
        return deleted

    def _vacuum_now(self, path: str) -> None:
        previous = self.spark.conf.get(_RETENTION_CHECK, "true")
        self.spark.conf.set(_RETENTION_CHECK, "false")
        try:
            self.spark.sql(f"VACUUM delta.`{path}` LITE RETAIN 0 HOURS")
        except AnalysisException as error:  # LITE refuses when some eligible file is not in the log
            logger.warning("VACUUM LITE refused on %s (%s): running a full VACUUM", path, error)
            self.spark.sql(f"VACUUM delta.`{path}` RETAIN 0 HOURS")
        finally:
            self.spark.conf.set(_RETENTION_CHECK, previous)

    def delete_days_before(self, path: str, first_kept: date) -> int | None:
        """Delete the ingestion-day partitions before ``first_kept``; rows removed (None: no table there).

        A predicate on the partition column only, so Delta drops whole files without reading them.
        Nothing is committed when no day is old enough (no empty table version every day).
        """
        if not DeltaTable.isDeltaTable(self.spark, path):
            return None
        table = DeltaTable.forPath(self.spark, path)
        condition = F.col("ingestion_date") < F.lit(first_kept)
        old_rows = table.toDF().where(condition).count()
        if old_rows:
            table.delete(condition)
        return old_rows


def data_files_in(spark: SparkSession, location: str) -> int:
    """Parquet data files under a Delta table's location, referenced by its log or not (the log's own
    files excluded), listed through the location's Hadoop file system."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    root = jvm.org.apache.hadoop.fs.Path(location)
    files = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).listFiles(root, True)
    count = 0
    while files.hasNext():
        name = files.next().getPath().toString()
        count += name.endswith(".parquet") and "/_delta_log/" not in name
    return count
