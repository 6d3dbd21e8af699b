"""The speed layer's writes: batched calls to Cassandra and MongoDB, never one round trip per row.

Every write is idempotent for a given micro-batch id, so a batch replayed after a crash converges to
the same stored state: MongoDB documents are inserted once (by ``_id``), Cassandra rows are
keyed by what identifies them (uuid; dimension, window, value and batch id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from pymongo import DESCENDING, ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from core.settings import Settings
from core.stores import execute_in_batches

PROFILE_COLUMNS: tuple[str, ...] = (
    "uuid", "first_batch_id", "fetched_at", "source", "gender", "country", "nationality", "email_domain",
    "age", "age_band", "registration_date", "email_pseudonym", "phone_pseudonym", "cell_pseudonym",
    "address_pseudonym", "kafka_partition", "kafka_offset",
)  # fmt: skip
"""Columns of the Cassandra ``profiles`` table: pseudonyms only, no plaintext identifiers."""

PARTIAL_COLUMNS: tuple[str, ...] = (
    "dimension", "window_start", "value", "batch_id", "window_end",
    "profiles", "age_sum", "age_min", "age_max",
)  # fmt: skip
"""Columns of ``speed_aggregates``: one partial aggregate of one micro-batch."""

BATCH_METRIC_COLUMNS: tuple[str, ...] = (
    "job", "batch_id", "processed_at", "input_rows", "new_profiles", "duplicates", "dead_lettered",
    "under_age", "late_rows_dropped", "duration_ms", "max_event_time",
)  # fmt: skip
"""Columns of ``stream_batches`` written by the batch itself (rate and lag come from the progress)."""

LOOKUP_CHUNK = 100
"""uuids per ``IN`` lookup of already stored profiles."""

DUPLICATE_KEY = 11000
"""MongoDB's error code for an ``_id`` (or unique key) that is already stored."""


class CassandraSpeedStore:
    """The speed layer's Cassandra tables in one keyspace, with prepared statements."""

    def __init__(self, session: Session, keyspace: str, concurrency: int, rows_per_batch: int = 5) -> None:
        self.session = session
        self.keyspace = keyspace
        self.concurrency = concurrency
        self.rows_per_batch = rows_per_batch
        self._first_batch = session.prepare(
            f"SELECT uuid, first_batch_id FROM {keyspace}.profiles WHERE uuid IN ?"
        )
        self._insert_profile = self._insert("profiles", PROFILE_COLUMNS)
        self._insert_partial = self._insert("speed_aggregates", PARTIAL_COLUMNS)
        self._insert_window = self._insert("speed_windows", ("dimension", "window_start"))
        self._insert_metrics = self._insert("stream_batches", BATCH_METRIC_COLUMNS)
        self._update_progress = session.prepare(
            f"UPDATE {keyspace}.stream_batches SET rows_per_s = ?, kafka_lag = ? "
            "WHERE job = ? AND batch_id = ?"
        )

    def _insert(self, table: str, columns: Sequence[str]) -> Any:
        placeholders = ", ".join("?" for _ in columns)
        return self.session.prepare(
            f"INSERT INTO {self.keyspace}.{table} ({', '.join(columns)}) VALUES ({placeholders})"
        )

    def _execute_all(self, statement: Any, parameters: Iterable[Sequence[Any]]) -> None:
        """Run one prepared statement for many rows, in concurrent batches; the first failure raises."""
        execute_in_batches(self.session, statement, parameters, self.rows_per_batch, self.concurrency)

    def first_batch_ids(self, uuids: Sequence[str]) -> dict[str, int]:
        """The batch id that first stored each of ``uuids``, for those already stored.

        Asked ``LOOKUP_CHUNK`` uuids at a time (``IN`` on the partition key), concurrently: one request
        per uuid would make the lookup the slowest step of a batch.
        """
        chunks = [tuple(uuids[i : i + LOOKUP_CHUNK]) for i in range(0, len(uuids), LOOKUP_CHUNK)]
        results = execute_concurrent_with_args(
            self.session, self._first_batch, [(list(chunk),) for chunk in chunks],
            concurrency=self.concurrency, raise_on_first_error=True,
        )  # fmt: skip
        return {row.uuid: row.first_batch_id for _, result in results for row in result}

    def write_profiles(self, profiles: Sequence[Mapping[str, Any]]) -> None:
        self._execute_all(self._insert_profile, ([p[c] for c in PROFILE_COLUMNS] for p in profiles))

    def write_partials(self, partials: Sequence[Mapping[str, Any]]) -> None:
        """Store partial aggregates and index their windows (the index first: readers find no gap)."""
        windows = {(p["dimension"], p["window_start"]) for p in partials}
        self._execute_all(self._insert_window, windows)
        self._execute_all(self._insert_partial, ([p[c] for c in PARTIAL_COLUMNS] for p in partials))

    def write_batch_metrics(self, metrics: Mapping[str, Any]) -> None:
        self.session.execute(self._insert_metrics, [metrics[c] for c in BATCH_METRIC_COLUMNS])

    def write_batch_progress(
        self, job: str, batch_id: int, rows_per_s: float, kafka_lag: dict[int, int]
    ) -> None:
        self.session.execute(self._update_progress, (rows_per_s, kafka_lag, job, batch_id))


class MongoRawStore:
    """Raw profile documents and dead letters in MongoDB (or any server of its wire protocol)."""

    def __init__(
        self,
        profiles: Collection,
        dead_letters: Collection,
        latest: Collection | None = None,
        latest_kept: int = 200,
    ) -> None:
        self.profiles = profiles
        self.dead_letters = dead_letters
        self.latest = latest
        """A small copy of the newest documents: FerretDB's SQLite backend sorts by reading every
        document (no index is used), so "the latest profiles" cannot be asked of the full collection."""
        self.latest_kept = latest_kept

    def ensure_indexes(self) -> None:
        """Indexes for "latest profiles" and "profiles of a country" (idempotent)."""
        for collection in (self.profiles, self.latest):
            if collection is None:
                continue
            collection.create_index([("fetched_at", DESCENDING)], name="latest_profiles")
            collection.create_index(
                [("user.location.country", 1), ("fetched_at", DESCENDING)], name="by_country"
            )
        self.dead_letters.create_index([("stored_at", DESCENDING)], name="latest_dead_letters")

    def insert_profiles(self, documents: Sequence[Mapping[str, Any]]) -> None:
        """Insert each document once by ``_id``: a replay, or a later duplicate, changes nothing."""
        _insert_once(self.profiles, documents)
        self._keep_latest(documents)

    def _keep_latest(self, documents: Sequence[Mapping[str, Any]]) -> None:
        """Add the newest of ``documents`` to the latest-profiles copy, then trim it to ``latest_kept``."""
        if self.latest is None or not documents:
            return
        newest = sorted(documents, key=lambda document: document["fetched_at"], reverse=True)
        _insert_once(self.latest, newest[: self.latest_kept])
        kept = [
            document["_id"]
            for document in self.latest.find({}, {"_id": 1})
            .sort("fetched_at", DESCENDING)
            .limit(self.latest_kept)
        ]
        self.latest.delete_many({"_id": {"$nin": kept}})

    def replace_older_profiles(self, documents: Sequence[Mapping[str, Any]]) -> None:
        """Replace stored documents (and their latest-profiles copy) by the given newer versions; a
        stored document at least as new stays, a missing one is not created. Idempotent on replay."""
        if not documents:
            return
        replacements = [
            ReplaceOne(
                {"_id": document["_id"], "fetched_at": {"$lt": document["fetched_at"]}}, dict(document)
            )
            for document in documents
        ]
        for collection in (self.profiles, self.latest):
            if collection is not None:
                collection.bulk_write(replacements, ordered=False)

    def insert_dead_letters(self, letters: Sequence[Mapping[str, Any]], stored_at: datetime) -> None:
        """Insert each dead letter once, keyed by its Kafka coordinates."""
        _insert_once(self.dead_letters, [{**letter, "stored_at": stored_at} for letter in letters])


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
    )
