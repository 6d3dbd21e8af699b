"""The merged view against the real Cassandra: exact figures around the batch view's horizon.

Each layer's rows are written with that layer's own store class (``CassandraSpeedStore``,
``BatchViewStore``), as the jobs write them; the known figures are then read back through
``ServingViews``. The batch rows deliberately differ from the speed partials of the batches they cover
(the batch layer is the authority), so a partial counted by both sides, or by neither, changes the answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cassandra.cluster import Session

from core.settings import Settings
from serving.views import ALL_TIME, ServingViews, TimeRange, WindowCount
from stores.batch_views import BatchCurrent, BatchViewStore, ErasureCorrection
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session
from stores.speed_views import CassandraSpeedStore, partial_row

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
W = [T0 + i * MINUTE for i in range(5)]
"""Five one-minute windows, 10:00 to 10:04."""

# Speed partials: (batch id, task, window, value, profiles per age). Batch 3 moves a 20-year-old from
# France to Spain in window 1 (a re-fetch): France loses its youngest there.
SPEED: list[tuple[int, int, datetime, str, dict[int, int]]] = [
    (1, 0, W[0], "France", {25: 1, 35: 1}),
    (1, 1, W[1], "France", {20: 1, 40: 1}),
    (2, 0, W[1], "Spain", {20: 1, 25: 1, 30: 1}),
    (2, 1, W[2], "France", {20: 1}),
    (3, 0, W[1], "France", {20: -1}),
    (3, 0, W[1], "Spain", {20: 1}),
    (3, 1, W[2], "France", {45: 1, 55: 1}),
    (4, 0, W[3], "Spain", {66: 1}),
    (4, 1, W[4], "Spain", {18: 2, 42: 1, 50: 2}),
]

# A batch view up to speed batch 2 (more profiles than the speed side saw there: the authority).
BATCH_V1 = {
    W[0]: {"France": {25: 2, 35: 1}},
    W[1]: {"France": {20: 1, 40: 1}, "Spain": {19: 1, 25: 2, 30: 1}},
}
# A later batch view up to speed batch 3.
BATCH_V2 = {
    W[0]: {"France": {25: 2, 35: 1}},
    W[1]: {"France": {40: 1}, "Spain": {19: 1, 20: 1, 25: 2, 30: 1}},
    W[2]: {"France": {20: 1, 45: 1, 55: 1}},
}

Figures = tuple[int, int, int | None, int | None]


def figures(ages: Counter[int]) -> Figures:
    present = [age for age, n in ages.items() if n > 0]
    return (sum(ages.values()), sum(a * n for a, n in ages.items()), min(present), max(present))


def expected(
    batch: dict[datetime, dict[str, dict[int, int]]] | None,
    after_batch: int,
    time_range: TimeRange = ALL_TIME,
    erased: list[ErasureCorrection] = (),  # type: ignore[assignment]
) -> dict[str, Figures]:
    """The merged answer recounted in plain Python: batch rows, plus speed partials after the horizon."""
    ages: dict[str, Counter[int]] = {}
    for window, values in (batch or {}).items():
        if time_range.holds(window):
            for value, counts in values.items():
                ages.setdefault(value, Counter()).update(counts)
    for batch_id, _, window, value, counts in SPEED:
        if batch_id > after_batch and time_range.holds(window):
            ages.setdefault(value, Counter()).update(counts)
    for correction in erased:
        if time_range.holds(correction.window_start):
            ages.setdefault(correction.values["country"], Counter())[correction.age] -= 1
    return {value: figures(counts) for value, counts in ages.items() if sum(counts.values())}


def merged(views: ServingViews, time_range: TimeRange = ALL_TIME) -> dict[str, Figures]:
    return {
        v.value: (v.profiles, v.age_sum, v.age_min, v.age_max)
        for v in views.dimension("country", time_range).values
    }


@pytest.fixture
def keyspace_settings(own_stores: Callable[..., Settings]) -> Settings:
    return own_stores("serving")


@pytest.fixture
def session(keyspace_settings: Settings) -> Iterator[Session]:
    cluster, session = cassandra_session(keyspace_settings)
    apply_schema(
        session, keyspace_settings.cassandra.keyspace, keyspace_settings.cassandra.keyspace_replication
    )
    yield session
    cluster.shutdown()


Stores = tuple[CassandraSpeedStore, BatchViewStore, ServingViews]


def batch_metrics(batch_id: int, windows: set[datetime], **figures: Any) -> dict[str, Any]:
    return {
        "job": "speed", "batch_id": batch_id, "processed_at": T0 + batch_id * MINUTE, "input_rows": 1,
        "new_profiles": 1, "duplicates": 0, "dead_lettered": 0, "under_age": 0, "late_rows_dropped": 0,
        "duration_ms": 500, "max_event_time": None, "end_offsets": {0: batch_id * 10}, "windows": windows,
        **figures,
    }  # fmt: skip


@pytest.fixture
def stores(keyspace_settings: Settings, session: Session) -> Stores:
    keyspace = keyspace_settings.cassandra.keyspace
    speed = CassandraSpeedStore(session, keyspace, concurrency=16)
    speed.write_partials(
        [
            partial_row(("country", window, value), Counter(ages), batch, task, 60)
            for batch, task, window, value, ages in SPEED
        ]
    )
    for batch_id in {row[0] for row in SPEED}:
        speed.write_batch_metrics(batch_metrics(batch_id, {row[2] for row in SPEED if row[0] == batch_id}))
    return (
        speed,
        BatchViewStore(session, keyspace, concurrency=16),
        ServingViews(session, keyspace, "speed", concurrency=16),
    )


def view_rows(
    version: dict[datetime, dict[str, dict[int, int]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def row(ages: dict[int, int], **key: Any) -> dict[str, Any]:
        profiles, age_sum, age_min, age_max = figures(Counter(ages))
        return {
            **key,
            "profiles": profiles,
            "age_sum": age_sum,
            "age_min": age_min,
            "age_max": age_max,
            "ages": ages,
        }

    windows = [
        row(ages, dimension="country", window_start=start, window_end=start + MINUTE, value=value)
        for start, values in version.items()
        for value, ages in values.items()
    ]
    totals: dict[str, Counter[int]] = {}
    for values in version.values():
        for value, ages in values.items():
            totals.setdefault(value, Counter()).update(ages)
    return [row(dict(ages), dimension="country", value=value) for value, ages in totals.items()], windows


def publish(
    store: BatchViewStore, version: int, rows: dict[datetime, dict[str, dict[int, int]]], horizon: int
) -> None:
    """What a recomputation does: write the version, make it current, delete the older ones."""
    totals, windows = view_rows(rows)
    store.write_version(version, totals, windows)
    cutoff = max(rows)
    view = BatchCurrent(
        version, cutoff, sum(t["profiles"] for t in totals), T0, horizon, {0: horizon * 10}, 0
    )
    assert store.make_current(view, store.erasure_seq())
    for old in store.versions() - {version}:
        store.delete_version(old)


def test_with_no_batch_view_the_merged_view_is_every_speed_partial(stores: Stores) -> None:
    _, _, views = stores
    assert merged(views) == expected(None, after_batch=-1)
    view = views.dimension("country")
    assert (view.profiles, view.batch_profiles, view.speed_profiles) == (16, 0, 16)
    assert view.freshness.batch is None
    assert views.timeline(TimeRange(W[0]), "country") == [
        WindowCount(W[0], 2, "speed"),
        WindowCount(W[1], 5, "speed"),
        WindowCount(W[2], 3, "speed"),
        WindowCount(W[3], 1, "speed"),
        WindowCount(W[4], 5, "speed"),
    ]


def test_the_batch_view_plus_the_speed_partials_after_its_horizon(stores: Stores) -> None:
    _, batch_store, views = stores
    publish(batch_store, 1, BATCH_V1, horizon=2)
    assert merged(views) == expected(BATCH_V1, after_batch=2)
    view = views.dimension("country")
    # batch: France 5, Spain 4; speed batches 3 and 4: France +1 (-1 +2), Spain +7
    assert [(v.value, v.profiles, v.batch_profiles, v.speed_profiles) for v in view.values] == [
        ("Spain", 11, 4, 7),
        ("France", 6, 5, 1),
    ]
    # France's only 20-year-old left with batch 3: the batch row's minimum (20) no longer holds; the ages
    # of every row say the youngest left is 25.
    france = view.value("France")
    assert france is not None and (france.age_min, france.age_max) == (25, 55)
    assert view.freshness.batch is not None and view.freshness.batch.speed_batch_id == 2
    assert views.timeline(TimeRange(W[0]), "country") == [
        WindowCount(W[0], 3, "batch"),
        WindowCount(W[1], 6, "batch + speed"),
        WindowCount(W[2], 2, "speed"),
        WindowCount(W[3], 1, "speed"),
        WindowCount(W[4], 5, "speed"),
    ]
    assert views.timeline(TimeRange(W[1], W[3]), "country", "Spain") == [
        WindowCount(W[1], 5, "batch + speed")
    ]


@pytest.mark.parametrize(
    "time_range",
    [
        TimeRange(W[1], None),
        TimeRange(W[1], W[3]),
        TimeRange(None, W[2]),
        TimeRange(W[3], W[4]),
        TimeRange(W[0], W[1]),
    ],
    ids=["from-1", "1-to-3", "until-2", "3-to-4", "0-to-1"],
)
def test_every_time_range_takes_each_layer_once(stores: Stores, time_range: TimeRange) -> None:
    _, batch_store, views = stores
    publish(batch_store, 1, BATCH_V1, horizon=2)
    assert merged(views, time_range) == expected(BATCH_V1, after_batch=2, time_range=time_range)


def test_a_new_batch_view_moves_the_horizon_without_double_counting(stores: Stores) -> None:
    _, batch_store, views = stores
    publish(batch_store, 1, BATCH_V1, horizon=2)
    publish(batch_store, 2, BATCH_V2, horizon=3)
    assert merged(views) == expected(BATCH_V2, after_batch=3)
    assert batch_store.versions() == {2}


def test_a_version_switch_during_a_query_is_read_again_from_the_new_version(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment: the reader has the old version, then a recomputation switches and deletes it."""
    _, batch_store, views = stores
    publish(batch_store, 1, BATCH_V1, horizon=2)
    read_totals = views.batch.totals
    switched: list[int] = []

    def totals_then_switch(*args: Any) -> Any:
        answer = read_totals(*args)
        if not switched:
            publish(batch_store, 2, BATCH_V2, horizon=3)  # after this attempt has read version 1
            switched.append(2)
        return answer

    monkeypatch.setattr(views.batch, "totals", totals_then_switch)
    view = views.dimension("country")
    assert switched == [2]
    assert {v.value: (v.profiles, v.age_sum, v.age_min, v.age_max) for v in view.values} == expected(
        BATCH_V2, after_batch=3
    )
    assert view.freshness.batch is not None and view.freshness.batch.version == 2


def test_pending_erasures_come_off_until_a_view_absorbs_them(stores: Stores) -> None:
    _, batch_store, views = stores
    publish(batch_store, 1, BATCH_V1, horizon=2)
    seq = batch_store.next_erasure_seq()
    erased = ErasureCorrection(seq, 4, W[0], 35, {"country": "France", "gender": "male"})
    batch_store.add_correction(erased)
    assert merged(views) == expected(BATCH_V1, after_batch=2, erased=[erased])
    assert merged(views)["France"][3] == 55  # the 35-year-old was not France's oldest
    # A view computed after the erasure leaves the subject out (here: its rows say so) and absorbs it.
    totals, windows = view_rows(BATCH_V2)
    batch_store.write_version(3, totals, windows)
    absorbed = BatchCurrent(3, W[2], 0, T0, 4, {0: 40}, erasures_seen=seq)
    assert batch_store.make_current(absorbed, batch_store.erasure_seq())
    assert merged(views) == expected(BATCH_V2, after_batch=4)


def test_a_view_computed_before_an_erasure_cannot_become_current(stores: Stores) -> None:
    _, batch_store, _ = stores
    seen = batch_store.erasure_seq()
    batch_store.next_erasure_seq()  # an erasure starts while the view is being computed
    totals, windows = view_rows(BATCH_V1)
    batch_store.write_version(1, totals, windows)
    assert not batch_store.make_current(BatchCurrent(1, W[1], 9, T0, 2, {0: 20}, seen), seen)
    assert batch_store.current() is None


def test_freshness_reports_the_speed_progress(stores: Stores) -> None:
    speed_store, _, views = stores
    processed_at = datetime.now(UTC).replace(microsecond=0)
    speed_store.write_batch_metrics(
        batch_metrics(
            5,
            set(),
            processed_at=processed_at,
            late_rows_dropped=2,
            max_event_time=W[4] + timedelta(seconds=30),
        )
    )
    speed_store.write_batch_progress("speed", 5, 120.0, {0: 3, 1: 4})
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
