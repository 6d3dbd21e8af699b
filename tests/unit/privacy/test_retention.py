"""Retention without services: cutoffs, the TTLs derived from the settings, and the job's wiring."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from core.settings import RetentionSettings, Settings
from orchestration.definitions import batch_layer_definitions
from stores.cassandra_schema import CASSANDRA_TABLES, table_ttls
from stores.personal_data import StoreRetention, cutoff_day, cutoff_instant


def test_cutoff_instant_is_now_minus_the_days_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    now = datetime(2026, 11, 23, 1, 30, tzinfo=paris)  # 00:30 UTC

    assert cutoff_instant(now, 30) == datetime(2026, 10, 24, 0, 30, tzinfo=UTC)
    assert cutoff_instant(now, 30).tzinfo == UTC


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cutoff_instant(datetime(2026, 11, 23), 1)


@pytest.mark.parametrize(
    ("now", "days", "first_kept"),
    [
        # The cutoff is 2026-11-13 12:00: day 11-12 is wholly older, 11-13 is not (its morning is).
        (datetime(2026, 11, 23, 12, 0, tzinfo=UTC), 10, date(2026, 11, 13)),
        # At midnight the day before the cutoff has just ended: it goes, the cutoff's day stays.
        (datetime(2026, 11, 23, 0, 0, tzinfo=UTC), 10, date(2026, 11, 13)),
        # One second before midnight: the cutoff is 11-12 23:59:59, so 11-11 goes and 11-12 (whose last
        # second is younger than the cutoff) stays.
        (datetime(2026, 11, 22, 23, 59, 59, tzinfo=UTC), 10, date(2026, 11, 12)),
        # A local-time now is converted first: 01:00 at UTC+2 is the previous day in UTC.
        (datetime(2026, 11, 23, 1, 0, tzinfo=timezone(timedelta(hours=2))), 1, date(2026, 11, 21)),
    ],
)
def test_a_day_partition_goes_only_once_all_of_it_is_past_the_cutoff(
    now: datetime, days: int, first_kept: date
) -> None:
    kept = cutoff_day(now, days)

    assert kept == first_kept
    last_dropped_end = datetime.combine(kept, datetime.min.time(), tzinfo=UTC)  # end of the day before
    assert last_dropped_end <= cutoff_instant(now, days)  # everything in the dropped days is older


def test_ttls_follow_the_settings_and_cover_only_the_tables_under_retention() -> None:
    retention = RetentionSettings(profiles_days=2, speed_views_days=1)

    assert table_ttls(retention) == {
        "profiles": 2 * 86_400,
        "speed_partials": 86_400,
        "speed_windows": 86_400,
        "stream_batches": 86_400,
    }
    assert not {table.name for table in CASSANDRA_TABLES} & {"batch_current", "batch_aggregates"}


def test_defaults_keep_clear_data_shortest_and_the_archive_longest() -> None:
    retention = Settings().retention

    assert retention.raw_documents_days < retention.archive_days
    assert retention.profiles_days <= retention.archive_days
    assert retention.topic_retention_ms == retention.topic_days * 24 * 3600 * 1000


def test_a_retention_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERPULSE_RETENTION__ARCHIVE_DAYS", "0")

    with pytest.raises(ValidationError, match="archive_days"):
        Settings()


def test_each_store_says_what_was_removed() -> None:
    line = StoreRetention("mongodb userpulse.profiles", "2026-10-24T00:00:00+00:00", 1234, "documents")

    assert (
        line.describe()
        == "mongodb userpulse.profiles: removed 1,234 documents (keeping from 2026-10-24T00:00:00+00:00)"
    )
    assert (
        StoreRetention("kafka t", "7 days", 0, "records", "retention.ms is 1")
        .describe()
        .endswith("; retention.ms is 1")
    )


def test_the_retention_job_runs_one_op_per_store_every_night() -> None:
    defs = batch_layer_definitions(Settings())
    job = defs.resolve_job_def("retention")

    assert {node.name for node in job.graph.nodes} == {
        "topic_retention",
        "mongo_retention",
        "cassandra_retention",
        "lake_retention",
    }
    # No op waits for another: a store that is down does not hold back the others' retention.
    assert all(not node.definition.input_defs for node in job.graph.nodes)
    assert defs.resolve_schedule_def("retention_schedule").cron_schedule == "0 3 * * *"
