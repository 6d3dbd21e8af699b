"""``userpulse profile`` against the real Kafka, Cassandra, MongoDB-compatible server and Spark.

Each test owns a topic, a keyspace (subject keys and ``profiles``), a MongoDB database and a lake folder,
and drives the CLI as a subprocess with those names. What the speed layer would have stored is inserted
by the test (the shape of ``stores.documents.raw_document``), so ``get`` and ``update`` read real stores
without depending on a streaming run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import param
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pymongo.database import Database
from pyspark.sql import SparkSession

from batch_layer.archive import run_archive
from core.profile import strip_credentials
from core.sealing import unseal_identifiers
from core.settings import Settings
from ingestion.synthetic import SyntheticSource
from privacy.erasure import seen_subjects
from serving.profile_page import ProfileLookup
from serving.profile_store import profile_history, profile_store
from speed_layer.job import speed_layer_job
from stores.connections import cassandra_session, mongo_client
from stores.subject_keys import subject_key_store
from tests.integration.support.kafka_helpers import TopicRecord, create_topic, read_topic
from tests.integration.support.processes import cli_environment

pytestmark = pytest.mark.integration

USERPULSE = [sys.executable, "-m", "userpulse.cli", "profile"]
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def profile_settings(own_stores: Callable[..., Settings]) -> Settings:
    """Settings with this test's own topic, keyspace, MongoDB database, lake and checkpoints."""
    return own_stores("profiles")


@pytest.fixture
def mongo(profile_settings: Settings) -> Iterator[Database]:
    client = mongo_client(profile_settings)
    yield client[profile_settings.mongo.database]
    client.close()


def run_cli(
    settings: Settings, *arguments: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``userpulse profile <arguments>`` on this test's topic, stores and lake."""
    return subprocess.run(
        [*USERPULSE, *arguments],
        env=cli_environment(
            settings,
            USERPULSE_KAFKA__DEAD_LETTER_TOPIC=settings.kafka.dead_letter_topic,
            USERPULSE_PATHS__LAKE_DIR=str(settings.paths.lake_dir),
        ),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def a_profile(seed: str) -> dict[str, Any]:
    return SyntheticSource(seed, now=T0).next_batch(1)[0]


def end_offsets(settings: Settings) -> dict[int, int]:
    """The topic's end offset per partition (what a write would move)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        topic = settings.kafka.profiles_topic
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def data_key(settings: Settings, uuid: str) -> bytes | None:
    with subject_key_store(settings, enabled=True) as key_store:
        assert key_store is not None
        return key_store.keys_for([uuid]).get(uuid)


def unsealed_user(record: TopicRecord, key: bytes) -> dict[str, Any]:
    return unseal_identifiers(record.value["user"], record.value["sealed"], key)


def store_as_the_speed_layer_would(settings: Settings, mongo: Database, user: dict[str, Any]) -> None:
    """The raw MongoDB document (profile in clear) and a pseudonymized Cassandra row of ``user``."""
    uuid = user["login"]["uuid"]
    mongo[settings.mongo.raw_profiles_collection].insert_one(
        {"_id": uuid, "user": strip_credentials(user), "source": "synthetic", "fetched_at": T0,
         "kafka": {"topic": settings.kafka.profiles_topic, "partition": 0, "offset": 0}, "ingested_at": T0}
    )  # fmt: skip
    with profile_store(settings):  # applies the schema of the test's keyspace
        pass
    cluster, session = cassandra_session(settings)
    try:
        session.execute(
            f"INSERT INTO {settings.cassandra.keyspace}.profiles "
            "(uuid, fetched_at, source, country, email_domain, age, email_pseudonym) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (uuid, T0, "synthetic", user["location"]["country"], user["email"].rsplit("@", 1)[1],
             user["dob"]["age"], "ab" * 32),
        )  # fmt: skip
    finally:
        cluster.shutdown()


def run_speed_layer(settings: Settings, spark: SparkSession) -> None:
    """The real speed layer over what the topic holds now (its checkpoint under the test's folder)."""
    with speed_layer_job(settings, spark) as job:
        job.run_until_consumed(timeout_s=300)


def test_create_update_and_history_go_through_the_topic_sealed(
    profile_settings: Settings, mongo: Database, spark: SparkSession, tmp_path: Path
) -> None:
    user = a_profile("create-update-history")
    uuid = user["login"]["uuid"]
    profile_file = tmp_path / "profile.json"
    profile_file.write_text(json.dumps(user), encoding="utf-8")

    # create: one sealed record keyed by the uuid, readable with the subject's new key only
    created = run_cli(profile_settings, "create", "--file", str(profile_file))

    assert created.returncode == 0, created.stderr
    assert f"created profile {uuid}" in created.stderr
    [record] = read_topic(profile_settings, profile_settings.kafka.profiles_topic)
    assert record.key == uuid
    assert (record.value["schema_version"], record.value["source"]) == (2, "admin")
    for identifier in (user["email"], user["phone"], user["cell"], user["name"]["last"]):
        assert identifier.encode() not in record.raw_value
    key = data_key(profile_settings, uuid)
    assert key is not None
    assert unsealed_user(record, key) == strip_credentials(user)

    # the same uuid again: refused, nothing published
    again = run_cli(profile_settings, "create", stdin=json.dumps(user))
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert sum(end_offsets(profile_settings).values()) == 1

    # update: the stored profile (as the speed layer stored it) with the changes, published as a
    # second sealed version
    run_speed_layer(profile_settings, spark)
    updated = run_cli(
        profile_settings, "update", uuid, "--set", "location.city=Lyon", "--set", "email=zoe.new@example.org"
    )

    assert updated.returncode == 0, updated.stderr
    records = read_topic(profile_settings, profile_settings.kafka.profiles_topic)
    assert len(records) == 2
    newest = max(records, key=lambda r: r.value["fetched_at"])
    assert b"zoe.new@example.org" not in newest.raw_value
    changed = unsealed_user(newest, key)
    assert (changed["location"]["city"], changed["email"]) == ("Lyon", "zoe.new@example.org")
    assert changed["name"] == user["name"] and changed["dob"] == user["dob"]

    # the speed layer keeps the newest version in the serving store (counted once), so `get` shows the
    # update and a second update starts from it
    run_speed_layer(profile_settings, spark)
    shown = json.loads(run_cli(profile_settings, "get", uuid, "--json").stdout)
    assert shown["raw_document"]["user"]["location"]["city"] == "Lyon"
    assert run_cli(profile_settings, "update", uuid, "--set", "location.state=Rhône").returncode == 0
    records = read_topic(profile_settings, profile_settings.kafka.profiles_topic)
    third = unsealed_user(max(records, key=lambda r: r.value["fetched_at"]), key)
    assert (third["location"]["city"], third["location"]["state"]) == ("Lyon", "Rhône")

    # an update that makes the profile invalid: every reason listed, nothing published
    offsets = end_offsets(profile_settings)
    broken = run_cli(profile_settings, "update", uuid, "--set", "email=broken", "--set", "dob.age=old")
    assert broken.returncode == 1
    assert "nothing was published" in broken.stderr
    assert "email:" in broken.stderr and "dob.age:" in broken.stderr
    assert end_offsets(profile_settings) == offsets

    # history: the three versions from the Delta archive, newest first, unsealed
    assert run_archive(profile_settings, spark).records == 3
    listed = run_cli(profile_settings, "history", uuid, "--json")

    assert listed.returncode == 0, listed.stderr
    versions = json.loads(listed.stdout)
    assert [v["status"] for v in versions] == ["unsealed"] * 3
    assert [v["user"]["location"]["city"] for v in versions] == ["Lyon", "Lyon", user["location"]["city"]]
    assert [v["user"]["email"] for v in versions] == ["zoe.new@example.org"] * 2 + [user["email"]]
    assert versions[0]["fetched_at"] > versions[1]["fetched_at"] > versions[2]["fetched_at"]

    # erasure shreds the key: the versions stay listed but unreadable, and nothing more is published
    with subject_key_store(profile_settings, enabled=True) as key_store:
        assert key_store is not None
        key_store.log_erasure(uuid, "test", {})
        key_store.delete_key(uuid)
    erased = profile_history(spark, profile_settings, uuid, data_key=None)
    assert [v.status for v in erased] == ["erased"] * 3
    assert all(v.user is not None and "email" not in v.user for v in erased)
    refused = run_cli(profile_settings, "update", uuid, "--set", "location.city=Paris")
    assert refused.returncode == 1
    assert "erased" in refused.stderr
    assert end_offsets(profile_settings) == offsets


def test_an_invalid_or_unknown_profile_writes_nothing(profile_settings: Settings, tmp_path: Path) -> None:
    create_topic(profile_settings, profile_settings.kafka.profiles_topic)
    user = a_profile("invalid")
    uuid = user["login"]["uuid"]
    invalid = {**user, "email": "not an e-mail"}
    del invalid["gender"]

    created = run_cli(profile_settings, "create", stdin=json.dumps(invalid))

    assert created.returncode == 1
    assert "not a valid profile, nothing was published" in created.stderr
    assert "email:" in created.stderr and "gender:" in created.stderr
    not_json = tmp_path / "profile.json"
    not_json.write_text("{oops", encoding="utf-8")
    assert run_cli(profile_settings, "create", "--file", str(not_json)).returncode == 1
    unknown = run_cli(profile_settings, "update", uuid, "--set", "location.city=Lyon")
    assert unknown.returncode == 1
    assert f"no profile {uuid}" in unknown.stderr
    assert sum(end_offsets(profile_settings).values()) == 0
    assert data_key(profile_settings, uuid) is None  # no key was created for a refused profile


def test_get_shows_the_serving_stores_copies_and_refuses_an_unknown_uuid(
    profile_settings: Settings, mongo: Database
) -> None:
    user = a_profile("get")
    uuid = user["login"]["uuid"]
    store_as_the_speed_layer_would(profile_settings, mongo, user)

    as_json = run_cli(profile_settings, "get", uuid, "--json")
    as_tables = run_cli(profile_settings, "get", uuid)
    unknown = run_cli(profile_settings, "get", "00000000-0000-4000-8000-000000000000")

    assert as_json.returncode == 0, as_json.stderr
    shown = json.loads(as_json.stdout)
    assert shown["raw_document"]["user"]["email"] == user["email"]
    assert shown["cassandra_row"]["email_pseudonym"] == "ab" * 32
    assert shown["cassandra_row"]["fetched_at"] == T0.isoformat()
    assert as_tables.returncode == 0, as_tables.stderr
    assert "MongoDB raw document" in as_tables.stdout and "Cassandra profiles row" in as_tables.stdout
    assert user["email"] in as_tables.stdout
    assert unknown.returncode == 1
    assert "no profile 00000000-0000-4000-8000-000000000000" in unknown.stderr


def test_the_dashboard_lookup_shows_the_stored_profile_masked(
    profile_settings: Settings, mongo: Database
) -> None:
    user = a_profile("dashboard")
    uuid = user["login"]["uuid"]
    store_as_the_speed_layer_would(profile_settings, mongo, user)

    with profile_store(profile_settings) as store:
        lookup = ProfileLookup(store, timeout_s=30)
        with param.parameterized.discard_events(lookup):  # the watcher needs a served page's loop
            lookup.uuid = uuid
        asyncio.run(lookup.look_up())
        found = lookup.result.object
        with param.parameterized.discard_events(lookup):
            lookup.uuid = "00000000-0000-4000-8000-000000000000"
        asyncio.run(lookup.look_up())
        missing = lookup.result.object

    assert 'data-testid="profile-raw"' in found and 'data-testid="profile-cassandra"' in found
    assert user["email"] not in found and user["phone"] not in found
    assert f"{user['email'][0]}***@" in found
    assert "profile-not-found" in missing


def erasure_logged(settings: Settings, uuid: str) -> bool:
    with subject_key_store(settings, enabled=True) as key_store:
        assert key_store is not None
        return uuid in key_store.erased([uuid])


def test_delete_of_a_uuid_no_store_has_seen_records_nothing_unless_forced(profile_settings: Settings) -> None:
    unknown = "00000000-0000-4000-8000-0000000000aa"

    refused = run_cli(profile_settings, "delete", unknown)

    assert refused.returncode == 1
    assert f"no store has seen {unknown}: nothing erased, nothing recorded" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert not erasure_logged(profile_settings, unknown)

    forced = run_cli(profile_settings, "delete", unknown, "--force")

    assert forced.returncode == 0, forced.stderr
    assert erasure_logged(profile_settings, unknown)  # the producer will never publish this subject


def test_a_subject_counts_as_seen_by_any_store_that_holds_it(
    profile_settings: Settings, mongo: Database, spark: SparkSession
) -> None:
    """Each uuid below is known to one store only (with sealing off, nothing but the archive may hold a
    subject that the speed layer has not processed yet)."""
    by_key, by_row, by_dead_letter, by_archive, never = (a_profile(s)["login"]["uuid"] for s in "krdan")
    assert data_key(profile_settings, by_key) is None
    with subject_key_store(profile_settings, enabled=True) as key_store:
        assert key_store is not None
        key_store.keys_creating_missing([by_key])
    row_user = a_profile("r")
    store_as_the_speed_layer_would(profile_settings, mongo, row_user)
    mongo[profile_settings.mongo.raw_profiles_collection].delete_one({"_id": by_row})  # the row alone
    mongo[profile_settings.mongo.dead_letters_collection].insert_one({"key": by_dead_letter, "reason": "x"})
    create_topic(profile_settings, profile_settings.kafka.profiles_topic)
    producer = KafkaProducer(bootstrap_servers=profile_settings.kafka.bootstrap_servers, acks="all")
    producer.send(profile_settings.kafka.profiles_topic, key=by_archive.encode(), value=b"{}").get(timeout=30)
    producer.close()
    run_archive(profile_settings, spark)
    cluster, session = cassandra_session(profile_settings)
    client = mongo_client(profile_settings)
    try:
        seen = seen_subjects(
            profile_settings, spark, session, client[profile_settings.mongo.database],
            [by_key, by_row, by_dead_letter, by_archive, never],
        )  # fmt: skip
    finally:
        client.close()
        cluster.shutdown()

    assert seen == {by_key, by_row, by_dead_letter, by_archive}
