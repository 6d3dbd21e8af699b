"""The merged Lambda view: batch views up to the batch cutoff plus speed windows from the cutoff on.

The batch layer's current version is complete for every window that starts before its cutoff (a window
boundary); the speed layer stores per-micro-batch partial aggregates per window. So for any dimension

    merged = batch rows of windows < cutoff  +  speed partials of windows >= cutoff

and no window is counted by both sides or by neither. With no batch view yet, the cutoff is "the
beginning of time" and the answer is the speed view alone. Averages are ``age_sum / profiles`` of the
merged sums, never averages of averages.

A query reads the current batch version once and uses it throughout; if a recomputation switched the
version (and so may have deleted the one being read) before the query finished, the query starts again.
Every read names its partitions (dimension, window, version): nothing here scans a table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import PreparedStatement

from core.aggregates import DIMENSIONS

logger = logging.getLogger(__name__)

VIEW_NAME = "profiles"
"""The row of ``batch_current`` the batch layer keeps (see ``batch_layer.recompute``)."""

TOTAL_DIMENSION = "age_band"
"""Every stored profile has an age, so this dimension's values sum to all profiles of a window."""

MAX_VERSION_RETRIES = 3
"""Restarts of a query that raced a batch-version switch before it gives up and says so."""

IN_CHUNK = 100
"""Window starts per ``IN`` query: large enough to be few queries, small enough for the coordinator."""


class ViewChangedError(RuntimeError):
    """The batch version switched during every attempt of a query (a recomputation loop gone wild)."""


@dataclass(frozen=True)
class Partial:
    """One additive aggregate row: a batch row, or one speed micro-batch's partial."""

    value: str
    profiles: int
    age_sum: int
    age_min: int | None
    age_max: int | None


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

    @property
    def average_age(self) -> float | None:
        return self.age_sum / self.profiles if self.profiles else None


@dataclass(frozen=True)
class BatchCurrent:
    """The batch view serving uses: its version, cutoff and when it was computed."""

    version: int
    cutoff: datetime | None
    profiles: int
    computed_at: datetime | None


@dataclass(frozen=True)
class SpeedProgress:
    """The speed layer's latest micro-batch, as its metrics row tells."""

    processed_at: datetime
    max_event_time: datetime | None
    kafka_lag: int | None
    """Records waiting in the topic after that batch (all partitions), if the job could tell."""
    late_rows_dropped: int


@dataclass(frozen=True)
class Freshness:
    """How fresh an answer is: where the batch view ends and how far the speed side has got."""

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
    """Profiles of one event-time window (of one dimension value, or all), and the layer that gave it."""

    window_start: datetime
    profiles: int
    layer: str
    """``batch`` for windows before the cutoff, ``speed`` from it on."""


@dataclass(frozen=True)
class TimeRange:
    """Windows whose start is in ``[start, end)``; ``None`` leaves a side open."""

    start: datetime | None = None
    end: datetime | None = None

    @property
    def is_all_time(self) -> bool:
        return self.start is None and self.end is None


ALL_TIME = TimeRange()
"""Every window, whenever it started."""


@dataclass
class _Split:
    """Which windows each layer answers for, given the cutoff and a time range."""

    batch_from: datetime | None
    batch_until: datetime | None
    """Exclusive; ``None`` means the batch side answers nothing."""
    speed_from: datetime | None
    speed_until: datetime | None
    batch_all_time: bool = field(default=False)
    """The batch side's all-time rows can be used as they are (no range narrows them)."""


def split_at_cutoff(cutoff: datetime | None, has_batch: bool, time_range: TimeRange) -> _Split:
    """Batch answers windows in ``[start, min(end, cutoff))``, speed in ``[max(start, cutoff), end)``.

    Without a batch view (or with an empty one) the speed side answers every window.
    """
    if not has_batch or cutoff is None:
        return _Split(None, None, time_range.start, time_range.end)
    batch_until = cutoff if time_range.end is None else min(cutoff, time_range.end)
    speed_from = cutoff if time_range.start is None else max(cutoff, time_range.start)
    batch_is_empty = time_range.start is not None and time_range.start >= batch_until
    return _Split(
        batch_from=time_range.start,
        batch_until=None if batch_is_empty else batch_until,
        speed_from=speed_from,
        speed_until=time_range.end,
        batch_all_time=time_range.start is None and batch_until == cutoff,
    )


def merge_partials(batch_rows: Iterable[Partial], speed_rows: Iterable[Partial]) -> list[ValueFigures]:
    """Sum the batch rows and speed partials of each value; largest count first, then by value. Values
    left with no profile (every one of them erased) are left out."""
    merged: dict[str, dict[str, Any]] = {}

    def add(row: Partial, layer: str) -> None:
        figures = merged.setdefault(
            row.value,
            {"profiles": 0, "age_sum": 0, "age_min": None, "age_max": None, "batch": 0, "speed": 0},
        )
        figures["profiles"] += row.profiles
        figures["age_sum"] += row.age_sum
        figures[layer] += row.profiles
        if row.age_min is not None:
            figures["age_min"] = (
                row.age_min if figures["age_min"] is None else min(figures["age_min"], row.age_min)
            )
        if row.age_max is not None:
            figures["age_max"] = (
                row.age_max if figures["age_max"] is None else max(figures["age_max"], row.age_max)
            )

    for row in batch_rows:
        add(row, "batch")
    for row in speed_rows:
        add(row, "speed")
    values = [
        ValueFigures(value, f["profiles"], f["age_sum"], f["age_min"], f["age_max"], f["batch"], f["speed"])
        for value, f in merged.items()
        if f["profiles"] > 0  # erasure corrections (negative partials) may leave a value with nobody
    ]
    return sorted(values, key=lambda v: (-v.profiles, v.value))


def _partial(row: Any) -> Partial:
    return Partial(row.value, row.profiles or 0, row.age_sum or 0, row.age_min, row.age_max)


def _aware(moment: datetime | None) -> datetime | None:
    """Cassandra's driver returns naive UTC datetimes."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class ServingViews:
    """Read side of both layers' Cassandra views: merged breakdowns, timelines and freshness."""

    def __init__(self, session: Session, keyspace: str, speed_job: str, concurrency: int = 32) -> None:
        self.session = session
        self.speed_job = speed_job
        self.concurrency = concurrency
        ks = keyspace
        prepare = session.prepare
        self._current = prepare(
            f"SELECT version, cutoff, profiles, computed_at FROM {ks}.batch_current WHERE view_name = ?"
        )
        self._batch_totals = prepare(
            f"SELECT value, profiles, age_sum, age_min, age_max FROM {ks}.batch_aggregates "
            "WHERE version = ? AND dimension = ?"
        )
        self._batch_window_starts = prepare(
            f"SELECT window_start FROM {ks}.batch_windows WHERE version = ? AND dimension = ? "
            "AND window_start >= ? AND window_start < ?"
        )
        self._batch_windows = prepare(
            "SELECT window_start, value, profiles, age_sum, age_min, age_max "
            f"FROM {ks}.batch_window_aggregates "
            "WHERE version = ? AND dimension = ? AND window_start IN ?"
        )
        self._speed_window_starts = prepare(
            f"SELECT window_start FROM {ks}.speed_windows WHERE dimension = ? "
            "AND window_start >= ? AND window_start < ?"
        )
        self._last_speed_window = prepare(
            f"SELECT window_start FROM {ks}.speed_windows WHERE dimension = ? LIMIT 1"
        )
        # Cassandra sums a window's micro-batch partials itself (GROUP BY a primary-key prefix): one row
        # per value and window reaches Python instead of one per micro-batch.
        self._speed_windows = prepare(
            "SELECT window_start, value, SUM(profiles) AS profiles, SUM(age_sum) AS age_sum, "
            f"MIN(age_min) AS age_min, MAX(age_max) AS age_max FROM {ks}.speed_aggregates "
            "WHERE dimension = ? AND window_start IN ? GROUP BY dimension, window_start, value"
        )
        self._speed_progress = prepare(
            f"SELECT processed_at, max_event_time, kafka_lag, late_rows_dropped FROM {ks}.stream_batches "
            "WHERE job = ? LIMIT 1"
        )

    # --- single reads -------------------------------------------------------------------------

    def batch_current(self) -> BatchCurrent | None:
        row = self.session.execute(self._current, (VIEW_NAME,)).one()
        if row is None:
            return None
        return BatchCurrent(row.version, _aware(row.cutoff), row.profiles or 0, _aware(row.computed_at))

    def speed_progress(self) -> SpeedProgress | None:
        row = self.session.execute(self._speed_progress, (self.speed_job,)).one()
        if row is None:
            return None
        lag = sum(row.kafka_lag.values()) if row.kafka_lag else None
        return SpeedProgress(
            _aware(row.processed_at), _aware(row.max_event_time), lag, row.late_rows_dropped or 0
        )

    def last_speed_window(self) -> datetime | None:
        row = self.session.execute(self._last_speed_window, (TOTAL_DIMENSION,)).one()
        return _aware(row.window_start) if row else None

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
            views = []
            for dimension in dimensions:
                batch_rows, speed_rows = self._rows(dimension, batch, time_range)
                views.append(DimensionView(dimension, merge_partials(batch_rows, speed_rows), freshness))
            return views

        return self._consistently(read)

    def timeline(
        self, time_range: TimeRange, dimension: str = TOTAL_DIMENSION, value: str | None = None
    ) -> list[WindowCount]:
        """Profiles per window in ``time_range`` (of one dimension value, or all), oldest first."""

        def read(batch: BatchCurrent | None) -> list[WindowCount]:
            split = split_at_cutoff(batch.cutoff if batch else None, batch is not None, time_range)
            counts: dict[datetime, int] = {}
            layers: dict[datetime, str] = {}
            if batch is not None and split.batch_until is not None:
                for row in self._batch_window_rows(
                    batch.version, dimension, split.batch_from, split.batch_until
                ):
                    if value is None or row.value == value:
                        start = _aware(row.window_start)
                        counts[start] = counts.get(start, 0) + (row.profiles or 0)
                        layers[start] = "batch"
            for row in self._speed_window_rows(dimension, split.speed_from, split.speed_until):
                if value is None or row.value == value:
                    start = _aware(row.window_start)
                    counts[start] = counts.get(start, 0) + (row.profiles or 0)
                    layers[start] = "speed"
            return [WindowCount(start, counts[start], layers[start]) for start in sorted(counts)]

        return self._consistently(read)

    # --- internals ----------------------------------------------------------------------------

    def _consistently(self, read: Any) -> Any:
        """Run ``read`` against the current batch version; again if the version switched meanwhile."""
        for _attempt in range(MAX_VERSION_RETRIES):
            batch = self.batch_current()
            answer = read(batch)
            after = self.batch_current()
            if (batch.version if batch else None) == (after.version if after else None):
                return answer
            logger.info("batch version switched during a query (%s -> %s): reading again", batch, after)
        raise ViewChangedError(f"the batch view changed during each of {MAX_VERSION_RETRIES} attempts")

    def _rows(
        self, dimension: str, batch: BatchCurrent | None, time_range: TimeRange
    ) -> tuple[list[Partial], list[Partial]]:
        split = split_at_cutoff(batch.cutoff if batch else None, batch is not None, time_range)
        batch_rows: list[Partial] = []
        if batch is not None and split.batch_until is not None:
            if split.batch_all_time:
                batch_rows = [
                    _partial(r) for r in self.session.execute(self._batch_totals, (batch.version, dimension))
                ]
            else:
                batch_rows = [
                    _partial(r)
                    for r in self._batch_window_rows(
                        batch.version, dimension, split.batch_from, split.batch_until
                    )
                ]
        speed_rows = [
            _partial(r) for r in self._speed_window_rows(dimension, split.speed_from, split.speed_until)
        ]
        return batch_rows, speed_rows

    def _batch_window_rows(
        self, version: int, dimension: str, start: datetime | None, end: datetime
    ) -> list[Any]:
        starts = [
            r.window_start
            for r in self.session.execute(
                self._batch_window_starts, (version, dimension, start or datetime.fromtimestamp(0, UTC), end)
            )
        ]
        return self._in_chunks(self._batch_windows, (version, dimension), starts)

    def _speed_window_rows(self, dimension: str, start: datetime | None, end: datetime | None) -> list[Any]:
        if start is not None and end is not None and start >= end:
            return []
        far_future = datetime(9999, 1, 1, tzinfo=UTC)
        starts = [
            r.window_start
            for r in self.session.execute(
                self._speed_window_starts,
                (dimension, start or datetime.fromtimestamp(0, UTC), end or far_future),
            )
        ]
        return self._in_chunks(self._speed_windows, (dimension,), starts)

    def _in_chunks(self, statement: PreparedStatement, key: tuple[Any, ...], starts: list[Any]) -> list[Any]:
        """Rows of the given window partitions, read concurrently in ``IN`` chunks."""
        if not starts:
            return []
        parameters = [(*key, chunk) for chunk in _chunks(starts)]
        rows: list[Any] = []
        for _success, result in execute_concurrent_with_args(
            self.session, statement, parameters, concurrency=self.concurrency, raise_on_first_error=True
        ):
            rows.extend(result)
        return rows
