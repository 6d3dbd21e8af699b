"""The speed layer's writes: batched calls to Cassandra and MongoDB, never one round trip per row.

Every write is idempotent for a given micro-batch id, so a batch replayed after a crash converges to
the same stored state: MongoDB documents are inserted once (by ``_id``), Cassandra rows are
keyed by what identifies them (uuid; dimension, window, value and batch id).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import UNSET_VALUE
from cassandra.util import Date as CassandraDate
from pymongo import ASCENDING, DESCENDING, ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from core.sealing import put_back
from core.settings import Settings
from core.stores import execute_in_batches
from core.versions import ATTRIBUTES, PartialKey, ProfileState, Sighting

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

PRODUCER_JOB = "producer"
"""The ``job`` of the producer's dead letters: kept in their own topic, here only once re-driven."""
DUPLICATE_KEY = 11000
"""MongoDB's error code for an ``_id`` (or unique key) that is already stored."""


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


class MongoRawStore:
    """Raw profile documents and dead letters in MongoDB (or any server of its wire protocol)."""

    def __init__(
        self,
        profiles: Collection,
        dead_letters: Collection,
        latest: Collection | None = None,
        latest_kept: int = 200,
        bulk_statements: int = 10,
    ) -> None:
        self.profiles = profiles
        self.dead_letters = dead_letters
        self.latest = latest
        """A small copy of the newest documents: FerretDB's SQLite backend sorts by reading every
        document (no index is used), so "the latest profiles" cannot be asked of the full collection."""
        self.latest_kept = latest_kept
        self.bulk_statements = bulk_statements

    def ensure_indexes(self) -> None:
        """Indexes for "latest profiles" and "profiles of a country" (idempotent), on a server that uses
        them. FerretDB's SQLite backend sorts and filters these queries without them (it scans), so
        they would only cost every insert: measured a quarter of FerretDB's insert rate."""
        if "ferretdbVersion" in self.profiles.database.client.admin.command("buildInfo"):
            return
        for collection in (self.profiles, self.latest):
            if collection is None:
                continue
            collection.create_index([("fetched_at", DESCENDING)], name="latest_profiles")
            collection.create_index(
                [("user.location.country", 1), ("fetched_at", DESCENDING)], name="by_country"
            )
        self.dead_letters.create_index([("stored_at", DESCENDING)], name="latest_dead_letters")

    def insert_profiles(self, documents: Sequence[Mapping[str, Any]]) -> None:
        """Insert the documents of profiles seen for the first time, once by ``_id`` (a replay changes
        nothing), and the newest of them into the latest-profiles copy."""
        _insert_once(self.profiles, documents)
        if self.latest is not None and documents:
            newest = sorted(documents, key=lambda document: document["fetched_at"], reverse=True)
            _insert_once(self.latest, newest[: self.latest_kept])

    def replace_profiles(self, documents: Sequence[Mapping[str, Any]]) -> None:
        """Store the documents of profiles whose latest copy changed, replacing what is stored (and
        their latest-profiles copy). Idempotent: the state says which copy is the latest.

        Sent ``bulk_statements`` at a time: FerretDB holds one SQLite connection per statement of a bulk
        until the command ends, and bulks that together need more than its pool (100) never get an
        answer (``MongoSettings.bulk_statements``).
        """
        replacements = [ReplaceOne({"_id": d["_id"]}, dict(d), upsert=True) for d in documents]
        for collection in (self.profiles, self.latest):
            for start in range(0, len(replacements), self.bulk_statements):
                if collection is not None:
                    collection.bulk_write(replacements[start : start + self.bulk_statements], ordered=False)

    def delete_profiles(self, uuids: Sequence[str]) -> None:
        """Delete the documents of profiles no longer counted (their latest copy is under age)."""
        if uuids:
            for collection in (self.profiles, self.latest):
                if collection is not None:
                    collection.delete_many({"_id": {"$in": list(uuids)}})

    def trim_latest(self) -> None:
        """Keep only the ``latest_kept`` newest documents in the latest-profiles copy."""
        if self.latest is None:
            return
        kept = [
            document["_id"]
            for document in self.latest.find({}, {"_id": 1})
            .sort("fetched_at", DESCENDING)
            .limit(self.latest_kept)
        ]
        self.latest.delete_many({"_id": {"$nin": kept}})

    def insert_dead_letters(self, letters: Sequence[Mapping[str, Any]], stored_at: datetime) -> None:
        """Insert each dead letter once, keyed by its Kafka coordinates. The hour it was stored is kept
        beside the moment: the counts over time group by it, and FerretDB's ``$group`` has no date
        operator to truncate a moment with."""
        stored_hour = stored_at.replace(minute=0, second=0, microsecond=0)
        _insert_once(
            self.dead_letters,
            [{**letter, "stored_at": stored_at, "stored_hour": stored_hour} for letter in letters],
        )

    def dead_letters_to_redrive(self, reason: str, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """The dead letters of ``reason`` (stored since ``since``) not re-driven yet, oldest first."""
        query: dict[str, Any] = {"reason": reason, "redriven": {"$exists": False}}
        if since is not None:
            query["stored_at"] = {"$gte": since}
        yield from self.dead_letters.find(query).sort("_id", ASCENDING)

    def mark_redriven(self, letter_id: str, redriven_at: datetime, published_as: str) -> None:
        """Record that a dead letter was published again (as ``topic:partition:offset``)."""
        self.dead_letters.update_one(
            {"_id": letter_id}, {"$set": {"redriven": {"at": redriven_at, "published_as": published_as}}}
        )

    def redriven_among(self, letter_ids: Sequence[str]) -> set[str]:
        """Those of ``letter_ids`` (Kafka coordinates) marked as re-driven."""
        found: set[str] = set()
        for start in range(0, len(letter_ids), 500):
            chunk = list(letter_ids[start : start + 500])
            query = {"_id": {"$in": chunk}, "redriven": {"$exists": True}}
            found |= {document["_id"] for document in self.dead_letters.find(query, {"_id": 1})}
        return found

    def mark_producer_redriven(
        self, letter_id: str, key: str | None, reason: str, redriven_at: datetime, published_as: str
    ) -> None:
        """Record that one of the producer's dead letters (kept in its topic, which cannot be marked) was
        published again: a document with its coordinates and the mark, and no value. ``stored_at`` is
        when it was marked (retention keeps it longer than the topic keeps the letter, by default)."""
        topic, partition, offset = letter_id.rsplit(":", 2)
        marker = {
            "job": PRODUCER_JOB, "topic": topic, "partition": int(partition), "offset": int(offset),
            "key": key, "reason": reason, "stored_at": redriven_at,
            "stored_hour": redriven_at.replace(minute=0, second=0, microsecond=0),
            "redriven": {"at": redriven_at, "published_as": published_as},
        }  # fmt: skip
        self.dead_letters.update_one({"_id": letter_id}, {"$set": marker}, upsert=True)

    def set_dead_letter_reason(self, letter_id: str, reason: str, revalidated_at: datetime) -> None:
        """Give a dead letter the reason today's validation gives it."""
        self.dead_letters.update_one(
            {"_id": letter_id}, {"$set": {"reason": reason, "revalidated_at": revalidated_at}}
        )

    def delete_dead_letters(self, letter_ids: Sequence[str]) -> None:
        if letter_ids:
            self.dead_letters.delete_many({"_id": {"$in": list(letter_ids)}})


def raw_document(row: Mapping[str, Any], ingested_at: datetime) -> dict[str, Any]:
    """The MongoDB document of a usable record: the user as received, with its sealed identifiers put
    back from the text Spark opened (``identifiers_text``: nothing is decrypted in Python), its
    envelope fields and Kafka coordinates.

    The user is read from the record's own JSON, not from Spark's parsed struct: the raw document keeps
    every field with the type it was received with (a numeric postcode stays a number), which the
    struct, typed by the read schema, would not.
    """
    envelope = json.loads(bytes(row["raw_value"]))
    user = envelope["user"]
    if envelope.get("sealed"):
        user = put_back(user, json.loads(row["identifiers_text"]))
    return {
        "_id": row["uuid"],
        "user": user,
        "source": envelope["source"],
        "fetched_at": row["fetched_at"],
        "kafka": {"topic": row["topic"], "partition": row["partition"], "offset": row["offset"]},
        "ingested_at": ingested_at,
    }


def dead_letter_document(row: Mapping[str, Any], job: str) -> dict[str, Any]:
    """The dead-letter document of a bad record: raw bytes, Kafka coordinates, reason, and the job (layer)
    that met it first (``_id`` is the record's coordinates: the other layer's insert changes nothing)."""
    return {
        "_id": f"{row['topic']}:{row['partition']}:{row['offset']}",
        "job": job,
        "topic": row["topic"],
        "partition": row["partition"],
        "offset": row["offset"],
        "kafka_timestamp": row["kafka_timestamp"],
        "key": row["kafka_key"],
        "raw_value": bytes(row["raw_value"]) if row["raw_value"] is not None else None,
        "reason": row["dead_letter_reason"],
    }


def _insert_once(collection: Collection, documents: Sequence[Mapping[str, Any]]) -> None:
    """Insert documents whose ``_id`` is not stored yet; those already stored are left as they are.

    An unordered ``insert_many`` that ignores duplicate-key errors: on MongoDB and FerretDB alike it is
    one round trip per batch, and far cheaper than upserts on FerretDB's SQLite backend.
    """
    if not documents:
        return
    try:
        collection.insert_many([dict(document) for document in documents], ordered=False)
    except BulkWriteError as error:
        other_errors = [e for e in error.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        if other_errors or error.details.get("writeConcernErrors"):
            raise


def mongo_raw_store(database: Database, settings: Settings) -> MongoRawStore:
    """The raw-document store of the configured collections."""
    mongo = settings.mongo
    return MongoRawStore(
        database[mongo.raw_profiles_collection],
        database[mongo.dead_letters_collection],
        database[mongo.latest_profiles_collection],
        mongo.latest_profiles_kept,
        mongo.bulk_statements,
    )
