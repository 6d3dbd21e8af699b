"""Crypto-shredding and erasure against the real stores: a forgotten subject is found nowhere.

Profiles go the whole way (the real producer seals them with keys from Cassandra, the speed layer, the
archive, silver and the batch views); one subject is erased, and then every store is searched for its
identifiers: every MongoDB collection, every Cassandra table of the keyspace, every Parquet file and
log file under the lake (referenced or not), and the Kafka topic's readable content (what a reader
holding the remaining keys can open). The aggregates are compared before and after.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch_layer.archive import run_archive
from batch_layer.recompute import recompute_batch_views, refresh_silver_profiles
from core.sealing import unseal_identifiers
from core.settings import Settings
from infra.isolation import drop_own_stores, local_folder, own_stores_overrides
from ingestion.kafka_publisher import ProfilePublisher, ensure_topics
from ingestion.producer import ProfileProducer, Progress
from ingestion.synthetic import SyntheticSource
from orchestration.resources import PlatformSettings
from privacy.erasure import erase_subjects
from speed_layer.job import speed_layer_job
from stores.connections import cassandra_session, mongo_client
from stores.subject_keys import subject_key_store
from tests.integration.support.batch_views import merged_view
from tests.integration.support.kafka_helpers import read_topic
from tests.integration.support.pipeline import figures_of
from tests.integration.support.processes import cli_environment
from tests.integration.support.profiles_input import Copy, all_time, counted, recount

pytestmark = pytest.mark.integration

SEED = "erasure-test"
PROFILES = 60


@dataclass(frozen=True)
class ErasureCase:
    settings: Settings
    overrides: dict[str, str]


@pytest.fixture
def case(
    stack_settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[ErasureCase]:
    """Own topics, keyspace, MongoDB database, lake and checkpoints."""
    name = unique_name("erasure")
    overrides = {
        **own_stores_overrides(stack_settings, name, tmp_path),
        # One-second windows: profiles produced over a few seconds land in many windows.
        "profiles.window_duration": "1 second",
    }
    yield ErasureCase(PlatformSettings(overrides=overrides).settings(), overrides)
    drop_own_stores(stack_settings, name)


def produce(settings: Settings) -> Progress:
    """The same synthetic profiles every time (fixed seed), through the real producer, sealed."""
    topic, dlq = settings.kafka.profiles_topic, settings.kafka.dead_letter_topic
    ensure_topics(settings, {topic: 3, dlq: 1})
    with ProfilePublisher(settings, topic, dlq) as publisher, subject_key_store(settings) as keys:
        producer = ProfileProducer(SyntheticSource(SEED), publisher, 10, subject_keys=keys)
        return producer.run(count=PROFILES, rate_per_s=20)


def run_layers(settings: Settings, spark: SparkSession) -> None:
    with speed_layer_job(settings, spark) as job:
        job.run_until_consumed(timeout_s=600)
    run_archive(settings, spark)
    refresh_silver_profiles(settings, spark)
    recompute_batch_views(settings, spark)


def identifiers_of(user: dict[str, Any], uuid: str) -> list[str]:
    """The values that identify the subject on their own (names are checked as a pair, see below).
    Picture URLs are sealed too, but the sources reuse a hundred portraits, so they identify nobody."""
    values = [uuid, user["email"], user["phone"], user["cell"], user["login"]["username"]]
    values.append(uuid[:32])  # Delta truncates the strings of its min/max statistics to 32 characters
    if user["id"]["value"]:
        values.append(user["id"]["value"])
    return values


def found_in(text: str, user: dict[str, Any], identifiers: list[str]) -> list[str]:
    """Which identifiers ``text`` holds; the full name counts when first and last name are both there."""
    found = [value for value in identifiers if value in text]
    name = user["name"]
    if name["first"] in text and name["last"] in text:
        found.append(f"{name['first']} {name['last']}")
    return found


def mongo_texts(settings: Settings) -> Iterator[tuple[str, str]]:
    client = mongo_client(settings)
    try:
        database = client[settings.mongo.database]
        for collection in database.list_collection_names():
            for document in database[collection].find():
                yield f"MongoDB {collection}", json.dumps(document, default=str, ensure_ascii=False)
    finally:
        client.close()


def cassandra_texts(settings: Settings) -> Iterator[tuple[str, str]]:
    cluster, session = cassandra_session(settings)
    try:
        keyspace = settings.cassandra.keyspace
        tables = session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
        )
        for table in [row.table_name for row in tables]:
            for row in session.execute(f"SELECT * FROM {keyspace}.{table}"):
                yield f"Cassandra {table}", repr(tuple(row))
    finally:
        cluster.shutdown()


def lake_texts(spark: SparkSession, lake: Path) -> Iterator[tuple[str, str]]:
    """Every Parquet file under the lake read on its own (so unreferenced files count too), its values
    as text, binary ones decoded; and the text of every other file (the Delta logs)."""
    for path in sorted(p for p in lake.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            frame = spark.read.parquet(str(path))
            as_text = [
                F.col(f.name).cast("string")
                if f.dataType.simpleString() != "binary"
                else F.decode(f.name, "UTF-8")
                for f in frame.schema.fields
            ]
            for row in frame.select(F.concat_ws("|", *as_text).alias("text")).collect():
                yield str(path.relative_to(lake)), row["text"] or ""
        elif not path.name.endswith(".crc"):
            yield str(path.relative_to(lake)), path.read_text(errors="replace")


def kafka_readable_texts(settings: Settings) -> Iterator[tuple[str, str]]:
    """What a reader of the topic can read: the clear part of each record, and the sealed part of the
    records whose subject still has a key."""
    records = read_topic(settings, settings.kafka.profiles_topic)
    with subject_key_store(settings, enabled=True) as store:
        assert store is not None
        keys = store.keys_for([record.key for record in records if record.key])
    for record in records:
        readable = record.value
        if record.value.get("sealed") and record.key in keys:
            readable = unseal_identifiers(record.value["user"], record.value["sealed"], keys[record.key])
        yield (
            f"Kafka {record.partition}:{record.offset}",
            f"{record.key} {json.dumps(readable, ensure_ascii=False)}",
        )


def search_everywhere(
    settings: Settings, spark: SparkSession, user: dict[str, Any], uuid: str
) -> dict[str, list[str]]:
    """Where any of the subject's identifiers is found: place -> identifiers found there."""
    identifiers = identifiers_of(user, uuid)
    hits: dict[str, list[str]] = {}
    for texts in (
        mongo_texts(settings),
        cassandra_texts(settings),
        lake_texts(spark, local_folder(settings.paths.lake_dir)),
        kafka_readable_texts(settings),
    ):
        for place, text in texts:
            found = found_in(text, user, identifiers)
            if found:
                hits.setdefault(place, []).extend(found)
    return hits


def topic_copies(settings: Settings) -> list[Copy]:
    """Every record of the topic as the layers read it (opened with the subjects' keys)."""
    records = read_topic(settings, settings.kafka.profiles_topic)
    with subject_key_store(settings, enabled=True) as store:
        assert store is not None
        keys = store.keys_for([record.key for record in records if record.key])
    copies = []
    for record in records:
        envelope = dict(record.value)
        envelope["user"] = unseal_identifiers(envelope["user"], envelope["sealed"], keys[record.key])
        copies.append(Copy(envelope, record.partition, record.offset))
    return copies


def stored_profile(settings: Settings, uuid: str) -> dict[str, Any] | None:
    cluster, session = cassandra_session(settings)
    try:
        row = session.execute(
            f"SELECT * FROM {settings.cassandra.keyspace}.profiles WHERE uuid = %s", (uuid,)
        ).one()
        return row._asdict() if row is not None else None
    finally:
        cluster.shutdown()


def raw_users(settings: Settings) -> dict[str, dict[str, Any]]:
    client = mongo_client(settings)
    try:
        collection = client[settings.mongo.database][settings.mongo.raw_profiles_collection]
        return {document["_id"]: document["user"] for document in collection.find()}
    finally:
        client.close()


def test_an_erased_subject_is_found_nowhere_and_no_longer_counted(
    case: ErasureCase, spark: SparkSession
) -> None:
    settings = case.settings
    assert produce(settings).sent == PROFILES
    run_layers(settings, spark)
    copies = topic_copies(settings)
    assert merged_view(settings) == figures_of(all_time(recount(copies)))
    # A subject the batch view counts.
    uuid = sorted(counted(copies))[0]
    user = raw_users(settings)[uuid]
    # The search can find: before the erasure the subject is in the serving stores, in clear where
    # the design keeps it (raw documents), and nowhere in the topic's clear part.
    before = search_everywhere(settings, spark, user, uuid)
    assert any(place.startswith("MongoDB") for place in before)
    assert any(place.startswith("Kafka") for place in before)  # readable with the subject's key

    [report] = erase_subjects(settings, spark, [uuid], "test")

    assert report.removed["Cassandra subject_keys"] == 1
    assert report.removed["Cassandra profiles"] == 1
    assert report.removed["merged view corrections"] == 1
    assert report.removed[f"MongoDB {settings.mongo.raw_profiles_collection}"] == 1
    assert report.removed["Delta archive"] >= 1 and report.removed["Delta silver"] >= 1
    after = search_everywhere(settings, spark, user, uuid)
    # The records are still in the topic (it cannot be rewritten) under the subject's uuid, a random
    # account id that now links to nothing: every identifier in them is sealed under a deleted key.
    in_topic = {place: found for place, found in after.items() if place.startswith("Kafka")}
    assert in_topic and all(set(found) <= {uuid, uuid[:32]} for found in in_topic.values())
    assert {place: found for place, found in after.items() if place not in in_topic} == {}

    # The merged view stops counting the subject at once (its age out of the minimum and maximum too),
    # and a recomputation, which leaves the subject out, absorbs the correction.
    others = [copy for copy in copies if copy.uuid != uuid]
    assert merged_view(settings) == figures_of(all_time(recount(others)))
    recomputed = recompute_batch_views(settings, spark)
    assert recomputed.made_current
    assert merged_view(settings) == figures_of(all_time(recount(others)))

    # An erased subject stays erased: the same profiles produced again, its own is held back.
    again = produce(settings)
    assert (again.sent, again.refused_erased) == (PROFILES - 1, 1)


def run_userpulse(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``userpulse <arguments>`` on this test's topic, stores, lake and window length."""
    return subprocess.run(
        [sys.executable, "-m", "userpulse.cli", *arguments],
        env=cli_environment(
            settings,
            USERPULSE_PATHS__LAKE_DIR=str(settings.paths.lake_dir),
            USERPULSE_PROFILES__WINDOW_DURATION=settings.profiles.window_duration,
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_forget_by_email_from_the_command_line(case: ErasureCase, spark: SparkSession) -> None:
    settings = case.settings
    produce(settings)
    run_layers(settings, spark)
    uuid, user = sorted(raw_users(settings).items())[1]

    result = run_userpulse(
        settings, "forget", "--email", user["email"].upper(), "--requested-by", "ticket-42"
    )

    assert result.returncode == 0, result.stderr
    assert "subject_keys" in result.stdout and "profiles" in result.stdout
    assert uuid not in raw_users(settings)
    assert stored_profile(settings, uuid) is None
    archive = spark.read.format("delta").load(str(settings.paths.archive_table))
    assert archive.where(F.col("key") == F.lit(uuid.encode())).count() == 0
    assert archive.count() == PROFILES - 1
    cluster, session = cassandra_session(settings)
    try:
        [erasure] = list(session.execute(f"SELECT * FROM {settings.cassandra.keyspace}.erasures"))
    finally:
        cluster.shutdown()
    assert erasure.requested_by == "ticket-42" and erasure.removed["Cassandra profiles"] == 1
    assert uuid not in repr(tuple(erasure))

    # `userpulse profile delete` is the same erasure, by uuid
    other = sorted(raw_users(settings))[2]
    deleted = run_userpulse(settings, "profile", "delete", other)
    assert deleted.returncode == 0, deleted.stderr
    assert other not in raw_users(settings) and stored_profile(settings, other) is None
