"""The raw documents in MongoDB (or any server of its wire protocol): one document per profile, the
small copy of the newest, and the dead letters. Every query on these collections is here.

Every write is idempotent: documents are inserted once by ``_id`` (a replayed micro-batch changes
nothing) and replacements are keyed by uuid.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from core.sealing import put_back
from core.settings import RetentionSettings, Settings
from stores.personal_data import StoreRetention, cutoff_instant

PRODUCER_JOB = "producer"
"""The ``job`` of the producer's dead letters: kept in their own topic, here only once re-driven."""
DUPLICATE_KEY = 11000
"""MongoDB's error code for an ``_id`` (or unique key) that is already stored."""
OUTSTANDING: dict[str, Any] = {"redriven": {"$exists": False}}
"""Dead letters not re-driven (a re-driven one keeps its document, marked with where its copy went)."""


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
        query: dict[str, Any] = {**OUTSTANDING, "reason": reason}
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

    # -- reads of serving and the operator's commands ------------------------------------------------

    def raw_profile(self, uuid: str) -> dict[str, Any] | None:
        """The raw document of ``uuid`` (by ``_id``: an index lookup), or None."""
        return self.profiles.find_one({"_id": uuid})

    def newest_profiles(
        self, query: Mapping[str, Any], projection: Mapping[str, Any], limit: int
    ) -> list[dict[str, Any]]:
        """The ``limit`` most recently fetched documents matching ``query`` (``latest_profiles_filter``),
        newest first, with the ``projection``'s fields only. From the latest-profiles copy: sorting the
        full collection is a scan on FerretDB."""
        collection = self.latest if self.latest is not None else self.profiles
        return list(
            collection.find(dict(query), dict(projection)).sort("fetched_at", DESCENDING).limit(limit)
        )

    def estimated_dead_letters(self) -> int:
        """Dead letters stored (re-driven ones and the producer's marks included), from the collection's
        metadata: no scan."""
        return self.dead_letters.estimated_document_count()

    def outstanding_dead_letter_groups(self) -> list[tuple[str, str, datetime | None, int]]:
        """(layer, reason, hour stored, count) of the dead letters not re-driven: one ``$group`` gives
        both the counts by reason and the counts over time."""
        groups = self.dead_letters.aggregate(
            [
                {"$match": OUTSTANDING},
                {
                    "$group": {
                        "_id": {"job": "$job", "reason": "$reason", "hour": "$stored_hour"},
                        "count": {"$sum": 1},
                    }
                },
            ]
        )
        return [
            (
                group["_id"].get("job", ""),
                group["_id"].get("reason", ""),
                group["_id"].get("hour"),
                group["count"],
            )
            for group in groups
        ]

    def newest_dead_letters(self, limit: int, reason: str | None = None) -> list[dict[str, Any]]:
        """The ``limit`` most recently stored dead letters (of one ``reason``) not re-driven."""
        query = OUTSTANDING if reason is None else {**OUTSTANDING, "reason": reason}
        return list(self.dead_letters.find(query).sort("stored_at", DESCENDING).limit(limit))

    def find_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        """One dead letter by its Kafka coordinates (``topic:partition:offset``)."""
        return self.dead_letters.find_one({"_id": letter_id})

    # -- erasure and retention -------------------------------------------------------------------------

    def uuids_with_email(self, email: str) -> set[str]:
        """The uuids of the raw documents with this e-mail, in clear as received."""
        return {document["_id"] for document in self.profiles.find({"user.email": email.strip()}, {"_id": 1})}

    def holds_subject(self, uuid: str) -> bool:
        """Whether a raw document or a dead letter of ``uuid`` is stored."""
        return bool(
            self.profiles.find_one({"_id": uuid}, {"_id": 1})
            or self.dead_letters.find_one({"key": uuid}, {"_id": 1})
        )

    def erase(self, uuid: str) -> dict[str, int]:
        """Delete the subject's raw document, its latest-profiles copy and the dead letters keyed by its
        uuid; the documents removed, by collection (``PersonalDataStore``)."""
        removed = {self.profiles.name: self.profiles.delete_many({"_id": uuid}).deleted_count}
        if self.latest is not None:
            removed[self.latest.name] = self.latest.delete_many({"_id": uuid}).deleted_count
        removed[self.dead_letters.name] = self.dead_letters.delete_many({"key": uuid}).deleted_count
        return {f"MongoDB {collection}": count for collection, count in removed.items()}

    def expire(self, retention: RetentionSettings, now: datetime) -> list[StoreRetention]:
        """Delete raw documents (and their latest copy) by ``fetched_at``, dead letters by ``stored_at``,
        older than their retention (``PersonalDataStore``)."""
        raw_cutoff = cutoff_instant(now, retention.raw_documents_days)
        letters_cutoff = cutoff_instant(now, retention.dead_letters_days)
        removed = self.delete_older_than(raw_cutoff, letters_cutoff)
        database = self.profiles.database.name
        return [
            StoreRetention(
                f"mongodb {database}.{collection}",
                (letters_cutoff if collection == self.dead_letters.name else raw_cutoff).isoformat(),
                deleted,
                "documents",
            )
            for collection, deleted in removed.items()
        ]

    def delete_older_than(self, profiles_before: datetime, dead_letters_before: datetime) -> dict[str, int]:
        """Delete the raw documents (and their latest copy) fetched before ``profiles_before`` and the
        dead letters stored before ``dead_letters_before``; the documents removed, by collection.

        ``delete_many`` with a ``$lt`` on a date: what FerretDB and MongoDB both support, and what a TTL
        index would do on MongoDB.
        """
        plan = [(self.profiles, "fetched_at", profiles_before)]
        if self.latest is not None:
            plan.append((self.latest, "fetched_at", profiles_before))
        plan.append((self.dead_letters, "stored_at", dead_letters_before))
        return {
            collection.name: collection.delete_many({field: {"$lt": cutoff}}).deleted_count
            for collection, field, cutoff in plan
        }


def latest_profiles_filter(
    country: str | None = None,
    gender: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """The filter of the latest-profiles query (the ``by_country`` index serves a country), fetched in
    ``[start, end)``."""
    query: dict[str, Any] = {}
    if country:
        query["user.location.country"] = country
    if gender:
        query["user.gender"] = gender
    fetched_at: dict[str, datetime] = {}
    if start is not None:
        fetched_at["$gte"] = start
    if end is not None:
        fetched_at["$lt"] = end
    if fetched_at:
        query["fetched_at"] = fetched_at
    return query


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
