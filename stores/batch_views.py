"""The batch views in Cassandra: versions of per-window and all-time view rows, the current version and
its horizon, and the erasures the current version still counts. Every statement on these tables is here.

A recomputation writes a new version, then makes it current in one single-row write (a lightweight
transaction that fails when an erasure started meanwhile), so readers never see a half-written view;
older versions are deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session

from core.aggregates import DIMENSIONS
from stores.connections import execute_in_batches

VIEW_NAME = "profiles"
"""The row of ``batch_current`` the profile views use."""


def _aware(moment: datetime | None) -> datetime | None:
    """Cassandra's driver returns naive UTC datetimes."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@dataclass(frozen=True)
class BatchCurrent:
    """The batch view serving uses: its version, what it covers, and when it was computed."""

    version: int
    cutoff: datetime | None
    """The start of the window of the newest event the view covers (the boundary the dashboard shows)."""
    profiles: int
    computed_at: datetime | None
    speed_batch_id: int | None
    """The last speed-layer batch whose records the view covers: serving adds the speed layer's partials
    of later batches. None for a view computed without a speed layer (it covers the whole archive)."""
    horizon: Mapping[int, int]
    """The Kafka offsets (per partition) the view covers up to."""
    erasures_seen: int
    """The erasures (by sequence number) the view leaves out."""


@dataclass(frozen=True)
class ErasureCorrection:
    """What an erasure takes off the merged view while the current batch view still counts the subject."""

    seq: int
    speed_batch_id: int | None
    window_start: datetime
    age: int
    values: Mapping[str, str]


class BatchViewStore:
    """The batch view tables of one keyspace."""

    def __init__(self, session: Session, keyspace: str, concurrency: int, rows_per_batch: int = 5) -> None:
        self.session = session
        self.keyspace = keyspace
        self.concurrency = concurrency
        self.rows_per_batch = rows_per_batch
        ks = keyspace
        prepare = session.prepare
        self._insert_aggregate = prepare(
            f"INSERT INTO {ks}.batch_aggregates (version, dimension, value, profiles, age_sum, age_min, "
            "age_max, ages) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert_window_aggregate = prepare(
            f"INSERT INTO {ks}.batch_window_aggregates (version, dimension, window_start, value, window_end, "
            "profiles, age_sum, age_min, age_max, ages) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert_window = prepare(
            f"INSERT INTO {ks}.batch_windows (version, dimension, window_start) VALUES (?, ?, ?)"
        )
        self._current = prepare(
            "SELECT version, cutoff, profiles, computed_at, speed_batch_id, horizon, erasures_seen, "
            f"erasure_seq FROM {ks}.batch_current WHERE view_name = ?"
        )
        self._make_current = prepare(
            f"UPDATE {ks}.batch_current SET version = ?, cutoff = ?, profiles = ?, computed_at = ?, "
            "speed_batch_id = ?, horizon = ?, erasures_seen = ? WHERE view_name = ? IF erasure_seq = ?"
        )
        self._bump_erasures = prepare(
            f"UPDATE {ks}.batch_current SET erasure_seq = ? WHERE view_name = ? IF erasure_seq = ?"
        )
        self._totals = prepare(
            f"SELECT value, profiles, age_sum, age_min, age_max FROM {ks}.batch_aggregates "
            "WHERE version = ? AND dimension = ?"
        )
        self._totals_ages = prepare(
            f"SELECT value, ages FROM {ks}.batch_aggregates "
            "WHERE version = ? AND dimension = ? AND value IN ?"
        )
        self._window_starts = prepare(
            f"SELECT window_start FROM {ks}.batch_windows WHERE version = ? AND dimension = ? "
            "AND window_start >= ? AND window_start < ?"
        )
        self._window_rows = prepare(
            "SELECT window_start, value, profiles, age_sum, age_min, age_max "
            f"FROM {ks}.batch_window_aggregates WHERE version = ? AND dimension = ? AND window_start = ?"
        )
        self._window_ages = prepare(
            f"SELECT value, ages FROM {ks}.batch_window_aggregates "
            "WHERE version = ? AND dimension = ? AND window_start = ? AND value = ?"
        )
        self._insert_correction = prepare(
            f"INSERT INTO {ks}.erasure_corrections (view_name, seq, speed_batch_id, window_start, age, "
            "dimension_values) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._corrections = prepare(
            "SELECT seq, speed_batch_id, window_start, age, dimension_values "
            f"FROM {ks}.erasure_corrections WHERE view_name = ?"
        )
        self._delete_corrections = prepare(
            f"DELETE FROM {ks}.erasure_corrections WHERE view_name = ? AND seq <= ?"
        )

    def _execute_all(self, statement: Any, parameters: Sequence[Sequence[Any]]) -> None:
        execute_in_batches(self.session, statement, parameters, self.rows_per_batch, self.concurrency)

    # --- the current view ------------------------------------------------------------------------

    def current(self) -> BatchCurrent | None:
        """The current view, if one was ever made current."""
        row = self.session.execute(self._current, (VIEW_NAME,)).one()
        if row is None or row.version is None:
            return None
        return BatchCurrent(
            row.version,
            _aware(row.cutoff),
            row.profiles or 0,
            _aware(row.computed_at),
            row.speed_batch_id,
            dict(row.horizon or {}),
            row.erasures_seen or 0,
        )

    def erasure_seq(self) -> int:
        """How many erasures were ever started (the sequence number of the last one)."""
        row = self.session.execute(self._current, (VIEW_NAME,)).one()
        return row.erasure_seq or 0 if row is not None else 0

    def next_erasure_seq(self) -> int:
        """Take the next erasure sequence number (a lightweight transaction: concurrent erasures get
        different numbers, and a recomputation that started before cannot become current after)."""
        while True:
            seen = self.erasure_seq()
            row = self.session.execute(
                self._bump_erasures, (seen + 1, VIEW_NAME, seen if seen else None)
            ).one()
            if row.applied:
                return seen + 1

    def make_current(self, view: BatchCurrent, erasure_seq: int) -> bool:
        """Switch readers to ``view`` in one single-row write, unless an erasure started after
        ``erasure_seq`` was read (then the view may still count an erased subject: False)."""
        row = self.session.execute(
            self._make_current,
            (
                view.version,
                view.cutoff,
                view.profiles,
                view.computed_at,
                view.speed_batch_id,
                dict(view.horizon),
                view.erasures_seen,
                VIEW_NAME,
                erasure_seq if erasure_seq else None,
            ),
        ).one()
        return bool(row.applied)

    # --- writing a version -------------------------------------------------------------------------

    def write_version(
        self, version: int, totals: Sequence[Mapping[str, Any]], windows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Store a version's all-time and per-window rows (``core.aggregates`` view rows)."""
        self.write_windows(version, windows)
        self.write_totals(version, totals)

    def write_windows(self, version: int, windows: Sequence[Mapping[str, Any]]) -> None:
        """Store per-window rows of a version, and their windows in its index (rows of one window may be
        written in several calls: the index rows are the same, written again)."""
        self._execute_all(
            self._insert_window,
            sorted({(version, w["dimension"], w["window_start"]) for w in windows}),
        )
        self._execute_all(
            self._insert_window_aggregate,
            [
                (version, w["dimension"], w["window_start"], w["value"], w["window_end"], w["profiles"],
                 w["age_sum"], w["age_min"], w["age_max"], w["ages"])
                for w in windows
            ],
        )  # fmt: skip

    def write_totals(self, version: int, totals: Sequence[Mapping[str, Any]]) -> None:
        """Store the all-time rows of a version (one per dimension value)."""
        self._execute_all(
            self._insert_aggregate,
            [
                (version, t["dimension"], t["value"], t["profiles"], t["age_sum"], t["age_min"], t["age_max"],
                 t["ages"])
                for t in totals
            ],
        )  # fmt: skip

    def versions(self) -> set[int]:
        """Every version that still has rows (one partition per version and dimension)."""
        rows = self.session.execute(
            f"SELECT DISTINCT version, dimension FROM {self.keyspace}.batch_aggregates"
        )
        return {row.version for row in rows}

    def delete_version(self, version: int) -> None:
        """Remove a version's rows, partition by partition (found through the window index)."""
        for dimension in DIMENSIONS:
            windows = [
                row.window_start
                for row in self.session.execute(
                    f"SELECT window_start FROM {self.keyspace}.batch_windows "
                    "WHERE version = %s AND dimension = %s",
                    (version, dimension),
                )
            ]
            for window_start in windows:
                self.session.execute(
                    f"DELETE FROM {self.keyspace}.batch_window_aggregates "
                    "WHERE version = %s AND dimension = %s AND window_start = %s",
                    (version, dimension, window_start),
                )
            for table in ("batch_windows", "batch_aggregates"):
                self.session.execute(
                    f"DELETE FROM {self.keyspace}.{table} WHERE version = %s AND dimension = %s",
                    (version, dimension),
                )

    # --- reading a version (serving) ---------------------------------------------------------------

    def totals(self, version: int, dimension: str) -> list[Any]:
        """The all-time rows of a dimension: value, profiles, age_sum, age_min, age_max."""
        return list(self.session.execute(self._totals, (version, dimension)))

    def total_ages(self, version: int, dimension: str, values: Sequence[str]) -> dict[str, dict[int, int]]:
        """Profiles per age of some values, all time."""
        rows = self.session.execute(self._totals_ages, (version, dimension, list(values)))
        return {row.value: dict(row.ages or {}) for row in rows}

    def window_starts(self, version: int, dimension: str, start: datetime, end: datetime) -> list[datetime]:
        """The windows of a dimension in ``[start, end)`` that the version has rows for."""
        rows = self.session.execute(self._window_starts, (version, dimension, start, end))
        return [_aware(row.window_start) for row in rows]  # type: ignore[misc]

    def window_rows(self, version: int, dimension: str, window_starts: Sequence[datetime]) -> list[Any]:
        """The rows of some windows of a dimension (one partition per query, run concurrently)."""
        from cassandra.concurrent import execute_concurrent_with_args

        results = execute_concurrent_with_args(
            self.session,
            self._window_rows,
            [(version, dimension, start) for start in window_starts],
            concurrency=self.concurrency,
            raise_on_first_error=True,
        )
        return [row for _, result in results for row in result]

    def window_ages(self, version: int, dimension: str, window_start: datetime, value: str) -> dict[int, int]:
        """Profiles per age of one value in one window."""
        row = self.session.execute(self._window_ages, (version, dimension, window_start, value)).one()
        return dict(row.ages or {}) if row is not None else {}

    # --- erasure corrections -------------------------------------------------------------------------

    def add_correction(self, correction: ErasureCorrection) -> None:
        self.session.execute(
            self._insert_correction,
            (
                VIEW_NAME,
                correction.seq,
                correction.speed_batch_id,
                correction.window_start,
                correction.age,
                dict(correction.values),
            ),
        )

    def corrections(self) -> list[ErasureCorrection]:
        """The erasure corrections not yet absorbed by a current view (few: deleted once absorbed)."""
        return [
            ErasureCorrection(
                row.seq,
                row.speed_batch_id,
                _aware(row.window_start),
                row.age,
                dict(row.dimension_values or {}),
            )  # type: ignore[arg-type]
            for row in self.session.execute(self._corrections, (VIEW_NAME,))
        ]

    def delete_corrections_through(self, seq: int) -> None:
        """Forget the corrections of erasures up to ``seq`` (a current view leaves those subjects out)."""
        self.session.execute(self._delete_corrections, (VIEW_NAME, seq))
