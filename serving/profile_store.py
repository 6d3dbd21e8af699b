"""One profile, looked up by uuid: its copies in the serving stores and its versions in the Delta archive.

The serving stores hold what the speed layer stored for a uuid: the raw MongoDB document (the profile as
received, ``_id`` = uuid) and the pseudonymized Cassandra ``profiles`` row. The archive holds every
version ever published for it (the topic's records as received), each edit included: the raw document
holds only the newest version, and the Cassandra row the first (the one the speed views counted).

Archived values are JSON envelopes (``core.profile.ProfileEnvelope``). Version 1 carries the user in
clear; version 2 carries it without its direct identifiers plus a ``sealed`` token that only the
subject's data key opens (``core.sealing``). Once the subject is erased its key is gone and those
versions stay unreadable, by design.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.schema import SUPPORTED_ENVELOPE_VERSIONS
from core.sealing import unseal_identifiers
from core.settings import Settings
from core.spark import as_utc, collect_dicts
from serving.profiles import ProfileRow, profile_row
from stores.cassandra_schema import apply_schema
from stores.connections import Database, Session, cassandra_session, mongo_client, mongo_database
from stores.documents import MongoRawStore, mongo_raw_store
from stores.speed_views import CassandraSpeedStore

# --- the serving stores -----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredProfile:
    """What the serving stores hold for one uuid (either side may be missing)."""

    uuid: str
    raw_document: dict[str, Any] | None
    """The MongoDB raw document: the profile in clear, its envelope fields and Kafka coordinates."""
    cassandra_row: dict[str, Any] | None
    """The Cassandra ``profiles`` row: pseudonyms, derived fields, no direct identifier."""

    @property
    def found(self) -> bool:
        return self.raw_document is not None or self.cassandra_row is not None

    def masked(self) -> ProfileRow | None:
        """The raw document as the dashboard may show it (direct identifiers masked), if there is one."""
        return profile_row(self.raw_document) if self.raw_document is not None else None


class ProfileStore:
    """Read side of one profile in MongoDB (raw documents) and Cassandra (``profiles``), by uuid."""

    def __init__(self, documents: MongoRawStore, speed: CassandraSpeedStore) -> None:
        self.documents = documents
        self.speed = speed

    def read(self, uuid: str) -> StoredProfile:
        """Both copies of ``uuid``."""
        return StoredProfile(uuid, self.documents.raw_profile(uuid), self.speed.profile_row(uuid))


def profile_store_of(session: Session, database: Database, settings: Settings) -> ProfileStore:
    """A profile store on connections someone else owns (the dashboard's shared ones)."""
    speed = CassandraSpeedStore(session, settings.cassandra.keyspace, settings.cassandra.concurrency)
    return ProfileStore(mongo_raw_store(database, settings), speed)


@contextmanager
def profile_store(settings: Settings) -> Iterator[ProfileStore]:
    """A profile store on its own connections to the configured stores, closed on exit.

    The Cassandra schema is applied first (idempotently), as the dashboard does: looking a uuid up
    before either layer ran says "not found" rather than failing on a missing table.
    """
    cluster, session = cassandra_session(settings)
    client = mongo_client(settings)
    try:
        apply_schema(session, settings.cassandra.keyspace, settings.cassandra.keyspace_replication)
        yield profile_store_of(session, mongo_database(client, settings), settings)
    finally:
        client.close()
        cluster.shutdown()


# --- the archive: every version ---------------------------------------------------------------

VersionStatus = Literal["clear", "unsealed", "erased", "unreadable", "invalid"]
"""How a version was read: in clear (envelope v1), unsealed with the subject's key (v2), sealed with a
key that no longer exists (erased subject), sealed with a token the key does not open, not an envelope."""

READABLE: tuple[VersionStatus, ...] = ("clear", "unsealed")


@dataclass(frozen=True)
class ProfileVersion:
    """One archived record of a uuid: an envelope as published, decoded as far as the key allows."""

    uuid: str
    partition: int
    offset: int
    kafka_timestamp: datetime | None
    ingestion_date: date | None
    status: VersionStatus
    fetched_at: datetime | None = None
    source: str | None = None
    schema_version: int | None = None
    user: dict[str, Any] | None = None
    """The profile in clear (``status`` in ``READABLE``); without direct identifiers when erased."""
    note: str | None = None
    """Why the version could not be read, when it could not."""

    @property
    def readable(self) -> bool:
        return self.status in READABLE


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def decode_version(record: Mapping[str, Any], data_key: bytes | None) -> ProfileVersion:
    """An archive row (``batch_layer.archive.ARCHIVE_COLUMNS``) -> the version it holds.

    ``data_key`` is the subject's key, None when it has none (erased): sealed versions then keep only
    what was never sealed, and say so.
    """
    uuid = bytes(record["key"]).decode("utf-8", errors="replace") if record["key"] is not None else ""
    coordinates = {
        "uuid": uuid,
        "partition": record["partition"],
        "offset": record["offset"],
        "kafka_timestamp": as_utc(record.get("kafka_timestamp")),
        "ingestion_date": record.get("ingestion_date"),
    }
    try:
        envelope = json.loads(bytes(record["value"]))
    except (TypeError, ValueError) as error:
        return ProfileVersion(**coordinates, status="invalid", note=f"not JSON ({error})")
    if not isinstance(envelope, dict) or not isinstance(envelope.get("user"), dict):
        return ProfileVersion(**coordinates, status="invalid", note="not an envelope with a user object")
    described = {
        **coordinates,
        "fetched_at": _parse_time(envelope.get("fetched_at")),
        "source": envelope.get("source"),
        "schema_version": envelope.get("schema_version"),
    }
    if envelope.get("schema_version") not in SUPPORTED_ENVELOPE_VERSIONS:
        note = f"unknown envelope version {envelope.get('schema_version')!r}"
        return ProfileVersion(**described, status="invalid", note=note)
    user, sealed = envelope["user"], envelope.get("sealed")
    if not sealed:
        return ProfileVersion(**described, status="clear", user=user)
    if data_key is None:
        note = "sealed, and the subject's key is gone (erased): its direct identifiers are unreadable"
        return ProfileVersion(**described, status="erased", user=user, note=note)
    try:
        return ProfileVersion(**described, status="unsealed", user=unseal_identifiers(user, sealed, data_key))
    except (InvalidTag, ValueError, KeyError) as error:
        note = f"the sealed identifiers do not open with the subject's key ({type(error).__name__})"
        return ProfileVersion(**described, status="unreadable", user=user, note=note)


def newest_first(versions: Sequence[ProfileVersion]) -> list[ProfileVersion]:
    """Versions newest first: by ``fetched_at`` (the event time), then by offset (the order of the log).

    A version without a readable ``fetched_at`` sorts by its Kafka timestamp instead, so it still finds
    its place rather than sinking to the end.
    """
    oldest = datetime.min.replace(tzinfo=UTC)

    def order(version: ProfileVersion) -> tuple[datetime, int, int]:
        moment = version.fetched_at or version.kafka_timestamp or oldest
        return moment, version.offset, version.partition

    return sorted(versions, key=order, reverse=True)


def changed_paths(older: Any, newer: Any, prefix: str = "") -> list[str]:
    """The dotted paths whose values differ between two JSON objects (``location.city``, ``email``)."""
    if not isinstance(older, dict) or not isinstance(newer, dict):
        return [] if older == newer else [prefix or "<user>"]
    paths: list[str] = []
    for name in sorted(older.keys() | newer.keys()):
        path = f"{prefix}.{name}" if prefix else name
        paths.extend(changed_paths(older.get(name), newer.get(name), path))
    return paths


def archived_records(
    spark: SparkSession,
    settings: Settings,
    uuid: str,
    since: date | None = None,
    until: date | None = None,
) -> list[dict[str, Any]]:
    """The archive's records keyed ``uuid`` (only the ingestion days from ``since`` to ``until``).

    The day bounds prune whole partitions (``ingestion_date`` is the partition column); the key filter
    then reads only the ``key`` column of the remaining files before fetching the matching values.
    """
    table = settings.paths.archive_table
    if not DeltaTable.isDeltaTable(spark, table):
        return []
    archive = spark.read.format("delta").load(table)
    if since is not None:
        archive = archive.where(F.col("ingestion_date") >= F.lit(since))
    if until is not None:
        archive = archive.where(F.col("ingestion_date") <= F.lit(until))
    matching = archive.where(F.col("key") == F.lit(bytearray(uuid.encode("utf-8"))))
    return collect_dicts(
        matching.select("key", "value", "partition", "offset", "kafka_timestamp", "ingestion_date")
    )


def profile_history(
    spark: SparkSession,
    settings: Settings,
    uuid: str,
    data_key: bytes | None,
    since: date | None = None,
    until: date | None = None,
) -> list[ProfileVersion]:
    """Every archived version of ``uuid``, decoded with ``data_key``, newest first."""
    records = archived_records(spark, settings, uuid, since, until)
    return newest_first([decode_version(record, data_key) for record in records])
