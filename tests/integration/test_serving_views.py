"""The merged view against the real Cassandra: exact figures around the batch cutoff.

Each layer's rows are written with that layer's own store class (``CassandraSpeedStore``,
``BatchViewStore``), as the jobs write them; the known figures are then read back through
``ServingViews``. The batch rows deliberately differ from the speed partials of the same windows (the
batch layer is the authority: it saw late and duplicate records the speed layer could not), so any
window counted by both sides, or by neither, changes the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cassandra.cluster import Session

from batch_layer.recompute import BatchViewStore
from core.settings import Settings
from core.stores import cassandra_session
from infra.cassandra_schema import apply_schema
from serving.views import (
    ALL_TIME,
    Partial,
    ServingViews,
    TimeRange,
    ValueFigures,
    WindowCount,
    merge_partials,
)
from speed_layer.stores import CassandraSpeedStore
from tests.integration.kafka_helpers import drop_keyspace

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
W = [T0 + i * MINUTE for i in range(5)]
"""Five one-minute windows, 10:00 to 10:04."""

# Speed partials: (window, batch id, value, profiles, age_sum, age_min, age_max). Two micro-batches
# contribute to window 2, so the reader must sum partials.
SPEED = [
    (W[0], 1, "France", 2, 60, 25, 35),
    (W[1], 1, "France", 1, 40, 40, 40),
    (W[1], 2, "Spain", 3, 75, 20, 30),
    (W[2], 2, "France", 1, 20, 20, 20),
    (W[2], 3, "France", 2, 100, 45, 55),
    (W[3], 3, "Spain", 1, 66, 66, 66),
    (W[4], 4, "Spain", 5, 150, 18, 42),
]

# Batch version 1: complete before cutoff W[2]; more profiles than the speed side saw (late data).
BATCH_V1 = {
    W[0]: [("France", 3, 90, 25, 35)],
    W[1]: [("France", 1, 40, 40, 40), ("Spain", 4, 100, 19, 30)],
}
# Batch version 2: complete before cutoff W[3].
BATCH_V2 = {
    W[0]: [("France", 3, 90, 25, 35)],
    W[1]: [("France", 1, 40, 40, 40), ("Spain", 4, 100, 19, 30)],
    W[2]: [("France", 4, 140, 20, 55)],
}


def speed_partial(window: datetime, batch_id: int, value: str, *figures: int) -> dict[str, Any]:
    profiles, age_sum, age_min, age_max = figures
    return {
        "dimension": "country", "window_start": window, "value": value, "batch_id": batch_id,
        "window_end": window + MINUTE, "profiles": profiles, "age_sum": age_sum, "age_min": age_min,
        "age_max": age_max,
    }  # fmt: skip


def batch_rows(
    version: dict[datetime, list[tuple[Any, ...]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    windows = [
        {"dimension": "country", "window_start": start, "window_end": start + MINUTE, "value": value,
         "profiles": profiles, "age_sum": age_sum, "age_min": age_min, "age_max": age_max}
        for start, rows in version.items()
        for value, profiles, age_sum, age_min, age_max in rows
    ]  # fmt: skip
    totals = merge_partials(
        [Partial(w["value"], w["profiles"], w["age_sum"], w["age_min"], w["age_max"]) for w in windows], []
    )
    return [
        {"dimension": "country", "value": t.value, "profiles": t.profiles, "age_sum": t.age_sum,
         "age_min": t.age_min, "age_max": t.age_max}
        for t in totals
    ], windows  # fmt: skip


def expected(
    batch: dict[datetime, list[tuple[Any, ...]]], cutoff: datetime | None, time_range: TimeRange = ALL_TIME
) -> list[ValueFigures]:
    """The merged answer recounted in plain Python from the rows above."""

    def in_range(window: datetime) -> bool:
        return (time_range.start is None or window >= time_range.start) and (
            time_range.end is None or window < time_range.end
        )

    batch_part = [
        Partial(value, *figures)
        for window, rows in batch.items()
        if cutoff is not None and window < cutoff and in_range(window)
        for value, *figures in rows
    ]
    speed_part = [
        Partial(value, *figures)
        for window, _batch_id, value, *figures in SPEED
        if (cutoff is None or window >= cutoff) and in_range(window)
    ]
    return merge_partials(batch_part, speed_part)


@pytest.fixture
def keyspace_settings(stack_settings: Settings, unique_name: Callable[[str], str]) -> Iterator[Settings]:
    keyspace = unique_name("serving")
    settings = stack_settings.model_copy(
        update={"cassandra": stack_settings.cassandra.model_copy(update={"keyspace": keyspace})}
    )
    yield settings
    drop_keyspace(settings, keyspace)


@pytest.fixture
def session(keyspace_settings: Settings) -> Iterator[Session]:
    cluster, session = cassandra_session(keyspace_settings)
    apply_schema(
        session, keyspace_settings.cassandra.keyspace, keyspace_settings.cassandra.replication_factor
    )
    yield session
    cluster.shutdown()


Stores = tuple[CassandraSpeedStore, BatchViewStore, ServingViews]


@pytest.fixture
def stores(keyspace_settings: Settings, session: Session) -> Stores:
    keyspace = keyspace_settings.cassandra.keyspace
    speed = CassandraSpeedStore(session, keyspace, concurrency=16)
    speed.write_partials([speed_partial(*row) for row in SPEED])
    return speed, BatchViewStore(session, keyspace, concurrency=16), ServingViews(session, keyspace, "speed")


def publish(
    store: BatchViewStore, version: int, rows: dict[datetime, list[tuple[Any, ...]]], cutoff: datetime
) -> None:
    """What a recomputation does: write the version, make it current, delete the older ones."""
    totals, windows = batch_rows(rows)
    store.write_version(version, totals, windows)
    store.make_current(version, cutoff, sum(t["profiles"] for t in totals))
    for old in store.versions() - {version}:
        store.delete_version(old)


def test_with_no_batch_view_the_merged_view_is_the_speed_view(stores: Stores) -> None:
    _, _, views = stores
    view = views.dimension("country")
    assert view.values == expected({}, None)
    assert (view.profiles, view.batch_profiles, view.speed_profiles) == (15, 0, 15)
    assert view.freshness.batch is None
    assert views.timeline(TimeRange(W[0]), "country") == [
        WindowCount(W[0], 2, "speed"),
        WindowCount(W[1], 4, "speed"),
        WindowCount(W[2], 3, "speed"),
        WindowCount(W[3], 1, "speed"),
        WindowCount(W[4], 5, "speed"),
    ]


def test_batch_answers_before_the_cutoff_and_speed_from_it(stores: Stores) -> None:
    _, batch_store, views = stores
    publish(batch_store, 1, BATCH_V1, cutoff=W[2])
    view = views.dimension("country")
    assert view.values == expected(BATCH_V1, W[2])
    # batch: France 4, Spain 4; speed from W[2]: France 3, Spain 6 -- nothing of W[0], W[1] from speed
    assert [(v.value, v.profiles, v.batch_profiles, v.speed_profiles) for v in view.values] == [
        ("Spain", 10, 4, 6),
        ("France", 7, 4, 3),
    ]
    france = view.value("France")
    assert france is not None and (france.age_sum, france.age_min, france.age_max) == (250, 20, 55)
    assert view.freshness.batch_cutoff == W[2]
    assert views.timeline(TimeRange(W[0]), "country") == [
        WindowCount(W[0], 3, "batch"),
        WindowCount(W[1], 5, "batch"),
        WindowCount(W[2], 3, "speed"),
        WindowCount(W[3], 1, "speed"),
        WindowCount(W[4], 5, "speed"),
    ]
    # one value only: Spain has no speed partial in W[2], so that window does not appear
    assert views.timeline(TimeRange(W[1], W[3]), "country", "Spain") == [WindowCount(W[1], 4, "batch")]


@pytest.mark.parametrize(
    "time_range",
    [
        TimeRange(W[1], None),
        TimeRange(W[1], W[3]),
        TimeRange(None, W[2]),
        TimeRange(W[3], W[4]),
        TimeRange(W[0], W[1]),
    ],
    ids=["from-before-cutoff", "across-cutoff", "ending-at-cutoff", "after-cutoff", "before-cutoff"],
)
def test_a_time_range_takes_each_window_from_exactly_one_side(stores: Stores, time_range: TimeRange) -> None:
    _, batch_store, views = stores
    publish(batch_store, 1, BATCH_V1, cutoff=W[2])
    assert views.dimension("country", time_range).values == expected(BATCH_V1, W[2], time_range)


def test_a_new_batch_version_moves_the_boundary_without_double_counting(stores: Stores) -> None:
    _, batch_store, views = stores
    publish(batch_store, 1, BATCH_V1, cutoff=W[2])
    publish(batch_store, 2, BATCH_V2, cutoff=W[3])
    view = views.dimension("country")
    assert view.values == expected(BATCH_V2, W[3])
    assert [(v.value, v.batch_profiles, v.speed_profiles) for v in view.values] == [
        ("Spain", 4, 6),
        ("France", 8, 0),
    ]
    assert batch_store.versions() == {2}


def test_a_version_switch_during_a_query_is_read_again_from_the_new_version(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment: the reader has the old version, then a recomputation switches and deletes it."""
    _, batch_store, views = stores
    publish(batch_store, 1, BATCH_V1, cutoff=W[2])
    read_rows = views._rows
    switched: list[int] = []

    def rows_then_switch(*args: Any) -> Any:
        answer = read_rows(*args)
        if not switched:
            publish(batch_store, 2, BATCH_V2, cutoff=W[3])  # after this attempt has read version 1
            switched.append(2)
        return answer

    monkeypatch.setattr(views, "_rows", rows_then_switch)
    view = views.dimension("country")
    assert switched == [2]
    assert view.values == expected(BATCH_V2, W[3])
    assert view.freshness.batch_cutoff == W[3]


def test_freshness_reports_the_speed_progress(stores: Stores) -> None:
    speed_store, _, views = stores
    processed_at = datetime.now(UTC).replace(microsecond=0)
    speed_store.write_batch_metrics(
        {"job": "speed", "batch_id": 4, "processed_at": processed_at, "input_rows": 5, "new_profiles": 5,
         "duplicates": 0, "dead_lettered": 0, "under_age": 0, "late_rows_dropped": 2, "duration_ms": 900,
         "max_event_time": W[4] + timedelta(seconds=30)}
    )  # fmt: skip
    speed_store.write_batch_progress("speed", 4, 120.0, {0: 3, 1: 4})
    freshness = views.freshness()
    assert freshness.speed is not None
    assert (freshness.speed.processed_at, freshness.speed.kafka_lag, freshness.speed.late_rows_dropped) == (
        processed_at,
        7,
        2,
    )
    assert freshness.speed_lag == freshness.answered_at - (W[4] + timedelta(seconds=30))


def test_an_unknown_dimension_is_a_clear_error(stores: Stores) -> None:
    _, _, views = stores
    with pytest.raises(ValueError, match="unknown dimension 'city'"):
        views.dimension("city")
