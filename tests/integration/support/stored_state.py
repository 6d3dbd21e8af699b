"""Reading back what the speed layer stored in a test's own stores, and comparing it with a recount of
what was produced (``profiles_input``): nothing lost, nothing counted twice."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from core.settings import Settings
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session, mongo_client, mongo_database
from stores.speed_views import PROFILE_COLUMNS
from tests.integration.support.profiles_input import (
    AgeCounts,
    ProducedInput,
    counted,
    first_and_latest,
    recount,
)


@dataclass(frozen=True)
class StoredState:
    aggregates: AgeCounts
    """Profiles per age of each (dimension, window, value): the speed partials summed."""
    profiles: dict[str, dict[str, Any]]
    """The counted uuids' rows of ``profiles``."""
    documents: dict[str, dict[str, Any]]
    dead_letters: dict[tuple[int, int], dict[str, Any]]
    batches: list[dict[str, Any]]


def stored_state(settings: Settings) -> StoredState:
    keyspace = settings.cassandra.keyspace
    cluster, session = cassandra_session(settings)
    try:
        aggregates: AgeCounts = {}
        for row in session.execute(f"SELECT * FROM {keyspace}.speed_partials"):
            key = (row.dimension, row.window_start.replace(tzinfo=UTC), row.value)
            aggregates.setdefault(key, Counter()).update(dict(row.ages or {}))
        aggregates = {key: +ages for key, ages in aggregates.items() if +ages}
        profiles = {
            row.uuid: row._asdict()
            for row in session.execute(f"SELECT * FROM {keyspace}.profiles")
            if row.counted
        }
        batches = [row._asdict() for row in session.execute(f"SELECT * FROM {keyspace}.stream_batches")]
    finally:
        cluster.shutdown()
    with mongo_client(settings) as client:
        database = client[settings.mongo.database]
        documents = {d["_id"]: d for d in database[settings.mongo.raw_profiles_collection].find()}
        dead_letters = {
            (d["partition"], d["offset"]): d for d in database[settings.mongo.dead_letters_collection].find()
        }
    return StoredState(aggregates, profiles, documents, dead_letters, batches)


def assert_matches_input(state: StoredState, produced: ProducedInput) -> None:
    adults = counted(produced.copies)
    assert state.aggregates == recount(produced.copies)
    assert set(state.profiles) == set(adults)
    assert set(state.documents) == set(adults)
    for uuid, document in state.documents.items():
        # counted at its first copy, the raw document holds its latest
        _, latest = adults[uuid]
        assert document["user"] == latest.envelope["user"]
        assert (document["kafka"]["partition"], document["kafka"]["offset"]) == (
            latest.partition,
            latest.offset,
        )
    assert set(state.dead_letters) == set(produced.bad)
    assert all(letter["reason"] for letter in state.dead_letters.values())
    seen = first_and_latest(produced.copies)
    assert sum(b["new_profiles"] for b in state.batches) == len(adults)
    assert sum(b["under_age"] for b in state.batches) == len(seen) - len(adults)
    assert sum(b["dead_lettered"] for b in state.batches) == len(produced.bad)
    assert sum(b["duplicates"] for b in state.batches) == produced.duplicates


def copy_subject_keys(source: Settings, target: Settings) -> None:
    """The producer's subject keys (in the source keyspace) into the target keyspace as well."""
    cluster, session = cassandra_session(source)
    try:
        apply_schema(session, target.cassandra.keyspace, target.cassandra.keyspace_replication)
        insert = session.prepare(
            f"INSERT INTO {target.cassandra.keyspace}.subject_keys (uuid, data_key, created_at) "
            "VALUES (?, ?, ?)"
        )
        for row in session.execute(
            f"SELECT uuid, data_key, created_at FROM {source.cassandra.keyspace}.subject_keys"
        ):
            session.execute(insert, (row.uuid, row.data_key, row.created_at))
    finally:
        cluster.shutdown()


def speed_layer_output(settings: Settings) -> dict[str, Any]:
    """What the speed layer left in the stores, without what depends on when or where it ran."""
    cluster, session = cassandra_session(settings)
    try:
        keyspace = settings.cassandra.keyspace
        columns = [c for c in PROFILE_COLUMNS if c not in ("last_batch_id", "previous")]
        profiles = sorted(
            tuple(row) for row in session.execute(f"SELECT {', '.join(columns)} FROM {keyspace}.profiles")
        )
        batches = sorted(
            (row.input_rows, row.new_profiles, row.dead_lettered)
            for row in session.execute(f"SELECT * FROM {keyspace}.stream_batches")
        )
    finally:
        cluster.shutdown()
    with mongo_client(settings) as client:
        database = mongo_database(client, settings)
        documents = {
            d["_id"]: {k: v for k, v in d.items() if k != "ingested_at"}
            for d in database[settings.mongo.raw_profiles_collection].find()
        }
        letters = {
            d["_id"]: (d["reason"], d["job"]) for d in database[settings.mongo.dead_letters_collection].find()
        }
    return {"profiles": profiles, "batches": batches, "documents": documents, "dead_letters": letters}
