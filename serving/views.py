"""The merged Lambda view: the batch view up to its horizon, plus the speed layer's partials after it.

The current batch view covers the records of the speed layer's micro-batches up to one of them (its
horizon, ``speed_batch_id``), counted by the rule of ``core.versions``; the speed layer's partials of the
later batches are the changes those records made. So for any dimension

    merged = batch view rows  +  speed partials of batches after the horizon  -  pending erasures

and every record is counted by exactly one layer (``docs/architecture.md``). The split is by position
in Kafka, not by event time: a re-fetch or a late copy may change a window the batch view covers, and
its partial says so. Without a batch view the answer is the speed partials alone. Averages are
``age_sum / profiles`` of the merged sums, never averages of averages; the minimum and maximum come
from profiles per age whenever a profile left a value (a re-fetch, an erasure), since a minimum cannot
be subtracted.

A query reads the current batch view once and uses it throughout; if a recomputation made another
version current (and so may have deleted the one being read) before the query finished, the query
starts again. Every read names its partitions (dimension, window, version): nothing here scans a table.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from core.aggregates import DIMENSIONS
from core.settings import Settings
from stores.batch_views import BatchCurrent, BatchViewStore, ErasureCorrection
from stores.connections import Session
from stores.speed_views import CassandraSpeedStore, SpeedProgress, StreamBatch

logger = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["BatchCurrent", "SpeedProgress"]

TOTAL_DIMENSION = "age_band"
"""Every counted profile has an age band, so this dimension's values sum to all profiles of a window."""

MAX_VERSION_RETRIES = 3
"""Restarts of a query that raced a batch-version switch before it gives up and says so."""

EPOCH = datetime.fromtimestamp(0, UTC)
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


class ViewChangedError(RuntimeError):
    """The batch version switched during every attempt of a query (a recomputation loop gone wild)."""


@dataclass(frozen=True)
class Partial:
    """One additive row of a value: a batch view row, the speed partials of a window, a correction."""

    value: str
    profiles: int
    age_sum: int
    age_min: int | None
    age_max: int | None
    removals: int = 0
    """Profiles that left the value in it (its minimum and maximum then need the ages)."""
    ages: Callable[[], Counter[int]] | None = None
    """Profiles per age, read on demand (only when some profile left the value)."""


@dataclass(frozen=True)
class ValueFigures:
    """Merged figures of one dimension value, and how much of its count each layer gave."""

    value: str
    profiles: int
    age_sum: int
    age_min: int | None
    age_max: int | None
    batch_profiles: int
    speed_profiles: int
    """The speed layer's net share: its partials after the horizon, less pending erasures."""

    @property
    def average_age(self) -> float | None:
        return self.age_sum / self.profiles if self.profiles else None


@dataclass(frozen=True)
class Freshness:
    """How fresh an answer is: what the batch view covers and how far the speed side has got."""

    batch: BatchCurrent | None
    last_speed_window: datetime | None
    speed: SpeedProgress | None
    answered_at: datetime

    @property
    def batch_cutoff(self) -> datetime | None:
        return self.batch.cutoff if self.batch else None

    @property
    def speed_lag(self) -> timedelta | None:
        """Time from the newest event the speed layer has processed to now."""
        if self.speed is None or self.speed.max_event_time is None:
            return None
        return self.answered_at - self.speed.max_event_time


@dataclass(frozen=True)
class DimensionView:
    """A merged breakdown of one dimension, largest values first."""

    dimension: str
    values: list[ValueFigures]
    freshness: Freshness

    @property
    def profiles(self) -> int:
        return sum(v.profiles for v in self.values)

    @property
    def batch_profiles(self) -> int:
        return sum(v.batch_profiles for v in self.values)

    @property
    def speed_profiles(self) -> int:
        return sum(v.speed_profiles for v in self.values)

    @property
    def age_sum(self) -> int:
        return sum(v.age_sum for v in self.values)

    @property
    def average_age(self) -> float | None:
        return self.age_sum / self.profiles if self.profiles else None

    def value(self, name: str) -> ValueFigures | None:
        return next((v for v in self.values if v.value == name), None)


@dataclass(frozen=True)
class WindowCount:
    """Profiles of one event-time window (of one dimension value, or all), and the layers that gave it."""

    window_start: datetime
    profiles: int
    layer: str
    """``batch``, ``speed``, or ``batch + speed`` when both have rows for the window."""


@dataclass(frozen=True)
class TimeRange:
    """Windows whose start is in ``[start, end)``; ``None`` leaves a side open."""

    start: datetime | None = None
    end: datetime | None = None

    @property
    def is_all_time(self) -> bool:
        return self.start is None and self.end is None

    def holds(self, moment: datetime) -> bool:
        return (self.start is None or moment >= self.start) and (self.end is None or moment < self.end)


ALL_TIME = TimeRange()
"""Every window, whenever it started."""


def batch_partial(row: Any, ages: Callable[[], Counter[int]]) -> Partial:
    """A batch view row (all-time or per window) as a ``Partial``; ``ages`` reads its age counts."""
    return Partial(row.value, row.profiles or 0, row.age_sum or 0, row.age_min, row.age_max, ages=ages)


def merge_partials(batch_rows: Iterable[Partial], speed_rows: Iterable[Partial]) -> list[ValueFigures]:
    """Sum the batch rows and speed partials (and corrections) of each value; largest count first, then
    by value. Values left with no profile (every one of them gone) are left out."""
    merged: dict[str, dict[str, Any]] = {}

    def add(row: Partial, layer: str) -> None:
        figures = merged.setdefault(
            row.value,
            {"profiles": 0, "age_sum": 0, "min": [], "max": [], "batch": 0, "speed": 0, "rows": []},
        )
        figures["profiles"] += row.profiles
        figures["age_sum"] += row.age_sum
        figures[layer] += row.profiles
        figures["rows"].append(row)
        if row.age_min is not None:
            figures["min"].append(row.age_min)
        if row.age_max is not None:
            figures["max"].append(row.age_max)

    for row in batch_rows:
        add(row, "batch")
    for row in speed_rows:
        add(row, "speed")
    values = []
    for value, f in merged.items():
        if f["profiles"] <= 0:
            continue
        if any(row.removals for row in f["rows"]):
            # A profile left the value: only the ages of every row tell the minimum and maximum.
            ages: Counter[int] = Counter()
            for row in f["rows"]:
                ages.update(row.ages() if row.ages is not None else {})
            present = [age for age, count in ages.items() if count > 0]
            age_min, age_max = min(present, default=None), max(present, default=None)
        else:
            age_min, age_max = min(f["min"], default=None), max(f["max"], default=None)
        values.append(
            ValueFigures(value, f["profiles"], f["age_sum"], age_min, age_max, f["batch"], f["speed"])
        )
    return sorted(values, key=lambda v: (-v.profiles, v.value))


def correction_partials(
    corrections: Iterable[ErasureCorrection], dimension: str, time_range: TimeRange
) -> list[tuple[datetime, Partial]]:
    """What pending erasures take off a dimension: -1 profile of its age, in its window and value."""
    partials = []
    for correction in corrections:
        value = correction.values.get(dimension)
        if value is None or not time_range.holds(correction.window_start):
            continue
        age = correction.age
        partials.append(
            (
                correction.window_start,
                Partial(value, -1, -age, None, None, removals=1, ages=lambda age=age: Counter({age: -1})),
            )
        )
    return partials


class ServingViews:
    """Read side of both layers' Cassandra views: merged breakdowns, timelines and freshness."""

    def __init__(self, session: Session, keyspace: str, speed_job: str, concurrency: int) -> None:
        self.speed_job = speed_job
        self.batch = BatchViewStore(session, keyspace, concurrency)
        self.speed = CassandraSpeedStore(session, keyspace, concurrency)

    # --- single reads -------------------------------------------------------------------------

    def batch_current(self) -> BatchCurrent | None:
        return self.batch.current()

    def speed_progress(self) -> SpeedProgress | None:
        return self.speed.progress(self.speed_job)

    def recent_speed_batches(self, limit: int) -> list[StreamBatch]:
        return self.speed.recent_batches(self.speed_job, limit)

    def last_speed_window(self) -> datetime | None:
        return self.speed.last_window(TOTAL_DIMENSION)

    def freshness(self, batch: BatchCurrent | None = None) -> Freshness:
        return Freshness(
            batch if batch is not None else self.batch_current(),
            self.last_speed_window(),
            self.speed_progress(),
            datetime.now(UTC),
        )

    # --- merged answers -----------------------------------------------------------------------

    def dimension(self, dimension: str, time_range: TimeRange = ALL_TIME) -> DimensionView:
        """The merged breakdown of ``dimension`` over the windows of ``time_range``."""
        if dimension not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}: expected one of {', '.join(DIMENSIONS)}")
        [view] = self.dimensions([dimension], time_range)
        return view

    def dimensions(self, dimensions: Sequence[str], time_range: TimeRange = ALL_TIME) -> list[DimensionView]:
        """Merged breakdowns of several dimensions, all from the same batch version."""

        def read(batch: BatchCurrent | None) -> list[DimensionView]:
            freshness = self.freshness(batch)
            sources = _Sources(self, batch, time_range)
            return [
                DimensionView(dimension, merge_partials(*sources.breakdown_rows(dimension)), freshness)
                for dimension in dimensions
            ]

        return self._consistently(read)

    def timeline(
        self, time_range: TimeRange, dimension: str = TOTAL_DIMENSION, value: str | None = None
    ) -> list[WindowCount]:
        """Profiles per window in ``time_range`` (of one dimension value, or all), oldest first."""

        def read(batch: BatchCurrent | None) -> list[WindowCount]:
            counts: dict[datetime, int] = {}
            layers: dict[datetime, set[str]] = {}
            for layer, start, row in _Sources(self, batch, time_range).window_rows(dimension):
                if value is None or row.value == value:
                    counts[start] = counts.get(start, 0) + row.profiles
                    layers.setdefault(start, set()).add(layer)
            return [
                WindowCount(start, counts[start], " + ".join(sorted(layers[start])))
                for start in sorted(counts)
                if counts[start] > 0
            ]

        return self._consistently(read)

    # --- internals ----------------------------------------------------------------------------

    def _consistently(self, read: Callable[[BatchCurrent | None], T]) -> T:
        """Run ``read`` against the current batch view; again if another became current meanwhile."""
        for _attempt in range(MAX_VERSION_RETRIES):
            batch = self.batch_current()
            answer = read(batch)
            after = self.batch_current()
            if (batch.version if batch else None) == (after.version if after else None):
                return answer
            logger.info("batch version switched during a query (%s -> %s): reading again", batch, after)
        raise ViewChangedError(f"the batch view changed during each of {MAX_VERSION_RETRIES} attempts")


class _Sources:
    """The rows one answer merges, for one batch view and time range."""

    def __init__(self, views: ServingViews, batch: BatchCurrent | None, time_range: TimeRange) -> None:
        self.views = views
        self.batch = batch
        self.time_range = time_range
        # The speed partials that count: those after the view's horizon (all of them without a view;
        # none for a view computed without a speed layer, which covers the whole archive).
        self.after_batch: int | None = -1 if batch is None else batch.speed_batch_id
        pending = views.batch.corrections()
        seen = batch.erasures_seen if batch is not None else 0
        self.corrections = [c for c in pending if c.seq > seen]
        self._speed_windows: dict[str, list[datetime]] = {}
        self._touched: set[datetime] | None = None

    def speed_windows(self, dimension: str) -> list[datetime]:
        """The windows in range that speed partials after the horizon touched."""
        if dimension not in self._speed_windows:
            if self.after_batch is None:
                windows: list[datetime] = []
            elif self.after_batch < 0:
                start, end = self.time_range.start or EPOCH, self.time_range.end or FAR_FUTURE
                windows = self.views.speed.window_starts(dimension, start, end)
            else:
                if self._touched is None:
                    self._touched = self.views.speed.windows_after(self.views.speed_job, self.after_batch)
                windows = sorted(w for w in self._touched if self.time_range.holds(w))
            self._speed_windows[dimension] = windows
        return self._speed_windows[dimension]

    def speed_rows(self, dimension: str) -> list[tuple[datetime, Partial]]:
        if self.after_batch is None:
            return []
        after = self.after_batch
        speed = self.views.speed
        rows = []
        for window_start, row in speed.partial_sums(dimension, self.speed_windows(dimension), after):
            # Read only when some row of the value has removals (then every row's ages are needed).
            ages = lambda w=window_start, v=row.value: speed.partial_ages(dimension, w, v, after)  # noqa: E731
            rows.append(
                (
                    window_start,
                    Partial(
                        row.value, row.profiles, row.age_sum, row.added_min, row.added_max, row.removals, ages
                    ),
                )
            )
        return rows

    def batch_window_rows(self, dimension: str) -> list[tuple[datetime, Partial]]:
        if self.batch is None:
            return []
        version, store = self.batch.version, self.views.batch
        starts = store.window_starts(
            version, dimension, self.time_range.start or EPOCH, self.time_range.end or FAR_FUTURE
        )
        return [
            (
                start,
                batch_partial(
                    row, lambda s=start, v=row.value: Counter(store.window_ages(version, dimension, s, v))
                ),
            )
            for row in store.window_rows(version, dimension, starts)
            for start in [_aware(row.window_start)]
        ]

    def breakdown_rows(self, dimension: str) -> tuple[list[Partial], list[Partial]]:
        """The batch rows and the speed rows (partials and corrections) of a dimension's breakdown."""
        if self.batch is not None and self.time_range.is_all_time:
            version, store = self.batch.version, self.views.batch
            batch_rows = [
                batch_partial(
                    row, lambda v=row.value: Counter(store.total_ages(version, dimension, [v]).get(v, {}))
                )
                for row in store.totals(version, dimension)
            ]
        else:
            batch_rows = [row for _, row in self.batch_window_rows(dimension)]
        speed_rows = [row for _, row in self.speed_rows(dimension)]
        speed_rows += [row for _, row in correction_partials(self.corrections, dimension, self.time_range)]
        return batch_rows, speed_rows

    def window_rows(self, dimension: str) -> list[tuple[str, datetime, Partial]]:
        """Every row of a dimension per window, with the layer it comes from."""
        rows = [("batch", start, row) for start, row in self.batch_window_rows(dimension)]
        rows += [("speed", start, row) for start, row in self.speed_rows(dimension)]
        rows += [
            ("speed", start, row)
            for start, row in correction_partials(self.corrections, dimension, self.time_range)
        ]
        return rows


def _aware(moment: datetime) -> datetime:
    """Cassandra's driver returns naive UTC datetimes."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def serving_views(session: Session, settings: Settings) -> ServingViews:
    """The merged views of the configured keyspace and speed job."""
    cassandra = settings.cassandra
    return ServingViews(session, cassandra.keyspace, settings.speed_layer.job_name, cassandra.concurrency)
