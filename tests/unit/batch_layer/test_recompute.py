"""Pure logic of the batch views: the horizon a recomputation covers, window boundaries."""

from __future__ import annotations

from datetime import UTC, datetime

from batch_layer.recompute import choose_horizon
from core.aggregates import window_floor


def test_the_horizon_is_the_last_speed_batch_whose_records_are_all_archived() -> None:
    archived = {0: 120, 1: 80, 2: 0}
    speed_batches = [(9, {0: 130, 1: 80}), (8, {0: 120, 1: 75}), (7, {0: 100, 1: 50})]  # newest first

    assert choose_horizon(archived, speed_batches) == (8, {0: 120, 1: 75})


def test_a_partition_the_archive_has_not_reached_holds_the_horizon_back() -> None:
    assert choose_horizon({0: 10}, [(3, {0: 5, 1: 1}), (2, {0: 5})]) == (2, {0: 5})


def test_without_speed_batches_the_view_covers_the_whole_archive() -> None:
    assert choose_horizon({0: 7, 1: 3}, []) == (None, {0: 7, 1: 3})


def test_when_no_speed_batch_is_archived_yet_the_view_covers_nothing() -> None:
    assert choose_horizon({}, [(0, {0: 4})]) == (-1, {})


def test_window_floor_is_the_start_of_the_window_holding_an_instant() -> None:
    newest = datetime(2026, 11, 23, 10, 50, 42, 500_000, tzinfo=UTC)

    assert window_floor(newest, 60) == datetime(2026, 11, 23, 10, 50, tzinfo=UTC)
    assert window_floor(newest, 300) == datetime(2026, 11, 23, 10, 50, tzinfo=UTC)
    assert window_floor(datetime(2026, 11, 23, 10, 50, tzinfo=UTC), 60) == datetime(
        2026, 11, 23, 10, 50, tzinfo=UTC
    )
