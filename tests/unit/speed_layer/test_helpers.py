"""Pure helpers of the speed layer and of the CQL schema files."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
from cassandra.query import UNSET_VALUE
from pyspark.sql import Row

from core.sealing import new_data_key, seal_identifiers
from core.versions import ProfileState, Sighting
from speed_layer.executor import SUMMARY_ARROW_SCHEMA, outcome_of, summary_row
from speed_layer.job import kafka_lag
from speed_layer.task import TaskOutcome
from stores.cassandra_schema import cql_statements, migration_files
from stores.documents import dead_letter_document, raw_document
from stores.speed_views import PROFILE_COLUMNS, state_row

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_kafka_lag_per_partition_from_progress_offsets() -> None:
    end = json.dumps({"users.profiles": {"0": 120, "1": 80, "2": 100}})
    latest = json.dumps({"users.profiles": {"0": 150, "1": 80, "2": 130}})

    assert kafka_lag(end, latest) == {0: 30, 1: 0, 2: 30}
    assert kafka_lag(None, latest) == {}


def test_raw_document_keeps_the_user_as_received_with_coordinates() -> None:
    user = {"login": {"uuid": "u-1"}, "location": {"postcode": 5440}}
    row = {
        "uuid": "u-1",
        "raw_value": json.dumps({"source": "synthetic", "fetched_at": "x", "user": user}).encode(),
        "fetched_at": NOW,
        "topic": "t",
        "partition": 2,
        "offset": 17,
    }

    assert raw_document(row, NOW) == {
        "_id": "u-1",
        "user": user,
        "source": "synthetic",
        "fetched_at": NOW,
        "kafka": {"topic": "t", "partition": 2, "offset": 17},
        "ingested_at": NOW,
    }


def test_dead_letter_document_is_keyed_by_kafka_coordinates() -> None:
    row = {
        "topic": "t",
        "partition": 1,
        "offset": 5,
        "kafka_timestamp": NOW,
        "kafka_key": None,
        "raw_value": bytearray(b"not json"),
        "dead_letter_reason": "not JSON",
    }

    document = dead_letter_document(row, "speed")

    assert document["_id"] == "t:1:5"
    assert document["raw_value"] == b"not json"
    assert (document["reason"], document["job"]) == ("not JSON", "speed")


def test_cql_statements_drop_comments_and_split() -> None:
    cql = "-- a comment\nCREATE TABLE a (x int PRIMARY KEY); -- why\n\nCREATE TABLE b (y int PRIMARY KEY);"

    assert cql_statements(cql) == ["CREATE TABLE a (x int PRIMARY KEY)", "CREATE TABLE b (y int PRIMARY KEY)"]


def test_every_schema_file_is_versioned_and_idempotent() -> None:
    files = migration_files()

    assert files and [f.name[:3] for f in files] == [f"{n:03d}" for n in range(1, len(files) + 1)]
    for path in files:
        for statement in cql_statements(path.read_text()):
            assert "IF NOT EXISTS" in statement or "IF EXISTS" in statement, statement


def test_a_sealed_raw_document_gets_its_identifiers_from_the_text_spark_opened() -> None:
    user = {
        "login": {"uuid": "u-2", "username": "ann1"},
        "email": "ann@example.org",
        "location": {"postcode": 5440, "street": {"number": 3, "name": "Rue X"}, "city": "Lyon"},
    }
    sealed_user, token = seal_identifiers(user, new_data_key())
    row = {
        "uuid": "u-2",
        "raw_value": json.dumps({"source": "randomuser", "user": sealed_user, "sealed": token}).encode(),
        "identifiers_text": json.dumps(
            {"email": "ann@example.org", "street": {"number": 3, "name": "Rue X"}, "username": "ann1"}
        ),
        "fetched_at": NOW,
        "topic": "t",
        "partition": 0,
        "offset": 1,
    }

    assert raw_document(row, NOW)["user"] == user  # as received: the postcode stays a number


def test_a_task_summary_crosses_arrow_and_comes_back_whole() -> None:
    outcome = TaskOutcome(2, 10, 117, 6, 2, 1, 1, 0, NOW, {NOW, NOW.replace(minute=1)})
    table = pa.RecordBatch.from_pylist([summary_row(outcome)], schema=SUMMARY_ARROW_SCHEMA)
    [row] = table.to_pylist()

    assert outcome_of(Row(**row)) == outcome


def test_a_new_uuids_row_leaves_its_empty_columns_unset_and_a_known_uuids_row_clears_them() -> None:
    sighting = Sighting(NOW, 0, 7)
    state = ProfileState(sighting, sighting, {"country": "France", "age": 40}, counted=True)

    new = dict(zip(PROFILE_COLUMNS, state_row("u-1", state, 3, None), strict=True))
    known = dict(zip(PROFILE_COLUMNS, state_row("u-1", state, 4, state), strict=True))

    # No stored row to clear: a null would only leave a tombstone.
    assert None not in new.values()
    assert new["phone_pseudonym"] is UNSET_VALUE and new["previous"] is UNSET_VALUE
    assert new["country"] == "France" and new["last_batch_id"] == 3
    # A later version overwrites what the stored row holds, nulls included.
    assert known["phone_pseudonym"] is None and UNSET_VALUE not in known.values()
    assert known["previous"] == state.to_json()
