"""The register of processing (GDPR art. 30): every field the platform stores, declared once, in code.

Why in code: a register kept as a document drifts away from what the code stores. Here each
(store, field) pair is one typed declaration with its category, protection, purpose, legal basis and
retention; ``userpulse register`` renders them as ``docs/register.md``, and
``tests/unit/privacy/test_register.py`` derives the fields each store really holds from the code that writes
them (the CQL files, the Spark frames of the Delta tables, the MongoDB documents, the Kafka messages).
That test fails when a stored field is not declared, a declared field is no longer stored, or the
committed Markdown is stale.

The register states what the code does today, not what is planned: a direct identifier kept in clear
is declared with protection ``none``. Store names are the defaults of ``core.settings`` (a deployment
may override them), so the rendered file does not depend on the environment it is rendered in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from core.sealing import SEALED_FIELDS
from core.settings import (
    PROJECT_ROOT,
    BatchLayerSettings,
    CassandraSettings,
    KafkaSettings,
    MongoSettings,
    PathSettings,
    RetentionSettings,
)

REGISTER_PATH = PROJECT_ROOT / "docs" / "register.md"
"""Where ``userpulse register`` writes the rendered register (committed, checked by a test)."""


class Category(StrEnum):
    """What a field says about the person it describes."""

    DIRECT_IDENTIFIER = "direct identifier"
    QUASI_IDENTIFIER = "quasi-identifier"
    OTHER = "other"


CATEGORY_MEANINGS: dict[Category, str] = {
    Category.DIRECT_IDENTIFIER: "identifies the person on its own (name, e-mail, phone, address, "
    "account and national identifiers, photo), or is derived from such a value one to one",
    Category.QUASI_IDENTIFIER: "identifies the person in combination with other fields (birth date, "
    "gender, place, nationality, derived ages and domains)",
    Category.OTHER: "says nothing about the person: technical metadata, counts, timestamps of processing",
}


class Protection(StrEnum):
    """How a field is protected where it is stored."""

    NONE = "none"
    GENERALIZED = "generalized"
    PSEUDONYMIZED = "pseudonymized"
    AGGREGATED = "aggregated"
    ENCRYPTED = "encrypted"
    DROPPED = "dropped"


PROTECTION_MEANINGS: dict[Protection, str] = {
    Protection.NONE: "stored as received, in clear",
    Protection.GENERALIZED: "stored as a coarser value derived from the original (age instead of the "
    "birth date, e-mail domain instead of the address, a date instead of an instant)",
    Protection.PSEUDONYMIZED: "stored as a keyed HMAC-SHA256 pseudonym (core/pseudonymization.py): only "
    "holders of USERPULSE_SECRETS__PSEUDONYMIZATION_KEY can recompute one from a value",
    Protection.AGGREGATED: "stored only as counts and age statistics over every profile sharing a value",
    Protection.ENCRYPTED: "stored sealed with AES-256-GCM under the subject's own data key (crypto-"
    "shredding, core/sealing.py): erasing the subject deletes the key, and every sealed copy becomes "
    "unreadable",
    Protection.DROPPED: "removed on receipt, before anything is stored",
}


class StoreKind(StrEnum):
    """Where data lands (or, for the source, where it arrives from)."""

    SOURCE = "source (not stored)"
    KAFKA_TOPIC = "Kafka topic"
    MONGODB_COLLECTION = "MongoDB collection"
    CASSANDRA_TABLE = "Cassandra table"
    DELTA_TABLE = "Delta table"


@dataclass(frozen=True)
class LegalBasis:
    """A lawful basis of processing (GDPR art. 6(1)) and why it applies."""

    article: str
    name: str
    justification: str


@dataclass(frozen=True)
class Purpose:
    """Why a field is processed (GDPR art. 5(1)(b), art. 30(1)(b))."""

    name: str
    description: str


@dataclass(frozen=True)
class Store:
    """A place where data lands, with the retention that applies to everything in it."""

    kind: StoreKind
    name: str
    written_by: str
    """The module that writes it: where to look when the register and the code disagree."""
    content: str
    """What one record is, and what is (or is not) in it."""
    retention: str
    """How long a record lives, as the code and the services' configuration make it today."""

    @property
    def key(self) -> tuple[StoreKind, str]:
        return (self.kind, self.name)

    @property
    def title(self) -> str:
        return f"{self.kind} `{self.name}`"


@dataclass(frozen=True)
class FieldDeclaration:
    """One stored field of one store. ``field`` is a dotted path for nested documents."""

    store: Store
    field: str
    category: Category
    protection: Protection
    purpose: Purpose
    description: str
    legal_basis: LegalBasis

    @property
    def retention(self) -> str:
        """The store's retention (fields of a store live as long as its records)."""
        return self.store.retention


# -- legal basis and purposes, written once --------------------------------------------------------------

LEGITIMATE_INTEREST = LegalBasis(
    article="art. 6(1)(f)",
    name="legitimate interest",
    justification="analytics over user profiles, with credentials dropped and the direct identifiers of "
    "the analytical stores pseudonymized. The profiles are public test data from randomuser.me or "
    "synthetic ones, so no real person is affected by this demo; a deployment on real data must record "
    "its own balancing test (or choose another basis) here.",
)

ANALYTICS = Purpose(
    "analytics",
    "profile counts and age statistics by country, gender, nationality, e-mail domain and age band, "
    "in real time (speed layer) and recomputed (batch layer)",
)
MASTER_DATA = Purpose(
    "master data",
    "the profile as received, kept so that the views can be recomputed and a subject's data can be "
    "found, shown and erased",
)
LINKAGE = Purpose(
    "linkage",
    "recognise the same subject across records and stores (deduplication, erasure by uuid or e-mail) "
    "without keeping the identifying value in the analytical stores",
)
OPERATIONS = Purpose(
    "operations",
    "run the pipeline exactly once and monitor it: Kafka coordinates, batch ids, versions, timings",
)
DATA_QUALITY = Purpose(
    "data quality",
    "keep the records that could not be processed, with the reason, so they can be inspected and fixed",
)
NO_PURPOSE = Purpose(
    "none",
    "not needed for any purpose: removed on receipt (data minimization, art. 5(1)(c))",
)

PURPOSES: tuple[Purpose, ...] = (ANALYTICS, MASTER_DATA, LINKAGE, OPERATIONS, DATA_QUALITY, NO_PURPOSE)

# -- stores ----------------------------------------------------------------------------------------------

_KAFKA = KafkaSettings()
_MONGO = MongoSettings()
_KEYSPACE = CassandraSettings().keyspace
_PATHS = PathSettings()
_VACUUM_HOURS = BatchLayerSettings().vacuum_retention_hours
_RETENTION = RetentionSettings()

_JOB = "the nightly Dagster job `retention` or `userpulse retention`"
_KAFKA_RETENTION = (
    f"{_RETENTION.topic_days} days (`retention.topic_days`): retention.ms = {_RETENTION.topic_retention_ms} "
    f"on the topic, set when the producer creates it and by {_JOB} on an existing topic. The broker "
    "deletes a log segment once all its records are older (a segment rolls at 1 GiB or after 7 days, so "
    f"a record may stay up to about {_RETENTION.topic_days + 7} days)."
)
_UNTIL_DELETED = "kept until deleted: no retention job and no TTL."
_SPEED_VIEWS = (
    f"{_RETENTION.speed_views_days} days (`retention.speed_views_days`): the table's default_time_to_live "
    f"({_RETENTION.speed_views_days * 86_400} s, set from the setting by {_JOB}) expires each row that "
    "long after it is written, and the job deletes the rows older than that by their"
)
_VACUUM = (
    f"VACUUM (`userpulse batch maintain`, nightly Dagster schedule of `maintain_lake`) deletes the files no "
    f"version references once older than {_VACUUM_HOURS:g} h (`batch_layer.vacuum_retention_hours`)"
)


def _relative(location: str | Path) -> str:
    """A project path as written in the register: relative, so the file is the same on every machine
    (a location elsewhere, or a URI, as it is)."""
    path = Path(location)
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(location)


SOURCE = Store(
    StoreKind.SOURCE,
    "randomuser.me response",
    "ingestion/ (core/profile.py strip_credentials)",
    "a user as the API (or the synthetic source) returns it, held in the producer's memory only",
    "not kept: the producer removes these fields before publishing profiles and dead letters.",
)
KAFKA_PROFILES = Store(
    StoreKind.KAFKA_TOPIC,
    _KAFKA.profiles_topic,
    "ingestion/kafka_publisher.py",
    "one message per profile fetched: key = login.uuid, value = the JSON envelope "
    "(core/profile.py ProfileEnvelope) with the user as received, credentials removed and direct "
    "identifiers sealed under the subject's key; every age, under-age profiles included",
    _KAFKA_RETENTION,
)
KAFKA_DEAD_LETTERS = Store(
    StoreKind.KAFKA_TOPIC,
    _KAFKA.dead_letter_topic,
    "ingestion/kafka_publisher.py",
    "one message per record the producer could not validate (core/profile.py DeadLetter), with the reason",
    _KAFKA_RETENTION,
)
MONGO_PROFILES = Store(
    StoreKind.MONGODB_COLLECTION,
    f"{_MONGO.database}.{_MONGO.raw_profiles_collection}",
    "stores/documents.py (raw_document)",
    "one document per adult profile (_id = uuid): the newest version received, as received (identifiers "
    "unsealed), with its Kafka coordinates; under-age profiles are not stored here",
    f"{_RETENTION.raw_documents_days} days after `fetched_at` (`retention.raw_documents_days`): {_JOB} "
    "deletes older documents (FerretDB has no TTL indexes; the same delete works on MongoDB).",
)
MONGO_LATEST_PROFILES = Store(
    StoreKind.MONGODB_COLLECTION,
    f"{_MONGO.database}.{_MONGO.latest_profiles_collection}",
    "stores/documents.py (MongoRawStore.insert_profiles)",
    f"a copy of the newest {_MONGO.latest_profiles_kept} raw documents, for the dashboard's latest-profiles "
    "table (FerretDB sorts by scanning the whole collection)",
    f"the newest {_MONGO.latest_profiles_kept} documents only: each speed-layer batch trims the rest; "
    f"none older than {_RETENTION.raw_documents_days} days after `fetched_at` (`retention.raw_documents_days`"
    f", deleted by {_JOB}).",
)
MONGO_DEAD_LETTERS = Store(
    StoreKind.MONGODB_COLLECTION,
    f"{_MONGO.database}.{_MONGO.dead_letters_collection}",
    "stores/documents.py (dead_letter_document)",
    "one document per Kafka record a layer could not use, with its raw bytes and the reason",
    f"{_RETENTION.dead_letters_days} days after `stored_at` (`retention.dead_letters_days`): {_JOB} deletes "
    "older documents.",
)
MONGO_NEWEST_DEAD_LETTERS = Store(
    StoreKind.MONGODB_COLLECTION,
    f"{_MONGO.database}.{_MONGO.newest_dead_letters_collection}",
    "stores/documents.py (MongoRawStore.insert_dead_letters)",
    f"a copy of the newest {_MONGO.newest_dead_letters_kept} dead letters, for the operations page's table "
    "(FerretDB sorts by scanning the whole collection)",
    f"the newest {_MONGO.newest_dead_letters_kept} letters only: each insert trims the rest; erased and "
    f"expired with the letters ({_RETENTION.dead_letters_days} days after `stored_at`).",
)
MONGO_DEAD_LETTER_TALLIES = Store(
    StoreKind.MONGODB_COLLECTION,
    f"{_MONGO.database}.{_MONGO.dead_letter_tallies_collection}",
    "stores/documents.py (MongoRawStore.insert_dead_letters)",
    "how many dead letters not re-driven each layer stored per reason and hour: counts, no record",
    f"as long as their letters: {_JOB} recounts them from the letters after deleting the expired ones, "
    "which drops the hours left with none.",
)


def _table(name: str, content: str, retention: str = _UNTIL_DELETED) -> Store:
    """A Cassandra table of the project's keyspace."""
    batch_tables = name.startswith("batch_") or name == "erasure_corrections"
    written_by = "stores/batch_views.py" if batch_tables else "stores/speed_views.py"
    if name == "schema_migrations":
        written_by = "stores/cassandra_schema.py"
    if name in ("subject_keys", "erasures"):
        written_by = "stores/subject_keys.py"
    return Store(StoreKind.CASSANDRA_TABLE, f"{_KEYSPACE}.{name}", written_by, content, retention)


_CURRENT_VERSION_ONLY = (
    "the current version only: each recomputation writes a new version and deletes the older ones."
)

CASSANDRA_PROFILES = _table(
    "profiles",
    "one row per profile the speed layer has seen: where and when its first and latest copies were seen "
    "and, when it is counted (its latest copy is adult), the latest copy's derived fields and pseudonyms; "
    "no name, e-mail, phone or street address in clear. Of a minor, only the sightings",
    f"{_RETENTION.profiles_days} days (`retention.profiles_days`): the table's default_time_to_live "
    f"({_RETENTION.profiles_days * 86_400} s, set from the setting by {_JOB}) expires each row that long "
    "after it is written, and the job deletes the rows whose `fetched_at` is older (rows written before "
    "the TTL was set). A profile seen again after it expired is stored and counted as new.",
)
SPEED_PARTIALS = _table(
    "speed_partials",
    "what one task of one micro-batch changed per dimension value and 1-minute window (profiles and "
    "ages added or removed); no minimum group size, so a value counted once gives away one person's age",
    f"{_SPEED_VIEWS} `window_start`.",
)
ERASURE_CORRECTIONS = _table(
    "erasure_corrections",
    "per pending erasure, what the merged view subtracts until a batch view leaves the subject out: a "
    "window, an age and one value per dimension, no identifier",
    "until a batch view that absorbed the erasure is current (then deleted by the recomputation).",
)
SPEED_WINDOWS = _table(
    "speed_windows", "which windows have speed aggregates, per dimension", f"{_SPEED_VIEWS} `window_start`."
)
STREAM_BATCHES = _table(
    "stream_batches",
    "one row per micro-batch of a streaming job: counts and timings",
    f"{_SPEED_VIEWS} `processed_at`.",
)
BATCH_CURRENT = _table(
    "batch_current",
    "one row per batch view: its current version and cutoff",
    "one row per view, overwritten by each recomputation.",
)
BATCH_AGGREGATES = _table(
    "batch_aggregates",
    "all-time aggregates per dimension value up to the cutoff; no minimum group size",
    _CURRENT_VERSION_ONLY,
)
BATCH_WINDOW_AGGREGATES = _table(
    "batch_window_aggregates",
    "aggregates per dimension value and window before the cutoff; no minimum group size",
    _CURRENT_VERSION_ONLY,
)
BATCH_WINDOWS = _table("batch_windows", "which windows a batch view version has", _CURRENT_VERSION_ONLY)
SCHEMA_MIGRATIONS = _table(
    "schema_migrations", "which CQL schema files were applied, and when", "kept for the keyspace's life."
)
SUBJECT_KEYS = _table(
    "subject_keys",
    "one AES-256 data key per subject (uuid), created by the producer on first sight: the key that opens "
    "the sealed identifiers of every copy of the subject's profiles in the topic and the archive",
    "until the subject is erased (`userpulse forget`): deleting the row is the crypto-shredding.",
)
ERASURES = _table(
    "erasures",
    "one row per erased subject: the keyed pseudonym of its uuid, when, by whom and what each store "
    "removed; no personal data. The producer consults it so that an erased subject stays erased",
    "kept as the proof of erasure and the suppression list: no retention job and no TTL.",
)
DELTA_ARCHIVE = Store(
    StoreKind.DELTA_TABLE,
    _relative(_PATHS.archive_table),
    "batch_layer/archive.py",
    "every record of the profiles topic as received (key and value bytes), partitioned by UTC ingestion "
    "date: the immutable master dataset, under-age profiles included",
    f"{_RETENTION.archive_days} days of ingestion (`retention.archive_days`): {_JOB} deletes each UTC "
    "ingestion-day partition once all of it is older; otherwise append-only. The deleted files stay "
    f"readable through Delta time travel until {_VACUUM}.",
)
DELTA_SILVER = Store(
    StoreKind.DELTA_TABLE,
    _relative(_PATHS.silver_table),
    "batch_layer/recompute.py (refresh_silver_profiles)",
    "per UTC ingestion day (its Delta partition), the latest version of each profile archived that day, "
    "transformed and pseudonymized (no full name); under-age profiles included (they are only left out "
    "of the views)",
    "each refresh rewrites a range of days from the archive, so a profile lives as long as it is in the "
    f"archive: {_JOB} deletes the ingestion days older than {_RETENTION.archive_days} days "
    "(`retention.archive_days`) from both tables together. The replaced and deleted files stay readable "
    f"through Delta time travel until {_VACUUM}.",
)

STORES: tuple[Store, ...] = (
    SOURCE,
    KAFKA_PROFILES,
    KAFKA_DEAD_LETTERS,
    MONGO_PROFILES,
    MONGO_LATEST_PROFILES,
    MONGO_DEAD_LETTERS,
    MONGO_NEWEST_DEAD_LETTERS,
    MONGO_DEAD_LETTER_TALLIES,
    CASSANDRA_PROFILES,
    SPEED_PARTIALS,
    SPEED_WINDOWS,
    STREAM_BATCHES,
    BATCH_CURRENT,
    ERASURE_CORRECTIONS,
    BATCH_AGGREGATES,
    BATCH_WINDOW_AGGREGATES,
    BATCH_WINDOWS,
    SCHEMA_MIGRATIONS,
    SUBJECT_KEYS,
    ERASURES,
    DELTA_ARCHIVE,
    DELTA_SILVER,
)
"""Every store, in the order of the data flow (the order of the rendered register)."""

# -- declarations ----------------------------------------------------------------------------------------

_D, _Q, _O = Category.DIRECT_IDENTIFIER, Category.QUASI_IDENTIFIER, Category.OTHER

_PROFILE_FIELDS: dict[str, tuple[Category, str]] = {
    "gender": (_Q, "gender (male or female)"),
    "name.title": (_Q, "form of address (Mr, Ms, Madame...)"),
    "name.first": (_D, "first name"),
    "name.last": (_D, "last name"),
    "location.street.number": (_D, "street number (part of the street address)"),
    "location.street.name": (_D, "street name (part of the street address)"),
    "location.city": (_Q, "city"),
    "location.state": (_Q, "state or region"),
    "location.country": (_Q, "country"),
    "location.postcode": (_Q, "postcode"),
    "location.coordinates.latitude": (_Q, "latitude, 4 decimals (about 10 m: as precise as an address)"),
    "location.coordinates.longitude": (_Q, "longitude, 4 decimals"),
    "location.timezone.offset": (_Q, "time zone offset"),
    "location.timezone.description": (_Q, "time zone description"),
    "email": (_D, "e-mail address"),
    "login.uuid": (_D, "the account's uuid: the subject's key in every store"),
    "login.username": (_D, "account user name"),
    "dob.date": (_Q, "date and time of birth"),
    "dob.age": (_Q, "age in years when fetched"),
    "registered.date": (_Q, "account registration instant"),
    "registered.age": (_Q, "years since registration when fetched"),
    "phone": (_D, "phone number"),
    "cell": (_D, "mobile phone number"),
    "id.name": (_O, "name of the national identifier scheme (SSN, INSEE, ...)"),
    "id.value": (_D, "national identification number (art. 87), null for some nationalities"),
    "picture.large": (_D, "portrait photo URL (large)"),
    "picture.medium": (_D, "portrait photo URL (medium)"),
    "picture.thumbnail": (_D, "portrait photo URL (thumbnail)"),
    "nat": (_Q, "nationality code"),
}
"""The fields of a randomuser.me 1.4 user (``core/profile.py``), credentials excluded: declared once for
every store that keeps the user as received."""

_CREDENTIALS: dict[str, str] = {
    "password": "account password in clear",
    "salt": "salt of the password hashes",
    "md5": "MD5 of password + salt",
    "sha1": "SHA-1 of password + salt",
    "sha256": "SHA-256 of password + salt",
}
"""``core.profile.CREDENTIAL_FIELDS``, the credentials the API sends (the test checks they match)."""


def _field(
    store: Store,
    field: str,
    category: Category,
    protection: Protection,
    purpose: Purpose,
    description: str,
) -> FieldDeclaration:
    return FieldDeclaration(store, field, category, protection, purpose, description, LEGITIMATE_INTEREST)


def _technical(store: Store, fields: dict[str, str], purpose: Purpose = OPERATIONS) -> list[FieldDeclaration]:
    """Fields that say nothing about a person, stored in clear."""
    return [_field(store, name, _O, Protection.NONE, purpose, text) for name, text in fields.items()]


def _user_as_received(store: Store, prefix: str) -> list[FieldDeclaration]:
    """The user's fields where a store keeps the user as received (in clear, for recomputation)."""
    declarations = []
    for path, (category, text) in _PROFILE_FIELDS.items():
        purpose = LINKAGE if path == "login.uuid" else MASTER_DATA
        declarations.append(_field(store, f"{prefix}{path}", category, Protection.NONE, purpose, text))
    return declarations


def _user_as_published(store: Store, prefix: str) -> list[FieldDeclaration]:
    """The user's fields where a store keeps the envelope as published: direct identifiers sealed."""
    sealed = {".".join(path) for path in SEALED_FIELDS}
    clear = [
        d
        for d in _user_as_received(store, prefix)
        if not any(d.field.removeprefix(prefix) == p or d.field.startswith(f"{prefix}{p}.") for p in sealed)
    ]
    return [
        *clear,
        _field(
            store,
            "sealed",
            _D,
            Protection.ENCRYPTED,
            MASTER_DATA,
            "the direct identifiers (" + ", ".join(sorted(sealed)) + "), AES-256-GCM under the subject's key",
        ),
    ]


def _transformed_profile(store: Store, partition: str, offset: str) -> list[FieldDeclaration]:
    """The fields of ``core.transformations.transform_profiles`` a store keeps (no full name)."""
    generalized, pseudonymized = Protection.GENERALIZED, Protection.PSEUDONYMIZED
    return [
        _field(store, "uuid", _D, Protection.NONE, LINKAGE, "login.uuid, in clear: the subject's key"),
        _field(store, "fetched_at", _O, Protection.NONE, ANALYTICS, "when the profile was fetched"),
        _field(
            store,
            "source",
            _O,
            Protection.NONE,
            ANALYTICS,
            "randomuser, synthetic or admin (userpulse profile create/update)",
        ),
        _field(store, "gender", _Q, Protection.NONE, ANALYTICS, "gender"),
        _field(store, "country", _Q, Protection.NONE, ANALYTICS, "country of the location"),
        _field(store, "nationality", _Q, Protection.NONE, ANALYTICS, "nationality code"),
        _field(store, "email_domain", _Q, generalized, ANALYTICS, "domain of the e-mail address"),
        _field(store, "age", _Q, generalized, ANALYTICS, "age in years, from the date of birth"),
        _field(store, "age_band", _Q, generalized, ANALYTICS, "age band (18-24, 25-34, ...)"),
        _field(store, "registration_date", _Q, generalized, ANALYTICS, "UTC date of the registration"),
        _field(store, "email_pseudonym", _D, pseudonymized, LINKAGE, "pseudonym of the e-mail (lower-cased)"),
        _field(store, "phone_pseudonym", _D, pseudonymized, LINKAGE, "pseudonym of the phone number"),
        _field(store, "cell_pseudonym", _D, pseudonymized, LINKAGE, "pseudonym of the mobile number"),
        _field(store, "address_pseudonym", _D, pseudonymized, LINKAGE, "pseudonym of the full address"),
        *_technical(
            store, {partition: "Kafka partition of the record", offset: "Kafka offset of the record"}
        ),
    ]


_MEASURES: dict[str, tuple[Category, str]] = {
    "profiles": (_O, "number of profiles with that value"),
    "age_sum": (_Q, "sum of their ages (the age when profiles = 1)"),
    "age_min": (_Q, "youngest age among them"),
    "age_max": (_Q, "oldest age among them"),
    "added_min": (_Q, "youngest age among the profiles added"),
    "added_max": (_Q, "oldest age among the profiles added"),
    "removals": (_O, "number of profiles removed from the value"),
    "ages": (_Q, "profiles per age (negative for a change that removed them)"),
}


def _aggregates(
    store: Store,
    keys: dict[str, str],
    measures: tuple[str, ...] = ("profiles", "age_sum", "age_min", "age_max", "ages"),
) -> list[FieldDeclaration]:
    """The fields of a view row (``core.aggregates``) a view keeps, after its own key fields."""
    aggregated = Protection.AGGREGATED
    return [
        *_technical(store, keys, ANALYTICS),
        _field(
            store, "value", _Q, aggregated, ANALYTICS, "a value of the dimension (a country, a domain...)"
        ),
        *(
            _field(store, name, _MEASURES[name][0], aggregated, ANALYTICS, _MEASURES[name][1])
            for name in measures
        ),
    ]


def _dead_letter_document(store: Store) -> list[FieldDeclaration]:
    """The fields of ``stores.documents.dead_letter_document`` and what the store adds to a letter."""
    return [
        *_technical(
            store,
            {
                "_id": "topic:partition:offset of the record",
                "job": "the streaming job that read it",
                "topic": "Kafka topic of the record",
                "partition": "Kafka partition of the record",
                "offset": "Kafka offset of the record",
                "kafka_timestamp": "Kafka timestamp of the record",
                "reason": "why the record could not be used",
                "stored_at": "when the dead letter was stored",
                "stored_hour": "the hour it was stored (what the counts over time group by)",
                "revalidated_at": "when a re-drive last validated it again (and gave it today's reason)",
                "redriven.at": "when a re-drive published it again",
                "redriven.published_as": "topic:partition:offset of its re-driven copy",
            },
            DATA_QUALITY,
        ),
        _field(store, "key", _D, Protection.NONE, DATA_QUALITY, "Kafka key as text: the uuid if any"),
        _field(
            store,
            "raw_value",
            _D,
            Protection.NONE,
            DATA_QUALITY,
            "the Kafka value as received: may be a whole envelope with every profile field, in clear",
        ),
    ]


def _raw_document(store: Store) -> list[FieldDeclaration]:
    """The fields of ``stores.documents.raw_document``: the user as received, envelope, coordinates."""
    return [
        _field(store, "_id", _D, Protection.NONE, LINKAGE, "login.uuid, in clear"),
        *_user_as_received(store, "user."),
        *_technical(
            store, {"source": "randomuser, synthetic or admin (userpulse profile create/update)"}, MASTER_DATA
        ),
        *_technical(store, {"fetched_at": "when the producer received the profile"}, ANALYTICS),
        *_technical(
            store,
            {
                "kafka.topic": "Kafka topic of the record",
                "kafka.partition": "Kafka partition of the record",
                "kafka.offset": "Kafka offset of the record",
                "ingested_at": "when the speed layer processed the record",
            },
        ),
    ]


_ENVELOPE_FIELDS: dict[str, str] = {
    "schema_version": "version of the envelope layout",
    "source": "randomuser, synthetic or admin (userpulse profile create/update)",
    "api_version": "the randomuser.me API version the profile was fetched with (its shape)",
    "fetched_at": "when the producer received the profile (the event time)",
}
_WINDOW = {"window_start": "start of the event-time window", "window_end": "end of the event-time window"}
_RECORD_KEY = "record key: login.uuid, in clear"
_RECORD_TIMESTAMP = "record timestamp, set by the producer client when sending"

DECLARATIONS: tuple[FieldDeclaration, ...] = (
    *(
        _field(SOURCE, f"login.{name}", _O, Protection.DROPPED, NO_PURPOSE, text)
        for name, text in _CREDENTIALS.items()
    ),
    # Kafka: the topics are the log both layers read.
    _field(KAFKA_PROFILES, "key", _D, Protection.NONE, LINKAGE, _RECORD_KEY),
    *_technical(KAFKA_PROFILES, {"timestamp": _RECORD_TIMESTAMP, **_ENVELOPE_FIELDS}, MASTER_DATA),
    *_user_as_published(KAFKA_PROFILES, "user."),
    _field(
        KAFKA_DEAD_LETTERS, "key", _D, Protection.NONE, LINKAGE, _RECORD_KEY + " (when the record has one)"
    ),
    *_technical(KAFKA_DEAD_LETTERS, {"timestamp": _RECORD_TIMESTAMP, **_ENVELOPE_FIELDS}, DATA_QUALITY),
    _field(KAFKA_DEAD_LETTERS, "reason", _O, Protection.NONE, DATA_QUALITY, "why validation failed"),
    _field(
        KAFKA_DEAD_LETTERS,
        "record",
        _D,
        Protection.NONE,
        DATA_QUALITY,
        "the record as received, credentials removed and, when it has a uuid, direct identifiers sealed "
        "(`sealed`): may hold any other field of a profile in clear, all of it when it has no uuid",
    ),
    _field(
        KAFKA_DEAD_LETTERS,
        "sealed",
        _D,
        Protection.ENCRYPTED,
        DATA_QUALITY,
        "the record's direct identifiers, AES-256-GCM under the subject's key (when the record has a uuid)",
    ),
    # MongoDB: the raw documents, their latest-profiles copy, the layers' dead letters and their copy.
    *_raw_document(MONGO_PROFILES),
    *_raw_document(MONGO_LATEST_PROFILES),
    *_dead_letter_document(MONGO_DEAD_LETTERS),
    *_dead_letter_document(MONGO_NEWEST_DEAD_LETTERS),
    *_technical(
        MONGO_DEAD_LETTER_TALLIES,
        {
            "_id": "layer|hour|reason",
            "job": "the layer that stored the letters",
            "reason": "why they could not be used",
            "hour": "the hour they were stored",
            "count": "how many of them are not re-driven",
        },
        DATA_QUALITY,
    ),
    # Cassandra: the speed layer's profiles and views, the batch views.
    *_transformed_profile(CASSANDRA_PROFILES, "kafka_partition", "kafka_offset"),
    *_technical(
        CASSANDRA_PROFILES,
        {
            "first_fetched_at": "when the first copy was fetched (the window it is counted in)",
            "first_partition": "Kafka partition of the first copy",
            "first_offset": "Kafka offset of the first copy",
            "counted": "whether the latest copy is counted (old enough)",
            "last_batch_id": "the micro-batch that last changed the row",
        },
    ),
    _field(
        CASSANDRA_PROFILES,
        "previous",
        _Q,
        Protection.PSEUDONYMIZED,
        OPERATIONS,
        "the row's state before its last micro-batch (the same derived fields and pseudonyms), so that a "
        "replayed batch starts from it",
    ),
    *_aggregates(
        SPEED_PARTIALS,
        {
            "dimension": "the dimension (country, gender, ...)",
            **_WINDOW,
            "batch_id": "micro-batch id",
            "task": "the task (Kafka partition) of the micro-batch",
        },
        measures=("profiles", "age_sum", "added_min", "added_max", "removals", "ages"),
    ),
    *_technical(SPEED_WINDOWS, {"dimension": "the dimension", "window_start": _WINDOW["window_start"]}),
    *_technical(
        STREAM_BATCHES,
        {
            "job": "streaming job name",
            "batch_id": "micro-batch id",
            "processed_at": "when the batch ran",
            "input_rows": "records read",
            "new_profiles": "profiles stored for the first time",
            "duplicates": "profiles already stored",
            "dead_lettered": "records sent to the dead letters",
            "under_age": "profiles under the minimum age (counted, not stored)",
            "late_rows_dropped": "rows dropped for lateness (always 0)",
            "duration_ms": "batch duration",
            "rows_per_s": "processing rate",
            "max_event_time": "newest fetched_at in the batch",
            "kafka_lag": "records behind the topic's end, per partition",
            "end_offsets": "the Kafka offsets after the batch, per partition",
            "windows": "the windows its partials changed",
        },
    ),
    *_technical(
        BATCH_CURRENT,
        {
            "view_name": "name of the view",
            "version": "its current version",
            "cutoff": "event time up to which the view is complete",
            "profiles": "profiles counted in the view",
            "computed_at": "when the version was made current",
            "speed_batch_id": "the last speed micro-batch whose records the view covers",
            "horizon": "the Kafka offsets the view covers, per partition",
            "erasures_seen": "the last erasure the view leaves out (sequence number)",
            "erasure_seq": "the sequence number of the last erasure",
        },
    ),
    *_technical(
        ERASURE_CORRECTIONS,
        {
            "view_name": "name of the view",
            "seq": "the erasure's sequence number",
            "speed_batch_id": "the speed layer's last micro-batch when the erasure ran",
            **{"window_start": _WINDOW["window_start"]},
        },
    ),
    _field(ERASURE_CORRECTIONS, "age", _Q, Protection.AGGREGATED, ANALYTICS, "the erased subject's age"),
    _field(
        ERASURE_CORRECTIONS,
        "dimension_values",
        _Q,
        Protection.AGGREGATED,
        ANALYTICS,
        "the erased subject's value of each dimension (country, gender, ...), no identifier",
    ),
    *_aggregates(BATCH_AGGREGATES, {"version": "view version", "dimension": "the dimension"}),
    *_aggregates(
        BATCH_WINDOW_AGGREGATES, {"version": "view version", "dimension": "the dimension", **_WINDOW}
    ),
    *_technical(
        BATCH_WINDOWS,
        {"version": "view version", "dimension": "the dimension", "window_start": _WINDOW["window_start"]},
    ),
    *_technical(
        SCHEMA_MIGRATIONS, {"version": "name of the applied CQL file", "applied_at": "when it was applied"}
    ),
    # Cassandra: crypto-shredding keys and the erasure log.
    _field(SUBJECT_KEYS, "uuid", _D, Protection.NONE, LINKAGE, "login.uuid, in clear: whose key it is"),
    _field(
        SUBJECT_KEYS, "data_key", _O, Protection.NONE, MASTER_DATA, "the subject's AES-256 key (random bytes)"
    ),
    *_technical(SUBJECT_KEYS, {"created_at": "when the producer created the key"}),
    _field(
        ERASURES,
        "subject_pseudonym",
        _D,
        Protection.PSEUDONYMIZED,
        LINKAGE,
        "keyed pseudonym of the erased subject's uuid",
    ),
    *_technical(
        ERASURES,
        {
            "erased_at": "when the erasure ran",
            "requested_by": "who asked for it (operator name or ticket given to the command)",
            "removed": "what each store removed (store -> count)",
        },
    ),
    # Delta Lake: the archive (the master dataset) and the silver profiles.
    _field(DELTA_ARCHIVE, "key", _D, Protection.NONE, LINKAGE, "Kafka key bytes: login.uuid, in clear"),
    _field(
        DELTA_ARCHIVE,
        "value",
        _D,
        Protection.ENCRYPTED,
        MASTER_DATA,
        f"Kafka value bytes: the envelope as on `{KAFKA_PROFILES.name}`, direct identifiers sealed",
    ),
    *_technical(
        DELTA_ARCHIVE,
        {
            "topic": "Kafka topic of the record",
            "partition": "Kafka partition of the record",
            "offset": "Kafka offset of the record",
            "kafka_timestamp": "Kafka timestamp of the record",
            "ingestion_date": "UTC date of the Kafka timestamp (the table's partition column)",
        },
    ),
    *_transformed_profile(DELTA_SILVER, "partition", "offset"),
    *_technical(DELTA_SILVER, {"ingestion_date": "UTC ingestion day of the archived record (partition)"}),
    _field(
        DELTA_SILVER,
        "subject_pseudonym",
        _D,
        Protection.PSEUDONYMIZED,
        LINKAGE,
        "keyed pseudonym of the uuid: how erasure finds the subject's rows without a uuid in the Delta log",
    ),
)
"""Every stored field of every store, once."""


# -- checks and queries ----------------------------------------------------------------------------------


def duplicate_declarations(declarations: Iterable[FieldDeclaration]) -> list[tuple[str, str]]:
    """(store, field) pairs declared more than once: each must be declared exactly once."""
    counts = Counter((d.store.title, d.field) for d in declarations)
    return sorted(pair for pair, count in counts.items() if count > 1)


def unknown_stores(declarations: Iterable[FieldDeclaration], stores: Sequence[Store]) -> list[str]:
    """Stores of declarations that are missing from ``stores`` (so the rendering would skip them)."""
    known = set(stores)
    return sorted({d.store.name for d in declarations if d.store not in known})


def declarations_of(store: Store) -> list[FieldDeclaration]:
    """The declarations of one store, in declaration order."""
    return [d for d in DECLARATIONS if d.store == store]


def declared_fields() -> dict[tuple[StoreKind, str], set[str]]:
    """The declared field names of each store, keyed like ``Store.key``."""
    fields: dict[tuple[StoreKind, str], set[str]] = {store.key: set() for store in STORES}
    for declaration in DECLARATIONS:
        fields[declaration.store.key].add(declaration.field)
    return fields


def clear_direct_identifiers(store: Store) -> list[str]:
    """The direct identifiers a store keeps in clear: what erasure must reach, and encryption should."""
    return [
        d.field
        for d in declarations_of(store)
        if d.category is Category.DIRECT_IDENTIFIER and d.protection is Protection.NONE
    ]


def register_mismatches(stored: Mapping[tuple[StoreKind, str], Iterable[str]]) -> list[str]:
    """What differs between the register and the fields each store really holds, one line per problem.

    ``stored`` maps each store's key to the fields found in it. A stored field that is not declared, a
    declared field that is no longer stored, a store that is written but not declared and a declared
    store that nothing writes are all problems; the source (not stored) is not compared.
    """
    declared = {key: fields for key, fields in declared_fields().items() if key[0] is not StoreKind.SOURCE}
    found = {key: set(fields) for key, fields in stored.items()}
    problems = [
        f"{kind} {name}: stored but not declared as a store"
        for kind, name in sorted(found.keys() - declared.keys())
    ]
    problems += [
        f"{kind} {name}: declared but not written by any code"
        for kind, name in sorted(declared.keys() - found.keys())
    ]
    for kind, name in sorted(declared.keys() & found.keys()):
        problems += [
            f"{kind} {name}: field {field!r} is stored but not declared"
            for field in sorted(found[kind, name] - declared[kind, name])
        ]
        problems += [
            f"{kind} {name}: field {field!r} is declared but no longer stored"
            for field in sorted(declared[kind, name] - found[kind, name])
        ]
    return problems


# -- rendering -------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text that cannot break a Markdown table row."""
    return text.replace("|", "\\|").replace("\n", " ")


def _table_rows(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


def _clear_summary(store: Store) -> str:
    fields = clear_direct_identifiers(store)
    if not fields:
        return "none"
    if len(fields) > 4:
        return f"{len(fields)} fields (see below)"
    return ", ".join(f"`{field}`" for field in fields)


def _field_row(d: FieldDeclaration) -> tuple[str, ...]:
    return (f"`{d.field}`", d.category, d.protection, d.purpose.name, d.legal_basis.article, d.description)


def render_markdown() -> str:
    """The register as Markdown: deterministic, so that a stale committed copy can be detected."""
    lines = [
        "# Register of processing (GDPR art. 30)",
        "",
        "Generated by `userpulse register` from the declarations in `privacy/register.py`: edit those, not "
        "this file. `tests/unit/privacy/test_register.py` fails when a stored field is not declared, a "
        "declared field is no longer stored, or this file is stale (`userpulse register --check`).",
        "",
        "Store names are the defaults of `core/settings.py`; a deployment may override them.",
        "",
        "## Processing",
        "",
        "- **Controller**: whoever operates a deployment (name and contact to be added per deployment).",
        "- **Data subjects**: the people described by randomuser.me user profiles (public test data) or by "
        "the synthetic source; in this demo none of them is a real person.",
        f"- **Legal basis** of every field: {LEGITIMATE_INTEREST.name}, GDPR {LEGITIMATE_INTEREST.article}: "
        f"{LEGITIMATE_INTEREST.justification}",
        "- **Recipients**: no one outside the deployment; the services bind 127.0.0.1 by default, the "
        "dashboard shows what `serving/` reads to its users.",
        "- **Transfers** to third countries: none by the platform (profiles are fetched from randomuser.me).",
        "- **Erasure** (art. 17): `userpulse forget <uuid>` or `--email` deletes the subject's data key "
        "(every sealed copy in the topic and the archive becomes unreadable), then its rows in every store "
        "below, and logs the erasure under a pseudonym; a uuid no store has seen is refused unless "
        "`--force` (an erasure before the data arrives: the producer then never publishes it).",
        "",
        "## Purposes",
        "",
        *_table_rows(("Purpose", "Why"), ((p.name, p.description) for p in PURPOSES)),
        "",
        "## Categories and protections",
        "",
        *_table_rows(("Category", "Meaning"), CATEGORY_MEANINGS.items()),
        "",
        *_table_rows(("Protection", "Meaning"), PROTECTION_MEANINGS.items()),
        "",
        "## Stores",
        "",
        *_table_rows(
            ("Store", "Written by", "Fields", "Direct identifiers in clear"),
            (
                (store.title, store.written_by, str(len(declarations_of(store))), _clear_summary(store))
                for store in STORES
            ),
        ),
    ]
    for store in STORES:
        lines += [
            "",
            f"### {store.title}",
            "",
            f"{store.content[0].upper()}{store.content[1:]}. Written by `{store.written_by}`.",
            "",
            f"**Retention**: {store.retention}",
            "",
            *_table_rows(
                ("Field", "Category", "Protection", "Purpose", "Legal basis", "What it is"),
                (_field_row(d) for d in declarations_of(store)),
            ),
        ]
    return "\n".join(lines) + "\n"


def is_stale(path: Path = REGISTER_PATH) -> bool:
    """Whether the file at ``path`` differs from the register rendered now (or does not exist)."""
    return not path.is_file() or path.read_text(encoding="utf-8") != render_markdown()


def write_register(path: Path = REGISTER_PATH) -> bool:
    """Write the rendered register to ``path``; returns whether the file changed."""
    if not is_stale(path):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(), encoding="utf-8")
    return True


_duplicates = duplicate_declarations(DECLARATIONS)
_unlisted = unknown_stores(DECLARATIONS, STORES)
if _duplicates or _unlisted:  # fail at import: a register with a double or orphan entry is not a register
    raise ValueError(f"register: declared twice {_duplicates}, stores missing from STORES {_unlisted}")
