"""The raw documents in MongoDB (or any server of its wire protocol): one document per profile, the
small copy of the newest, the dead letters and their tallies. Every query on these collections is here.

Every write is idempotent: documents are inserted once by ``_id`` (a replayed micro-batch changes
nothing) and replacements are keyed by uuid.

The tallies count the dead letters not re-driven per (layer, reason, hour stored), so that the operations
page reads a few hundred small documents instead of scanning every letter: FerretDB's SQLite backend
filters and groups by reading each document (about 100 µs per letter). Each change of a letter moves its
tally with it: the letters an insert really added (a replay adds none), the one a re-drive marks, the ones
an erasure deletes. A process that dies between the two writes leaves a tally one letter off;
``recount_dead_letter_tallies`` (run by retention) sets every closed hour's tallies from the letters.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne, UpdateOne
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

TallyKey = tuple[str, str, datetime | None]
"""(layer, reason, hour stored) of a dead letter: what its tally counts."""


def hour_of(moment: datetime) -> datetime:
    """The start of the hour of ``moment``."""
    return moment.replace(minute=0, second=0, microsecond=0)


def _naive_utc(moment: datetime) -> datetime:
    """``moment`` as the driver reads it back: naive, in UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def tally_key(letter: Mapping[str, Any]) -> TallyKey:
    """The tally a dead letter (or a ``$group`` key of the same fields) counts in."""
    hour = letter.get("stored_hour")
    return (letter.get("job", ""), letter.get("reason", ""), _naive_utc(hour) if hour is not None else None)


def tally_id(key: TallyKey) -> str:
    job, reason, hour = key
    return f"{job}|{hour.isoformat() if hour is not None else '-'}|{reason}"


def _tally_fields(key: TallyKey, count: int | None = None) -> dict[str, Any]:
    job, reason, hour = key
    return {"job": job, "reason": reason, "hour": hour, **({} if count is None else {"count": count})}


def is_outstanding(letter: Mapping[str, Any]) -> bool:
    """Whether a dead letter's document is not marked as re-driven (``OUTSTANDING`` of one document)."""
    return "redriven" not in letter


class MongoRawStore:
    """Raw profile documents and dead letters in MongoDB (or any server of its wire protocol)."""

    def __init__(
        self,
        profiles: Collection,
        dead_letters: Collection,
        tallies: Collection,
        latest: Collection | None = None,
        latest_kept: int = 200,
        bulk_statements: int = 10,
        newest_letters: Collection | None = None,
        newest_letters_kept: int = 500,
    ) -> None:
        self.profiles = profiles
        self.dead_letters = dead_letters
        self.tallies = tallies
        """The dead letters not re-driven, counted per (layer, reason, hour stored)."""
        self.latest = latest
        """A small copy of the newest documents: FerretDB's SQLite backend sorts by reading every
        document (no index is used), so "the latest profiles" cannot be asked of the full collection."""
        self.latest_kept = latest_kept
        self.newest_letters = newest_letters
        """A copy of the newest dead letters, kept in step with them: the same reason as ``latest``."""
        self.newest_letters_kept = newest_letters_kept
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
        if self.latest is not None:
            _keep_newest(self.latest, "fetched_at", self.latest_kept)

    def insert_dead_letters(self, letters: Sequence[Mapping[str, Any]], stored_at: datetime) -> None:
        """Insert each dead letter once, keyed by its Kafka coordinates, and count those really added in
        their tallies (a replay, or the other layer's copy of the same record, adds none). The hour it
        was stored is kept beside the moment: the tallies and the recount group by it, and FerretDB's
        ``$group`` has no date operator to truncate a moment with."""
        stored_hour = hour_of(stored_at)
        inserted = _insert_once(
            self.dead_letters,
            [{**letter, "stored_at": stored_at, "stored_hour": stored_hour} for letter in letters],
        )
        self._count(Counter(tally_key(letter) for letter in inserted))
        if self.newest_letters is not None and inserted:
            newest = sorted(inserted, key=lambda letter: letter["stored_at"], reverse=True)
            _insert_once(self.newest_letters, newest[: self.newest_letters_kept])
            _keep_newest(self.newest_letters, "stored_at", self.newest_letters_kept)

    def _count(self, changes: Mapping[TallyKey, int]) -> None:
        """Add ``changes`` to the tallies (a tally is created at its first letter)."""
        updates = [
            UpdateOne(
                {"_id": tally_id(key)},
                {"$inc": {"count": change}, "$setOnInsert": _tally_fields(key)},
                upsert=True,
            )
            for key, change in changes.items()
            if change
        ]
        for start in range(0, len(updates), self.bulk_statements):
            self.tallies.bulk_write(updates[start : start + self.bulk_statements], ordered=False)

    def _uncount(self, letters: Iterable[Mapping[str, Any] | None]) -> None:
        """Take the outstanding ones of ``letters`` (documents as they were before a change) out of their
        tallies."""
        outstanding = Counter(tally_key(d) for d in letters if d is not None and is_outstanding(d))
        self._count({key: -n for key, n in outstanding.items()})

    def dead_letters_to_redrive(self, reason: str, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """The dead letters of ``reason`` (stored since ``since``) not re-driven yet, oldest first."""
        query: dict[str, Any] = {**OUTSTANDING, "reason": reason}
        if since is not None:
            query["stored_at"] = {"$gte": since}
        yield from self.dead_letters.find(query).sort("_id", ASCENDING)

    def mark_redriven(self, letter_id: str, redriven_at: datetime, published_as: str) -> None:
        """Record that a dead letter was published again (as ``topic:partition:offset``); it leaves its
        tally. One atomic find-and-modify by ``_id`` (what FerretDB looks up without a scan) says
        whether it was outstanding, so a letter marked twice leaves its tally once."""
        mark = {"$set": {"redriven": {"at": redriven_at, "published_as": published_as}}}
        before = self.dead_letters.find_one_and_update({"_id": letter_id}, mark)
        self._uncount([before])
        if self.newest_letters is not None:
            self.newest_letters.update_one({"_id": letter_id}, mark)

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
        """Give a dead letter the reason today's validation gives it (and move it to that tally)."""
        change = {"$set": {"reason": reason, "revalidated_at": revalidated_at}}
        before = self.dead_letters.find_one_and_update({"_id": letter_id}, change)
        if before is not None and is_outstanding(before) and before.get("reason") != reason:
            self._count({tally_key(before): -1, tally_key({**before, "reason": reason}): 1})
        if self.newest_letters is not None:
            self.newest_letters.update_one({"_id": letter_id}, change)

    def delete_dead_letters(self, letter_ids: Sequence[str]) -> int:
        """Delete dead letters by ``_id`` (one find-and-delete each, an index lookup on FerretDB too) and
        take them out of their tallies; how many were stored."""
        removed = [self.dead_letters.find_one_and_delete({"_id": letter_id}) for letter_id in letter_ids]
        self._uncount(removed)
        if self.newest_letters is not None:
            for letter_id in letter_ids:
                self.newest_letters.delete_one({"_id": letter_id})
        return sum(1 for letter in removed if letter is not None)

    def recount_dead_letter_tallies(self, now: datetime) -> int:
        """Set the tallies of the hours before ``now``'s from the letters themselves (one scan) and drop
        those left with no letter; how many tallies were wrong. The current hour's tallies are left to
        the writers adding to them; a re-drive or an erasure that runs meanwhile may leave its change
        out until the next recount."""
        current_hour = _naive_utc(hour_of(now))

        def closed(key: TallyKey) -> bool:
            return key[2] is None or key[2] < current_hour

        groups = self.dead_letters.aggregate(
            [
                {"$match": OUTSTANDING},
                {"$group": {"_id": {"job": "$job", "reason": "$reason", "stored_hour": "$stored_hour"},
                            "count": {"$sum": 1}}},
            ]
        )  # fmt: skip
        counted = {key: g["count"] for g in groups if closed(key := tally_key(g["_id"]))}
        stored = {
            key: tally.get("count", 0)
            for tally in self.tallies.find({})
            if closed(key := tally_key({**tally, "stored_hour": tally.get("hour")}))
        }
        wrong = {
            key: counted.get(key, 0)
            for key in counted.keys() | stored.keys()
            if counted.get(key, 0) != stored.get(key)
        }
        updates = [
            UpdateOne({"_id": tally_id(key)}, {"$set": _tally_fields(key, count)}, upsert=True)
            for key, count in wrong.items()
            if count
        ]
        for start in range(0, len(updates), self.bulk_statements):
            self.tallies.bulk_write(updates[start : start + self.bulk_statements], ordered=False)
        emptied = [tally_id(key) for key, count in wrong.items() if not count]
        for start in range(0, len(emptied), 500):
            self.tallies.delete_many({"_id": {"$in": emptied[start : start + 500]}})
        return len(wrong)

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

    def outstanding_dead_letter_groups(self) -> list[tuple[str, str, datetime | None, int]]:
        """(layer, reason, hour stored, count) of the dead letters not re-driven, from their tallies: both
        the counts by reason and the counts over time, without reading a letter."""
        return [
            (tally.get("job", ""), tally.get("reason", ""), tally.get("hour"), tally["count"])
            for tally in self.tallies.find({})
            if tally.get("count", 0) > 0
        ]

    def newest_dead_letters(self, limit: int, reason: str | None = None) -> list[dict[str, Any]]:
        """The ``limit`` most recently stored dead letters (of one ``reason``) not re-driven.

        From the copy of the newest letters when it holds ``limit`` of them, or as many as the tallies
        count; otherwise (a reason none of the newest has) sorted out of all the letters, which FerretDB
        does by reading every one.
        """
        if self.newest_letters is not None:
            copies = [
                d for d in self.newest_letters.find({})
                if is_outstanding(d) and (reason is None or d.get("reason") == reason)
            ]  # fmt: skip
            counted = sum(count for _, tally_reason, _, count in self.outstanding_dead_letter_groups()
                          if reason is None or tally_reason == reason)  # fmt: skip
            if len(copies) >= min(limit, counted):
                return sorted(copies, key=lambda d: d["stored_at"], reverse=True)[:limit]
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
        letters = [letter["_id"] for letter in self.dead_letters.find({"key": uuid}, {"_id": 1})]
        removed[self.dead_letters.name] = self.delete_dead_letters(letters)
        return {f"MongoDB {collection}": count for collection, count in removed.items()}

    def expire(self, retention: RetentionSettings, now: datetime) -> list[StoreRetention]:
        """Delete raw documents (and their latest copy) by ``fetched_at``, dead letters by ``stored_at``,
        older than their retention (``PersonalDataStore``)."""
        raw_cutoff = cutoff_instant(now, retention.raw_documents_days)
        letters_cutoff = cutoff_instant(now, retention.dead_letters_days)
        removed = self.delete_older_than(raw_cutoff, letters_cutoff)
        self.recount_dead_letter_tallies(now)  # the expired letters leave their tallies
        letter_collections = {c.name for c in (self.dead_letters, self.newest_letters) if c is not None}
        database = self.profiles.database.name
        return [
            StoreRetention(
                f"mongodb {database}.{collection}",
                (letters_cutoff if collection in letter_collections else raw_cutoff).isoformat(),
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
        if self.newest_letters is not None:
            plan.append((self.newest_letters, "stored_at", dead_letters_before))
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


def _keep_newest(copy: Collection, field: str, kept: int) -> None:
    """Keep only the ``kept`` documents of a small copy that are newest by ``field`` (and any tied with
    the oldest of them). Deletes what is older than those, never by their ids: a concurrent writer's
    newer documents, inserted after the ids were read, stay."""
    newest = list(copy.find({}, {field: 1}).sort(field, DESCENDING).limit(kept))
    if len(newest) == kept:
        copy.delete_many({field: {"$lt": newest[-1][field]}})


def _insert_once(collection: Collection, documents: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Insert documents whose ``_id`` is not stored yet; those already stored are left as they are.
    Returns the documents inserted.

    An unordered ``insert_many`` that ignores duplicate-key errors: on MongoDB and FerretDB alike it is
    one round trip per batch, and far cheaper than upserts on FerretDB's SQLite backend.
    """
    copies = [dict(document) for document in documents]
    if not copies:
        return []
    try:
        collection.insert_many(copies, ordered=False)
    except BulkWriteError as error:
        write_errors = error.details.get("writeErrors", [])
        if error.details.get("writeConcernErrors") or any(
            e.get("code") != DUPLICATE_KEY for e in write_errors
        ):
            raise
        already_stored = {e["index"] for e in write_errors}  # indexes into ``copies``
        return [document for index, document in enumerate(copies) if index not in already_stored]
    return copies


def mongo_raw_store(database: Database, settings: Settings) -> MongoRawStore:
    """The raw-document store of the configured collections."""
    mongo = settings.mongo
    return MongoRawStore(
        database[mongo.raw_profiles_collection],
        database[mongo.dead_letters_collection],
        database[mongo.dead_letter_tallies_collection],
        database[mongo.latest_profiles_collection],
        mongo.latest_profiles_kept,
        mongo.bulk_statements,
        database[mongo.newest_dead_letters_collection],
        mongo.newest_dead_letters_kept,
    )
