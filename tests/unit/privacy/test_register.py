"""The register of processing against what the code really stores, and against the committed Markdown.

The stored fields are derived from the code that writes each store, never copied by hand: the Kafka
messages the real publisher sends (its client replaced by a recorder), the MongoDB documents the real
speed-layer functions build and insert (into recording collections), the tables the real schema code
creates (through a recording Cassandra session), and the Delta tables the real batch functions write
on a tiny archive (local Spark, no service).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
import typer
from pymongo import UpdateOne
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from batch_layer.archive import archive_records
from batch_layer.recompute import refresh_silver_profiles
from core.parsing import dead_letter_records, parse_kafka_records
from core.profile import CREDENTIAL_FIELDS
from core.sealing import SEALED_FIELDS, new_data_key, open_token
from core.settings import CassandraSettings, Settings, get_settings
from core.spark import collect_dicts
from core.validation import RecordLimits
from ingestion.kafka_publisher import ProfilePublisher
from ingestion.producer import seal_dead_letters, seal_envelopes, split_batch
from ingestion.synthetic import SyntheticSource
from privacy import register as reg
from stores.cassandra_schema import apply_schema
from stores.documents import dead_letter_document, mongo_raw_store, raw_document
from tests.randomuser_server import FIXTURES_DIR
from userpulse.commands.register import register

FIXTURES = FIXTURES_DIR
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
Key = tuple[reg.StoreKind, str]

KAFKA_RECORD_METADATA = ("timestamp",)
"""What a Kafka record stores besides its key and value: a timestamp (the publisher sets none, so the
client stamps the send time). The publisher sends no headers."""


def flatten(document: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the leaves of a nested document (a value that is not a dict is a leaf)."""
    paths: set[str] = set()
    for name, value in document.items():
        path = f"{prefix}{name}"
        paths |= flatten(value, f"{path}.") if isinstance(value, dict) else {path}
    return paths


def schema_columns(statements: list[str]) -> dict[str, set[str]]:
    """The columns of each table once ``statements`` have run: ``CREATE TABLE``, ``ALTER TABLE ... ADD``
    and ``DROP`` (a column or a table)."""
    tables: dict[str, set[str]] = {}
    for statement in statements:
        created = cql_table_columns(statement)
        if created is not None:
            tables.setdefault(created[0], set()).update(created[1])
            continue
        altered = re.match(
            r"\s*ALTER\s+TABLE\s+([\w.]+)\s+(ADD|DROP)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?\(?(.*?)\)?\s*$",
            statement,
            re.I | re.S,
        )
        if altered is not None:
            table, verb, items = altered.groups()
            names = {item.split()[0] for item in re.split(r",(?![^<]*>)", items) if item.strip()}
            if verb.upper() == "ADD":
                tables.setdefault(table, set()).update(names)
            else:
                tables.setdefault(table, set()).difference_update(names)
            continue
        dropped = re.match(r"\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?([\w.]+)", statement, re.I)
        if dropped is not None:
            tables.pop(dropped.group(1), None)
    return tables


def cql_table_columns(statement: str) -> tuple[str, list[str]] | None:
    """(table, columns) of a ``CREATE TABLE`` statement, None for any other statement."""
    header = re.match(r"\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.]+)\s*\(", statement, re.I)
    if header is None:
        return None
    items, depth, current = [], 0, ""
    for char in statement[header.end() :]:
        if char in "(<":
            depth += 1
        elif char in ")>":
            if depth == 0:  # the parenthesis closing the column list
                break
            depth -= 1
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    columns = [
        item.split()[0] for item in items if item.strip() and not re.match(r"\s*PRIMARY\s+KEY", item, re.I)
    ]
    return header.group(1), columns


# -- recorders standing in for the clients -------------------------------------------------------------


class _Future:
    def add_callback(self, *_: Any) -> None:
        pass

    def add_errback(self, *_: Any) -> None:
        pass


class RecordingKafkaProducer:
    """Keeps what ``KafkaProducer.send`` is given."""

    sent: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **_: Any) -> None:
        pass

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> _Future:
        self.sent.append({"topic": topic, "key": key, "value": value})
        return _Future()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


class RecordingCollection:
    """Keeps the documents inserted; answers the few queries the raw store makes (find, sort, limit,
    delete by ``_id``), so its trimming runs too."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.inserted: list[dict[str, Any]] = []
        """Every document ever inserted, trimmed or not: what the collection has held."""

    def insert_many(self, documents: list[dict[str, Any]], ordered: bool = True) -> None:
        self.documents.extend(documents)
        self.inserted.extend(documents)

    def find(self, *_: Any) -> RecordingCursor:
        return RecordingCursor(list(self.documents))

    def update_one(self, query: dict[str, Any], update: dict[str, Any], upsert: bool = False) -> None:
        """``$set``, ``$inc`` and ``$setOnInsert`` on the document of an ``_id`` (created by an upsert):
        the fields it adds are held too."""
        assert list(query) == ["_id"], query
        assert set(update) <= {"$set", "$inc", "$setOnInsert"}, update
        matching = [document for document in self.documents if document["_id"] == query["_id"]]
        if not matching and upsert:
            matching = [{"_id": query["_id"], **update.get("$setOnInsert", {})}]
            self.documents.extend(matching)
        for document in matching:
            document.update(update.get("$set", {}))
            for field, step in update.get("$inc", {}).items():
                document[field] = document.get(field, 0) + step
            self.inserted.append({**document})

    def find_one_and_update(self, query: dict[str, Any], update: dict[str, Any]) -> dict[str, Any] | None:
        before = next(({**d} for d in self.documents if d["_id"] == query["_id"]), None)
        self.update_one(query, update)
        return before

    def bulk_write(self, requests: list[UpdateOne], ordered: bool = True) -> None:
        for request in requests:
            self.update_one(request._filter, request._doc, upsert=bool(request._upsert))

    def delete_many(self, query: dict[str, Any]) -> None:
        [(field, condition)] = query.items()
        assert field == "_id" and list(condition) == ["$nin"], query
        self.documents = [d for d in self.documents if d["_id"] in condition["$nin"]]


class RecordingCursor:
    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents

    def sort(self, field: str, direction: int) -> RecordingCursor:
        return RecordingCursor(sorted(self.documents, key=lambda d: d[field], reverse=direction < 0))

    def limit(self, count: int) -> RecordingCursor:
        return RecordingCursor(self.documents[:count])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.documents)


class RecordingDatabase:
    """Hands out one recording collection per name."""

    def __init__(self) -> None:
        self.collections: dict[str, RecordingCollection] = {}

    def __getitem__(self, name: str) -> RecordingCollection:
        return self.collections.setdefault(name, RecordingCollection())


class RecordingSession:
    """Keeps every CQL statement executed; every query answers no rows."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, statement: str, parameters: Any = None) -> list[Any]:
        self.statements.append(statement)
        return []


# -- what each store holds -----------------------------------------------------------------------------


def source_users() -> list[dict[str, Any]]:
    """Users as the source sends them: recorded API responses and synthetic ones, credentials included."""
    recorded = json.loads((FIXTURES / "codeacademyuz__randomuser_me_project__randomusers.json").read_text())
    return [*recorded["results"], *SyntheticSource(7, now=NOW).next_batch(21)]


DATA_KEYS = {user["login"]["uuid"]: new_data_key() for user in source_users()}
"""Each sample subject's data key, as the producer's key store would hand them out."""


def uuid_of(message: dict[str, Any]) -> str:
    return json.loads(message["value"])["user"]["login"]["uuid"]


def opened_text(message: dict[str, Any]) -> str:
    """The identifiers of a sealed message as Spark opens them (JSON text)."""
    uuid = uuid_of(message)
    return json.dumps(open_token(json.loads(message["value"])["sealed"], DATA_KEYS[uuid], uuid))


def sealed_paths(fields: set[str]) -> set[str]:
    """Those of ``fields`` (dotted user paths) that the producer seals."""
    prefixes = [".".join(path) for path in SEALED_FIELDS]
    return {f for f in fields if any(f == p or f.startswith(f"{p}.") for p in prefixes)}


def kafka_messages(settings: Settings, users: list[Any]) -> list[dict[str, Any]]:
    """The messages the real producer path (validation, minimization, publisher) sends for ``users``."""
    RecordingKafkaProducer.sent = []
    batch = split_batch(users, "synthetic", NOW, RecordLimits(), api_version="1.4")
    sealed, _ = seal_envelopes(batch.envelopes, DATA_KEYS)
    letters, _ = seal_dead_letters(batch.dead_letters, DATA_KEYS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("ingestion.kafka_publisher.KafkaProducer", RecordingKafkaProducer)
        publisher = ProfilePublisher(
            settings, settings.kafka.profiles_topic, settings.kafka.dead_letter_topic
        )
        for envelope in sealed:
            publisher.publish(envelope)
        for key, letter in letters:
            publisher.publish_dead_letter(letter, key)
        publisher.close()
    return RecordingKafkaProducer.sent


def message_fields(message: dict[str, Any], nested: bool) -> set[str]:
    value = json.loads(message["value"])
    fields = flatten(value) if nested else set(value)
    return fields | set(KAFKA_RECORD_METADATA) | ({"key"} if message["key"] is not None else set())


@dataclass(frozen=True)
class Observed:
    """What the real code wrote to each store for a sample of users."""

    fields: dict[Key, set[str]]
    """The fields each store holds, keyed like ``Store.key``."""
    silver_rows: list[dict[str, Any]]


@pytest.fixture(scope="module")
def observed(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Observed:
    """Write a sample through the real code of every store (clients replaced by recorders) and look."""
    base = get_settings()
    settings = base.model_copy(
        update={"paths": base.paths.model_copy(update={"lake_dir": str(tmp_path_factory.mktemp("lake"))})}
    )
    invalid = {**source_users()[0], "email": "not an address"}  # a dead letter, credentials included
    messages = kafka_messages(settings, [*source_users(), invalid])
    profiles = [m for m in messages if m["topic"] == settings.kafka.profiles_topic]
    letters = [m for m in messages if m["topic"] == settings.kafka.dead_letter_topic]
    assert profiles and letters
    fields: dict[Key, set[str]] = {
        reg.KAFKA_PROFILES.key: set().union(*(message_fields(m, nested=True) for m in profiles)),
        reg.KAFKA_DEAD_LETTERS.key: set().union(*(message_fields(m, nested=False) for m in letters)),
    }

    # MongoDB: every collection the speed layer's raw store writes, with the documents its own functions
    # build (raw documents, the latest-profiles copy, dead letters).
    database = RecordingDatabase()
    mongo = mongo_raw_store(database, settings)  # type: ignore[arg-type]
    mongo.insert_profiles(
        [
            raw_document(
                {"uuid": uuid_of(m), "raw_value": m["value"], "identifiers_text": opened_text(m),
                 "fetched_at": NOW, "topic": m["topic"], "partition": 0, "offset": offset},
                NOW,
            )
            for offset, m in enumerate(profiles)
        ]
    )  # fmt: skip
    kafka_rows = spark.createDataFrame(
        [
            (m["key"], m["value"], m["topic"], 0, offset, NOW, 0)
            for offset, m in enumerate([*profiles, {"key": None, "value": b"not json", "topic": "t"}])
        ],
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
        "timestampType int",
    )
    bad_rows = collect_dicts(dead_letter_records(parse_kafka_records(kafka_rows, RecordLimits())))
    assert bad_rows
    mongo.insert_dead_letters([dead_letter_document(row, "speed") for row in bad_rows], NOW)
    # What a re-drive adds to a dead letter (ingestion.redrive): where its copy went, or today's reason.
    letter_id = dead_letter_document(bad_rows[0], "speed")["_id"]
    mongo.mark_redriven(letter_id, NOW, "t:0:9")
    mongo.set_dead_letter_reason(letter_id, "a reason of today", NOW)
    for name, collection in database.collections.items():
        if collection.inserted:
            key = (reg.StoreKind.MONGODB_COLLECTION, f"{settings.mongo.database}.{name}")
            fields[key] = set().union(*(flatten(d) for d in collection.inserted))

    # Cassandra: every table the schema code creates (the CQL files and its own bookkeeping table).
    session = RecordingSession()
    keyspace = CassandraSettings().keyspace
    apply_schema(session, keyspace)  # type: ignore[arg-type]
    for table, columns in schema_columns(session.statements).items():
        fields[reg.StoreKind.CASSANDRA_TABLE, table] = columns

    # Delta: the archive as archive_records writes it, the silver table as the refresh writes it.
    # The archive of the valid messages (the batch layer would store the bad one's dead letter in MongoDB).
    archive_records(kafka_rows.where("topic != 't'")).write.format("delta").partitionBy(
        "ingestion_date"
    ).save(str(settings.paths.archive_table))
    refresh_silver_profiles(settings, spark, data_keys=DATA_KEYS)
    archive = spark.read.format("delta").load(str(settings.paths.archive_table))
    silver = spark.read.format("delta").load(str(settings.paths.silver_table))
    fields[reg.DELTA_ARCHIVE.key] = set(archive.columns)
    fields[reg.DELTA_SILVER.key] = set(silver.columns)
    return Observed(fields, collect_dicts(silver))


# -- the register against the stores -------------------------------------------------------------------


def test_every_stored_field_is_declared_and_every_declared_field_is_stored(observed: Observed) -> None:
    problems = reg.register_mismatches(observed.fields)

    assert not problems, "the register (privacy/register.py) does not match the stores:\n" + "\n".join(
        problems
    )


def test_mismatches_name_undeclared_and_stale_fields_and_stores() -> None:
    stored = {store.key: fields for store, fields in _declared_by_store().items()}
    stored[reg.CASSANDRA_PROFILES.key] = (stored[reg.CASSANDRA_PROFILES.key] - {"age"}) | {"full_name"}
    stored[reg.StoreKind.CASSANDRA_TABLE, "userpulse.key_vault"] = {"uuid", "data_key"}
    del stored[reg.DELTA_SILVER.key]

    problems = reg.register_mismatches(stored)

    assert problems == [
        "Cassandra table userpulse.key_vault: stored but not declared as a store",
        "Delta table .stack/lake/silver_profiles: declared but not written by any code",
        "Cassandra table userpulse.profiles: field 'full_name' is stored but not declared",
        "Cassandra table userpulse.profiles: field 'age' is declared but no longer stored",
    ]


def _declared_by_store() -> dict[reg.Store, set[str]]:
    return {
        store: {d.field for d in reg.declarations_of(store)}
        for store in reg.STORES
        if store.kind is not reg.StoreKind.SOURCE
    }


def test_only_the_credentials_are_dropped_and_no_store_holds_them(observed: Observed) -> None:
    dropped = {d.field for d in reg.DECLARATIONS if d.protection is reg.Protection.DROPPED}
    source_fields = set().union(*(flatten(user) for user in source_users()))
    published = {
        d.field.removeprefix("user.")
        for d in reg.declarations_of(reg.KAFKA_PROFILES)
        if d.field.startswith("user.")
    }

    assert dropped == {f"login.{name}" for name in CREDENTIAL_FIELDS}
    assert {d.field for d in reg.declarations_of(reg.SOURCE)} == dropped
    # Everything the source sends is either published (declared on the topic, in clear or sealed) or
    # declared dropped.
    assert "sealed" in {d.field for d in reg.declarations_of(reg.KAFKA_PROFILES)}
    assert source_fields == published | sealed_paths(source_fields) | dropped
    leaked = {
        (key, f)
        for key, fields in observed.fields.items()
        for f in fields
        if f.rsplit(".", 1)[-1] in CREDENTIAL_FIELDS
    }
    assert not leaked


def test_dead_letters_carry_the_record_without_its_credentials() -> None:
    invalid = {**source_users()[0], "email": "not an address"}
    [letter] = [m for m in kafka_messages(get_settings(), [invalid]) if m["topic"].endswith(".dlq")]

    record = json.loads(letter["value"])["record"]

    assert record["login"]["uuid"] == invalid["login"]["uuid"]
    assert not set(record["login"]) & set(CREDENTIAL_FIELDS)


def test_the_silver_table_holds_pseudonyms_and_no_clear_direct_identifier(observed: Observed) -> None:
    rows = observed.silver_rows
    users = {user["login"]["uuid"]: user for user in source_users()}
    pseudonymized = [
        d.field for d in reg.declarations_of(reg.DELTA_SILVER) if d.protection is reg.Protection.PSEUDONYMIZED
    ]

    assert rows and pseudonymized
    for row in rows:
        user = users[row["uuid"]]
        clear = {user["email"], user["phone"], user["cell"], user["name"]["first"], user["name"]["last"],
                 user["location"]["street"]["name"], user["login"]["username"]}  # fmt: skip
        assert not clear & {str(value) for value in row.values()}
        for field in pseudonymized:
            assert re.fullmatch(r"[0-9a-f]{64}", row[field]), (field, row[field])


def test_cql_table_columns_reads_column_lists_with_nested_types() -> None:
    statement = (
        "CREATE TABLE IF NOT EXISTS ks.t (\n  a text,\n  b map<int, bigint>,\n  c bigint,\n"
        "  PRIMARY KEY ((a, c), b)\n) WITH CLUSTERING ORDER BY (b DESC)"
    )

    assert cql_table_columns(statement) == ("ks.t", ["a", "b", "c"])
    assert cql_table_columns("CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {}") is None
    assert cql_table_columns("CREATE TABLE ks.u (x int PRIMARY KEY)") == ("ks.u", ["x"])


# -- the register itself -------------------------------------------------------------------------------


def test_each_field_is_declared_once_in_a_listed_store() -> None:
    declaration = reg.declarations_of(reg.CASSANDRA_PROFILES)[0]
    orphan = reg.Store(reg.StoreKind.DELTA_TABLE, "elsewhere", "nowhere", "nothing", "none")

    assert reg.duplicate_declarations(reg.DECLARATIONS) == []
    assert reg.unknown_stores(reg.DECLARATIONS, reg.STORES) == []
    assert reg.duplicate_declarations([declaration, declaration]) == [(reg.CASSANDRA_PROFILES.title, "uuid")]
    assert reg.unknown_stores(
        [reg.FieldDeclaration(**{**vars(declaration), "store": orphan})], reg.STORES
    ) == ["elsewhere"]


def test_every_declaration_is_complete() -> None:
    for d in reg.DECLARATIONS:
        assert d.description and d.retention and d.legal_basis.article and d.purpose in reg.PURPOSES, d
    assert set(reg.CATEGORY_MEANINGS) == set(reg.Category)
    assert set(reg.PROTECTION_MEANINGS) == set(reg.Protection)


def test_the_committed_register_is_current() -> None:
    committed = reg.REGISTER_PATH.read_text(encoding="utf-8") if reg.REGISTER_PATH.is_file() else ""

    assert committed == reg.render_markdown(), (
        "docs/register.md is stale: run `.venv/bin/userpulse register` and commit docs/register.md"
    )


def test_the_command_writes_the_register_and_its_check_fails_when_stale(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(register)
    path = tmp_path / "docs" / "register.md"
    runner = CliRunner()

    missing = runner.invoke(app, ["--check", "--path", str(path)])
    written = runner.invoke(app, ["--path", str(path)])
    fresh = runner.invoke(app, ["--check", "--path", str(path)])
    path.write_text(path.read_text() + "edited by hand\n")
    stale = runner.invoke(app, ["--check", "--path", str(path)])

    assert (missing.exit_code, written.exit_code, fresh.exit_code, stale.exit_code) == (1, 0, 0, 1)
    assert "run `userpulse register`" in " ".join(stale.output.split())
