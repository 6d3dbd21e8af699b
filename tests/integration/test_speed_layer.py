"""The speed layer against the real Kafka, Spark, Cassandra and FerretDB/MongoDB.

A known input (recorded real profiles, synthetic ones, duplicates, under-age profiles and a dozen kinds
of bad records) is produced to a fresh topic; the job consumes it; the stores are compared with an
independent recount in plain Python. Then the last batch is replayed and a job is SIGKILLed mid-stream
and restarted: the stores must not change.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cassandra import InvalidRequest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from pyspark.sql import SparkSession

from core.profile import strip_credentials
from core.settings import Settings
from core.stores import cassandra_session, mongo_client
from ingestion.synthetic import SyntheticSource
from speed_layer.job import speed_layer_job
from tests.integration.kafka_helpers import delete_topics
from tests.integration.processes import sigterm_once
from tests.randomuser_server import fixture_users

pytestmark = pytest.mark.integration

RECORDED = "codeacademyuz__randomuser_me_project__randomusers.json"
EVENT_BASE = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
DIMENSIONS = ("country", "gender", "nationality", "email_domain", "age_band")


# -- an independent recount --------------------------------------------------------------------------


def exact_age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def band(age: int) -> str:
    for upper, name in (
        (17, "<18"),
        (24, "18-24"),
        (34, "25-34"),
        (44, "35-44"),
        (54, "45-54"),
        (64, "55-64"),
    ):
        if age <= upper:
            return name
    return "65+"


def recount(first_copies: list[dict[str, Any]], on: date) -> dict[tuple[str, datetime, str], list[int]]:
    """(dimension, window start, value) -> [profiles, age sum, age min, age max] over adult first copies."""
    totals: dict[tuple[str, datetime, str], list[int]] = {}
    for envelope in first_copies:
        user = envelope["user"]
        age = exact_age(datetime.fromisoformat(user["dob"]["date"]).date(), on)
        if age < 18:
            continue
        fetched_at = datetime.fromisoformat(envelope["fetched_at"])
        window_start = fetched_at.replace(second=0, microsecond=0)
        values = {
            "country": user["location"]["country"],
            "gender": user["gender"],
            "nationality": user["nat"],
            "email_domain": user["email"].rsplit("@", 1)[1].lower(),
            "age_band": band(age),
        }
        for dimension, value in values.items():
            total = totals.setdefault((dimension, window_start, value), [0, 0, age, age])
            total[0] += 1
            total[1] += age
            total[2] = min(total[2], age)
            total[3] = max(total[3], age)
    return totals


# -- the input ---------------------------------------------------------------------------------------


@dataclass
class ProducedInput:
    """What was produced, in order, with the coordinates Kafka gave each record."""

    first_copies: dict[str, dict[str, Any]] = field(default_factory=dict)
    """uuid -> envelope of its first copy."""
    coordinates: dict[str, tuple[int, int]] = field(default_factory=dict)
    """uuid -> (partition, offset) of its first copy."""
    duplicates: int = 0
    bad: dict[tuple[int, int], str] = field(default_factory=dict)
    """(partition, offset) -> what is wrong with the record."""


def envelope(user: dict[str, Any], fetched_at: datetime, source: str = "randomuser") -> dict[str, Any]:
    return {
        "schema_version": 1,
        "source": source,
        "fetched_at": fetched_at.isoformat().replace("+00:00", "Z"),
        "user": strip_credentials(user),
    }


def known_input() -> tuple[
    list[tuple[str | None, bytes]], list[dict[str, Any]], list[tuple[str | None, bytes, str]]
]:
    """Good envelopes (with duplicates and under-age ones) and bad records, as (key, value) pairs."""
    recorded = fixture_users(RECORDED)
    synthetic = SyntheticSource(11, now=EVENT_BASE).next_batch(300)
    users = recorded + synthetic
    for user in synthetic[:5]:  # under age: counted, never stored
        user["dob"] = {"date": "2015-06-01T08:00:00.000Z", "age": 11}
    envelopes = [
        envelope(
            user, EVENT_BASE + timedelta(seconds=7 * index), "randomuser" if index < 111 else "synthetic"
        )
        for index, user in enumerate(users)
    ]
    # Re-fetched profiles: same uuid, later fetch time; only the first copy counts.
    duplicates = [
        {**copy.deepcopy(envelopes[index]), "fetched_at": (EVENT_BASE + timedelta(minutes=50)).isoformat()}
        for index in range(0, 250, 10)
    ]
    good = [(e["user"]["login"]["uuid"], json.dumps(e).encode()) for e in envelopes + duplicates]

    sample = envelopes[42]
    uuid = sample["user"]["login"]["uuid"]

    def variant(change: Callable[[dict[str, Any]], None]) -> bytes:
        changed = copy.deepcopy(sample)
        change(changed)
        return json.dumps(changed).encode()

    bad: list[tuple[str | None, bytes, str]] = [
        (None, b"not json at all", "not JSON"),
        (None, b"[1, 2, 3]", "JSON array"),
        (None, b"", "empty value"),
        (None, b"null", "JSON null"),
        (None, json.dumps(sample).encode()[:-25], "truncated JSON"),
        (None, variant(lambda e: e["user"]["login"].pop("uuid")), "no login.uuid"),
        (uuid, variant(lambda e: e.update(schema_version=99)), "unknown schema version"),
        (uuid, variant(lambda e: e["user"]["dob"].update(date="last tuesday")), "dob not a date"),
        (uuid, variant(lambda e: e["user"].pop("nat")), "no nationality"),
        ("not-" + uuid, variant(lambda e: None), "key differs from login.uuid"),
        (uuid, variant(lambda e: e.update(user="a string")), "user not an object"),
        (uuid, variant(lambda e: e.pop("fetched_at")), "no fetched_at"),
        (uuid, variant(lambda e: e["user"].pop("gender")), "no gender"),
    ]
    return good, envelopes + duplicates, bad


def produce_known_input(settings: Settings, topic: str) -> ProducedInput:
    good, _, bad = known_input()
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=5)
    produced = ProducedInput()
    bad_every = len(good) // len(bad)
    try:
        for index, (key, value) in enumerate(good):
            metadata = producer.send(topic, key=key.encode() if key else None, value=value).get(timeout=30)
            if key in produced.first_copies:
                produced.duplicates += 1
            else:
                produced.first_copies[key] = json.loads(value)
                produced.coordinates[key] = (metadata.partition, metadata.offset)
            if index % bad_every == 0 and index // bad_every < len(bad):
                bad_key, bad_value, what = bad[index // bad_every]
                metadata = producer.send(
                    topic, key=bad_key.encode() if bad_key else None, value=bad_value
                ).get(timeout=30)
                produced.bad[(metadata.partition, metadata.offset)] = what
    finally:
        producer.close()
    assert len(produced.bad) == len(bad)
    return produced


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def speed_settings(
    stack_settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Settings]:
    """Settings with a fresh topic, keyspace, collections and checkpoint folder; all removed after."""
    name = unique_name("speed")
    settings = stack_settings.model_copy(
        update={
            "kafka": stack_settings.kafka.model_copy(update={"profiles_topic": name}),
            "cassandra": stack_settings.cassandra.model_copy(update={"keyspace": name}),
            "mongo": stack_settings.mongo.model_copy(
                update={
                    "raw_profiles_collection": f"{name}_profiles",
                    "dead_letters_collection": f"{name}_dlq",
                }
            ),
            "speed_layer": stack_settings.speed_layer.model_copy(update={"max_offsets_per_trigger": 120}),
            "paths": stack_settings.paths.model_copy(update={"checkpoints_dir": tmp_path / "checkpoints"}),
        }
    )
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    admin.close()
    yield settings
    delete_topics(settings, name)
    cluster, session = cassandra_session(settings)
    session.execute(f"DROP KEYSPACE IF EXISTS {name}")
    cluster.shutdown()
    with mongo_client(settings) as client:
        client[settings.mongo.database].drop_collection(settings.mongo.raw_profiles_collection)
        client[settings.mongo.database].drop_collection(settings.mongo.dead_letters_collection)


# -- reading the stores back -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredState:
    aggregates: dict[tuple[str, datetime, str], list[int]]
    profiles: dict[str, dict[str, Any]]
    documents: dict[str, dict[str, Any]]
    dead_letters: dict[tuple[int, int], dict[str, Any]]
    batches: list[dict[str, Any]]


def stored_state(settings: Settings) -> StoredState:
    keyspace = settings.cassandra.keyspace
    cluster, session = cassandra_session(settings)
    try:
        aggregates: dict[tuple[str, datetime, str], list[int]] = {}
        for row in session.execute(f"SELECT * FROM {keyspace}.speed_aggregates"):
            key = (row.dimension, row.window_start.replace(tzinfo=UTC), row.value)
            total = aggregates.setdefault(key, [0, 0, row.age_min, row.age_max])
            total[0] += row.profiles
            total[1] += row.age_sum
            total[2] = min(total[2], row.age_min)
            total[3] = max(total[3], row.age_max)
        profiles = {row.uuid: row._asdict() for row in session.execute(f"SELECT * FROM {keyspace}.profiles")}
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


def committed_batches(settings: Settings) -> int:
    """Micro-batches the job has stored metrics for (0 before it created its keyspace)."""
    try:
        return len(stored_state(settings).batches)
    except InvalidRequest:
        return 0


def run_until_consumed(spark: SparkSession, settings: Settings) -> None:
    with speed_layer_job(settings, spark) as job:
        job.run_until_consumed(timeout_s=600)


def assert_matches_input(state: StoredState, produced: ProducedInput) -> None:
    adults = {
        uuid: e
        for uuid, e in produced.first_copies.items()
        if exact_age(datetime.fromisoformat(e["user"]["dob"]["date"]).date(), EVENT_BASE.date()) >= 18
    }
    assert state.aggregates == recount(list(produced.first_copies.values()), EVENT_BASE.date())
    assert set(state.profiles) == set(adults)
    assert set(state.documents) == set(adults)
    for uuid, document in state.documents.items():
        assert document["user"] == adults[uuid]["user"]
        assert (document["kafka"]["partition"], document["kafka"]["offset"]) == produced.coordinates[uuid]
    assert set(state.dead_letters) == set(produced.bad)
    assert all(letter["reason"] for letter in state.dead_letters.values())
    assert sum(b["new_profiles"] for b in state.batches) == len(adults)
    assert sum(b["under_age"] for b in state.batches) == len(produced.first_copies) - len(adults)
    assert sum(b["dead_lettered"] for b in state.batches) == len(produced.bad)
    assert sum(b["duplicates"] for b in state.batches) == produced.duplicates


def test_speed_layer_stores_exactly_the_recount(spark: SparkSession, speed_settings: Settings) -> None:
    produced = produce_known_input(speed_settings, speed_settings.kafka.profiles_topic)

    run_until_consumed(spark, speed_settings)

    state = stored_state(speed_settings)
    assert_matches_input(state, produced)
    assert len(state.batches) > 3  # several micro-batches: duplicates crossed batch boundaries
    reasons = {
        produced.bad[coordinates]: letter["reason"] for coordinates, letter in state.dead_letters.items()
    }
    assert reasons["not JSON"].startswith("not JSON")
    assert "uuid" in reasons["no login.uuid"]
    assert "schema_version" in reasons["unknown schema version"]
    assert "dob.date" in reasons["dob not a date"]
    assert "nat" in reasons["no nationality"]
    assert "key" in reasons["key differs from login.uuid"]
    assert state.dead_letters[next(c for c, w in produced.bad.items() if w == "not JSON")]["raw_value"] == (
        b"not json at all"
    )
    # No plaintext identifier reaches Cassandra.
    plaintext = set()
    for e in produced.first_copies.values():
        user = e["user"]
        plaintext |= {user["email"], user["phone"], user["cell"], user["name"]["first"], user["name"]["last"]}
        plaintext.add(user["location"]["street"]["name"].strip())
    stored_text = {str(value) for profile in state.profiles.values() for value in profile.values()}
    assert not {text for text in stored_text if any(p in text for p in plaintext if len(p) > 3)}

    # Running again finds nothing new and changes nothing.
    run_until_consumed(spark, speed_settings)
    again = stored_state(speed_settings)
    assert (again.aggregates, again.profiles.keys(), again.documents.keys()) == (
        state.aggregates,
        state.profiles.keys(),
        state.documents.keys(),
    )


def job_environment(settings: Settings, max_offsets_per_trigger: int) -> dict[str, str]:
    """The environment of a ``userpulse speed`` subprocess that uses the test's topic and stores."""
    environment = {
        **os.environ,
        "USERPULSE_KAFKA__HOST": settings.kafka.host,
        "USERPULSE_KAFKA__PORT": str(settings.kafka.port),
        "USERPULSE_KAFKA__PROFILES_TOPIC": settings.kafka.profiles_topic,
        "USERPULSE_CASSANDRA__HOST": settings.cassandra.host,
        "USERPULSE_CASSANDRA__PORT": str(settings.cassandra.port),
        "USERPULSE_CASSANDRA__KEYSPACE": settings.cassandra.keyspace,
        "USERPULSE_MONGO__HOST": settings.mongo.host,
        "USERPULSE_MONGO__PORT": str(settings.mongo.port),
        "USERPULSE_MONGO__RAW_PROFILES_COLLECTION": settings.mongo.raw_profiles_collection,
        "USERPULSE_MONGO__DEAD_LETTERS_COLLECTION": settings.mongo.dead_letters_collection,
        "USERPULSE_SPEED_LAYER__MAX_OFFSETS_PER_TRIGGER": str(max_offsets_per_trigger),
        "USERPULSE_PATHS__CHECKPOINTS_DIR": str(settings.paths.checkpoints_dir),
        "USERPULSE_SPARK__DRIVER_MEMORY": "1g",
    }
    if settings.mongo.username:  # testcontainers' MongoDB requires credentials
        environment["USERPULSE_MONGO__USERNAME"] = settings.mongo.username
        environment["USERPULSE_MONGO__PASSWORD"] = settings.mongo.password.get_secret_value()
    return environment


def test_a_replayed_batch_changes_nothing(spark: SparkSession, speed_settings: Settings) -> None:
    produced = produce_known_input(speed_settings, speed_settings.kafka.profiles_topic)
    run_until_consumed(spark, speed_settings)
    before = stored_state(speed_settings)

    # Forget that the last two batches committed, as after a crash between their writes and the commit.
    commits = speed_settings.paths.checkpoints_dir / speed_settings.speed_layer.job_name / "commits"
    for last in sorted((p for p in commits.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))[-2:]:
        last.unlink()
        (commits / f".{last.name}.crc").unlink(missing_ok=True)
    run_until_consumed(spark, speed_settings)

    after = stored_state(speed_settings)
    assert after.aggregates == before.aggregates
    assert_matches_input(
        StoredState(after.aggregates, after.profiles, after.documents, after.dead_letters, before.batches),
        produced,
    )


def test_sigkill_mid_stream_then_restart_counts_everything_once(
    spark: SparkSession, speed_settings: Settings
) -> None:
    produced = produce_known_input(speed_settings, speed_settings.kafka.profiles_topic)
    environment = job_environment(speed_settings, max_offsets_per_trigger=40)
    process = subprocess.Popen(
        [sys.executable, "-m", "userpulse.cli", "speed"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the Spark JVM is in its group: SIGKILL takes both down at once
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and committed_batches(speed_settings) < 3:
            assert process.poll() is None, "the speed layer exited before it was killed"
            time.sleep(0.3)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    killed_after = len(stored_state(speed_settings).batches)
    assert killed_after >= 3

    run_until_consumed(spark, speed_settings)  # the restart resumes from the checkpoint

    state = stored_state(speed_settings)
    assert len(state.batches) > killed_after
    assert_matches_input(state, produced)
    shutil.rmtree(speed_settings.paths.checkpoints_dir, ignore_errors=True)


def test_sigterm_stops_between_batches(speed_settings: Settings) -> None:
    produce_known_input(speed_settings, speed_settings.kafka.profiles_topic)
    process = subprocess.Popen(
        [sys.executable, "-m", "userpulse.cli", "speed"],
        env=job_environment(speed_settings, max_offsets_per_trigger=40),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = sigterm_once(process, lambda: committed_batches(speed_settings) >= 2)

    assert process.returncode == 0, stderr
    assert "SIGTERM: stopping after the current batch" in stderr
    checkpoint = speed_settings.paths.checkpoints_dir / speed_settings.speed_layer.job_name
    planned = {p.name for p in (checkpoint / "offsets").iterdir() if p.name.isdigit()}
    committed = {p.name for p in (checkpoint / "commits").iterdir() if p.name.isdigit()}
    assert planned == committed  # no batch was cut off half-way
