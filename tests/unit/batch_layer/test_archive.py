from __future__ import annotations

from datetime import UTC, date, datetime

from pyspark.sql import SparkSession

from batch_layer.archive import ARCHIVE_COLUMNS, archive_records


def test_archive_rows_keep_the_bytes_and_take_the_utc_ingestion_date(spark: SparkSession) -> None:
    kafka_rows = spark.createDataFrame(
        [
            (b"k1", b"\x00not json", "t", 0, 7, datetime(2026, 11, 23, 23, 30, tzinfo=UTC), 0),
            (None, b"{}", "t", 2, 0, datetime(2026, 11, 24, 0, 10, tzinfo=UTC), 0),
        ],
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
        "timestampType int",
    )
    previous_zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "Asia/Tehran")  # UTC+3:30: 23:30 UTC is tomorrow there
    try:
        rows = archive_records(kafka_rows).collect()
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous_zone)

    assert tuple(archive_records(kafka_rows).columns) == ARCHIVE_COLUMNS
    assert [(bytes(r.key) if r.key else None, bytes(r.value), r.offset, r.ingestion_date) for r in rows] == [
        (b"k1", b"\x00not json", 7, date(2026, 11, 23)),
        (None, b"{}", 0, date(2026, 11, 24)),
    ]
