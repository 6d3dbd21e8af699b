"""The speed layer's tables in Cassandra: profile states, window partials, micro-batch metrics and
progress. Every statement on these tables is here; batched calls, never one round trip per row.

Every write is idempotent for a given micro-batch id, so a batch replayed after a crash converges to
the same stored state: rows are keyed by what identifies them (uuid; dimension, window, value and
batch id).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import UNSET_VALUE
from cassandra.util import Date as CassandraDate

from core.settings import RetentionSettings
from core.versions import ATTRIBUTES, PartialKey, ProfileState, Sighting
from stores.cassandra_schema import (
    CASSANDRA_TABLES,
    current_ttls,
    delete_rows_older_than,
    set_table_ttls,
    table_ttls,
)
from stores.connections import execute_in_batches
from stores.personal_data import StoreRetention, cutoff_instant

PROFILE_COLUMNS: tuple[str, ...] = (
    "uuid", "first_fetched_at", "first_partition", "first_offset", "fetched_at", "kafka_partition",
    "kafka_offset", "counted", *ATTRIBUTES, "last_batch_id", "previous",
)  # fmt: skip
"""Columns of the Cassandra ``profiles`` table: the state of each uuid (``core.versions``), pseudonyms
only, no plaintext identifier."""

PARTIAL_COLUMNS: tuple[str, ...] = (
    "dimension", "window_start", "value", "batch_id", "task", "window_end",
    "profiles", "age_sum", "added_min", "added_max", "removals", "ages",
)  # fmt: skip
"""Columns of ``speed_partials``: what one task of one micro-batch changed in a value's window."""

PARTIALS_PER_BATCH = 2
"""Partial rows per unlogged batch: with its age map a row is up to ~1.6 KB, and five of them passed
Cassandra's 5 KiB batch warning on every micro-batch."""

BATCH_METRIC_COLUMNS: tuple[str, ...] = (
    "job", "batch_id", "processed_at", "input_rows", "new_profiles", "duplicates", "dead_lettered",
    "under_age", "late_rows_dropped", "duration_ms", "max_event_time", "end_offsets", "windows",
)  # fmt: skip
"""Columns of ``stream_batches`` written by the batch itself (rate and lag come from the progress)."""

LOOKUP_CHUNK = 100
"""uuids per ``IN`` lookup of stored states."""


@dataclass(frozen=True)
class StoredState:
    """A uuid's row of ``profiles``: its state, the batch that last changed it, and the state before."""

    state: ProfileState
    last_batch_id: int | None
    previous: ProfileState | None

    def base_for(self, batch_id: int) -> ProfileState | None:
        """The state batch ``batch_id`` starts from: the one before it when it already ran (a replay)."""
        return self.previous if self.last_batch_id == batch_id else self.state


def state_row(
    uuid: str, state: ProfileState, batch_id: int, previous: ProfileState | None
) -> tuple[Any, ...]:
    """The ``profiles`` row (``PROFILE_COLUMNS``) of a uuid's state.

    A uuid seen for the first time has no stored row: its empty columns are left unset rather than
    written as null, since Cassandra stores a written null as a tombstone that every later scan of the
    table reads (a row of a known uuid keeps its nulls: they clear what an older version stored).
    """
    attributes = state.attributes
    row = (
        uuid, state.first.fetched_at, state.first.partition, state.first.offset, state.latest.fetched_at,
        state.latest.partition, state.latest.offset, state.counted,
        *(attributes.get(name) for name in ATTRIBUTES), batch_id,
        previous.to_json() if previous is not None else None,
    )  # fmt: skip
    if previous is None:
        return tuple(UNSET_VALUE if value is None else value for value in row)
    return row


def _stored_state(row: Any) -> StoredState:
    first_at = row.first_fetched_at or row.fetched_at  # rows written before the rule: first = latest
    latest = Sighting(_aware(row.fetched_at), row.kafka_partition, row.kafka_offset)
    first = Sighting(
        _aware(first_at),
        row.first_partition if row.first_partition is not None else row.kafka_partition,
        row.first_offset if row.first_offset is not None else row.kafka_offset,
    )
    counted = row.counted if row.counted is not None else True
    attributes = {name: _python_value(getattr(row, name)) for name in ATTRIBUTES} if counted else {}
    previous = ProfileState.from_json(row.previous) if row.previous else None
    return StoredState(ProfileState(first, latest, attributes, counted), row.last_batch_id, previous)


def _python_value(value: Any) -> Any:
    """A column value as the transformations give it (the driver reads a CQL date as its own type)."""
    return value.date() if isinstance(value, CassandraDate) else value


def _aware(moment: datetime) -> datetime:
    """Cassandra's driver returns naive UTC datetimes."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _aware_value(value: Any) -> Any:
    """Cassandra's driver returns naive UTC timestamps; every reader gets aware ones."""
    return _aware(value) if isinstance(value, datetime) else value


def partial_row(
    key: PartialKey, ages: Counter[int], batch_id: int, task: int, window_seconds: int
) -> tuple[Any, ...]:
    """The ``speed_partials`` row (``PARTIAL_COLUMNS``) of one (dimension, window, value)'s age counts."""
    dimension, window_start, value = key
    added = [age for age, count in ages.items() if count > 0]
    return (
        dimension, window_start, value, batch_id, task, window_start + timedelta(seconds=window_seconds),
        sum(ages.values()), sum(age * count for age, count in ages.items()), min(added, default=None),
        max(added, default=None), -sum(count for count in ages.values() if count < 0),
        {age: count for age, count in ages.items() if count},
    )  # fmt: skip


@dataclass(frozen=True)
class SpeedProgress:
    """The speed layer's latest micro-batch, as its metrics row tells."""

    processed_at: datetime
    max_event_time: datetime | None
    kafka_lag: int | None
    """Records waiting in the topic after that batch (all partitions), if the job could tell."""
    late_rows_dropped: int


@dataclass(frozen=True)
class StreamBatch:
    """One micro-batch of the speed layer, as its ``stream_batches`` row tells."""

    batch_id: int
    processed_at: datetime
    input_rows: int
    new_profiles: int
    duplicates: int
    dead_lettered: int
    under_age: int
    duration_ms: int
    rows_per_s: float | None
    """Spark's input rate of the batch (None until its progress is recorded)."""
    kafka_lag: int | None
    """Records left in the topic after it (all partitions), if known."""


RECENT_BATCH_COLUMNS = (
    "batch_id", "processed_at", "input_rows", "new_profiles", "duplicates", "dead_lettered", "under_age",
    "duration_ms", "rows_per_s", "kafka_lag",
)  # fmt: skip


class CassandraSpeedStore:
    """The speed layer's Cassandra tables in one keyspace, with prepared statements: the writes of the
    micro-batches, and the reads of serving and the batch layer."""

    def __init__(self, session: Session, keyspace: str, concurrency: int, rows_per_batch: int = 5) -> None:
        self.session = session
        self.keyspace = keyspace
        self.concurrency = concurrency
        self.rows_per_batch = rows_per_batch
        self._states = session.prepare(
            f"SELECT {', '.join(PROFILE_COLUMNS)} FROM {keyspace}.profiles WHERE uuid IN ?"
        )
        self._insert_profile = self._insert("profiles", PROFILE_COLUMNS)
        self._profile_row = session.prepare(f"SELECT * FROM {keyspace}.profiles WHERE uuid = ?")
        self._uuids_by_email = session.prepare(
            f"SELECT uuid FROM {keyspace}.profiles WHERE email_pseudonym = ?"
        )
        self._delete_profile = session.prepare(f"DELETE FROM {keyspace}.profiles WHERE uuid = ?")
        self._insert_partial = self._insert("speed_partials", PARTIAL_COLUMNS)
        self._insert_window = self._insert("speed_windows", ("dimension", "window_start"))
        self._insert_metrics = self._insert("stream_batches", BATCH_METRIC_COLUMNS)
        self._end_offsets = session.prepare(
            f"SELECT end_offsets FROM {keyspace}.stream_batches WHERE job = ? AND batch_id < ? LIMIT 1"
        )
        self._update_progress = session.prepare(
            f"UPDATE {keyspace}.stream_batches SET rows_per_s = ?, kafka_lag = ? "
            "WHERE job = ? AND batch_id = ?"
        )
        self._progress = session.prepare(
            "SELECT processed_at, max_event_time, kafka_lag, late_rows_dropped "
            f"FROM {keyspace}.stream_batches WHERE job = ? LIMIT 1"
        )
        self._recent = session.prepare(
            f"SELECT {', '.join(RECENT_BATCH_COLUMNS)} FROM {keyspace}.stream_batches WHERE job = ? LIMIT ?"
        )
        self._windows_after = session.prepare(
            f"SELECT windows FROM {keyspace}.stream_batches WHERE job = ? AND batch_id > ?"
        )
        self._window_starts = session.prepare(
            f"SELECT window_start FROM {keyspace}.speed_windows WHERE dimension = ? "
            "AND window_start >= ? AND window_start < ?"
        )
        self._last_window = session.prepare(
            f"SELECT window_start FROM {keyspace}.speed_windows WHERE dimension = ? LIMIT 1"
        )
        # Cassandra sums a window's partials itself (GROUP BY a primary-key prefix): one row per value
        # reaches Python instead of one per micro-batch and task. One partition per query.
        self._partial_sums = session.prepare(
            "SELECT value, SUM(profiles) AS profiles, SUM(age_sum) AS age_sum, MIN(added_min) AS added_min, "
            f"MAX(added_max) AS added_max, SUM(removals) AS removals FROM {keyspace}.speed_partials "
            "WHERE dimension = ? AND window_start = ? AND batch_id > ? "
            "GROUP BY dimension, window_start, value ALLOW FILTERING"
        )
        self._partial_ages = session.prepare(
            f"SELECT ages FROM {keyspace}.speed_partials WHERE dimension = ? AND window_start = ? "
            "AND value = ? AND batch_id > ?"
        )

    def _insert(self, table: str, columns: Sequence[str]) -> Any:
        placeholders = ", ".join("?" for _ in columns)
        return self.session.prepare(
            f"INSERT INTO {self.keyspace}.{table} ({', '.join(columns)}) VALUES ({placeholders})"
        )

    def _execute_all(self, statement: Any, parameters: Iterable[Sequence[Any]]) -> None:
        """Run one prepared statement for many rows, in concurrent batches; the first failure raises."""
        execute_in_batches(self.session, statement, parameters, self.rows_per_batch, self.concurrency)

    def states(self, uuids: Sequence[str]) -> dict[str, StoredState]:
        """The stored state of those of ``uuids`` that have one.

        Asked ``LOOKUP_CHUNK`` uuids at a time (``IN`` on the partition key), concurrently: one request
        per uuid would make the lookup the slowest step of a batch.
        """
        distinct = sorted(set(uuids))
        chunks = [distinct[i : i + LOOKUP_CHUNK] for i in range(0, len(distinct), LOOKUP_CHUNK)]
        results = execute_concurrent_with_args(
            self.session, self._states, [(chunk,) for chunk in chunks],
            concurrency=self.concurrency, raise_on_first_error=True,
        )  # fmt: skip
        return {row.uuid: _stored_state(row) for _, result in results for row in result}

    def profile_row(self, uuid: str) -> dict[str, Any] | None:
        """The whole ``profiles`` row of ``uuid`` (by partition key), timestamps aware, or None."""
        row = self.session.execute(self._profile_row, (uuid,)).one()
        return None if row is None else {name: _aware_value(value) for name, value in row._asdict().items()}

    def uuids_with_email_pseudonym(self, email_pseudonym: str) -> set[str]:
        """The uuids of the profiles with this e-mail pseudonym (a storage-attached index)."""
        return {row.uuid for row in self.session.execute(self._uuids_by_email, (email_pseudonym,))}

    def erase(self, uuid: str) -> dict[str, int]:
        """Delete the subject's pseudonymized ``profiles`` row (``PersonalDataStore``). Its contribution
        to the windows is not a row of its own: erasure corrects the merged view for it."""
        existed = self.session.execute(self._profile_row, (uuid,)).one() is not None
        self.session.execute(self._delete_profile, (uuid,))
        return {"Cassandra profiles": int(existed)}

    def expire(self, retention: RetentionSettings, now: datetime) -> list[StoreRetention]:
        """Set each table's default TTL from ``retention``, then delete the rows already past it (rows
        written before a TTL change keep their old one) (``PersonalDataStore``)."""
        ttls = table_ttls(retention)
        altered = set(set_table_ttls(self.session, self.keyspace, ttls))
        present = current_ttls(self.session, self.keyspace)
        results = []
        for table in CASSANDRA_TABLES:
            if table.name not in present:
                continue
            cutoff = cutoff_instant(now, getattr(retention, table.days_setting))
            removed = delete_rows_older_than(self.session, self.keyspace, table, cutoff)
            note = f"default TTL {'set to' if table.name in altered else 'is'} {ttls[table.name]} s"
            store = f"cassandra {self.keyspace}.{table.name}"
            results.append(StoreRetention(store, cutoff.isoformat(), removed, "rows", note))
        return results

    def write_states(self, rows: Sequence[Sequence[Any]]) -> None:
        """Store states (rows of ``state_row``)."""
        self._execute_all(self._insert_profile, rows)

    def write_partials(self, rows: Sequence[Sequence[Any]]) -> None:
        """Store partials (rows of ``partial_row``) and index their windows (first: readers find no gap)."""
        self._execute_all(self._insert_window, {(row[0], row[1]) for row in rows})
        execute_in_batches(self.session, self._insert_partial, rows, PARTIALS_PER_BATCH, self.concurrency)

    def end_offsets_before(self, job: str, batch_id: int) -> dict[int, int]:
        """The Kafka offsets after the job's last batch before ``batch_id`` (none before its first)."""
        row = self.session.execute(self._end_offsets, (job, batch_id)).one()
        return dict(row.end_offsets or {}) if row else {}

    def batch_end_offsets(self, job: str) -> Iterator[tuple[int, dict[int, int]]]:
        """Each batch of ``job`` with the Kafka offsets after it, newest first (paged)."""
        rows = self.session.execute(
            f"SELECT batch_id, end_offsets FROM {self.keyspace}.stream_batches WHERE job = %s", (job,)
        )
        for row in rows:
            if row.end_offsets is not None:
                yield row.batch_id, dict(row.end_offsets)

    def write_batch_metrics(self, metrics: Mapping[str, Any]) -> None:
        self.session.execute(self._insert_metrics, [metrics[c] for c in BATCH_METRIC_COLUMNS])

    def write_batch_progress(
        self, job: str, batch_id: int, rows_per_s: float, kafka_lag: dict[int, int]
    ) -> None:
        self.session.execute(self._update_progress, (rows_per_s, kafka_lag, job, batch_id))

    # --- reads ------------------------------------------------------------------------------------

    def progress(self, job: str) -> SpeedProgress | None:
        """The job's latest micro-batch."""
        row = self.session.execute(self._progress, (job,)).one()
        if row is None:
            return None
        lag = sum(row.kafka_lag.values()) if row.kafka_lag else None
        return SpeedProgress(
            _aware(row.processed_at),
            _aware(row.max_event_time) if row.max_event_time else None,
            lag,
            row.late_rows_dropped or 0,
        )

    def recent_batches(self, job: str, limit: int) -> list[StreamBatch]:
        """The job's ``limit`` latest micro-batches, newest first (one partition, clustered by batch)."""
        return [
            StreamBatch(
                row.batch_id,
                _aware(row.processed_at),
                row.input_rows or 0,
                row.new_profiles or 0,
                row.duplicates or 0,
                row.dead_lettered or 0,
                row.under_age or 0,
                row.duration_ms or 0,
                row.rows_per_s,
                sum(row.kafka_lag.values()) if row.kafka_lag else None,
            )
            for row in self.session.execute(self._recent, (job, limit))
        ]

    def last_window(self, dimension: str) -> datetime | None:
        """The newest window with partials of ``dimension``."""
        row = self.session.execute(self._last_window, (dimension,)).one()
        return _aware(row.window_start) if row else None

    def window_starts(self, dimension: str, start: datetime, end: datetime) -> list[datetime]:
        """The windows in ``[start, end)`` with partials of ``dimension``, newest first."""
        rows = self.session.execute(self._window_starts, (dimension, start, end))
        return [_aware(row.window_start) for row in rows]

    def windows_after(self, job: str, batch_id: int) -> set[datetime]:
        """The windows the partials of the job's batches after ``batch_id`` touched."""
        rows = self.session.execute(self._windows_after, (job, batch_id))
        return {_aware(window) for row in rows for window in row.windows or ()}

    def partial_sums(
        self, dimension: str, window_starts: Sequence[datetime], after_batch: int
    ) -> list[tuple[datetime, Any]]:
        """Per window and value, the partials of batches after ``after_batch`` summed: ``value``,
        ``profiles``, ``age_sum``, ``added_min``, ``added_max``, ``removals``."""
        results = execute_concurrent_with_args(
            self.session,
            self._partial_sums,
            [(dimension, start, after_batch) for start in window_starts],
            concurrency=self.concurrency,
            raise_on_first_error=True,
        )
        return [
            (start, row)
            for start, (_, result) in zip(window_starts, results, strict=True)
            for row in result
            if row.value is not None
        ]

    def partial_ages(
        self, dimension: str, window_start: datetime, value: str, after_batch: int
    ) -> Counter[int]:
        """Profiles per age a value gained (negative: lost) in a window in batches after ``after_batch``."""
        ages: Counter[int] = Counter()
        for row in self.session.execute(self._partial_ages, (dimension, window_start, value, after_batch)):
            ages.update(row.ages or {})
        return ages
