"""``userpulse dead-letters redrive`` on the real stack: dead letters of a limit since raised, the
layers' and the producer's, are validated again, published once (however often the command runs),
counted once by the speed layer; the others keep today's reason; an erased subject's dead letter is
never re-driven."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import SparkSession

from core.profile import profile_envelope
from core.settings import Settings
from ingestion.redrive import REDRIVE_SOURCE
from ingestion.synthetic import SyntheticSource
from stores.connections import mongo_client, mongo_database
from stores.subject_keys import subject_key_store
from tests.integration.support.pipeline import Pipeline
from tests.integration.support.processes import cli_environment, run_json

pytestmark = pytest.mark.integration

BASE = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
SMALL_LIMIT = 500
"""Below any profile's size (~1 KB): every profile of the test is a dead letter at first."""
OVER_THE_LIMIT = f"record over the limit of {SMALL_LIMIT} bytes"
RAISED = {"USERPULSE_PROFILES__MAX_RECORD_BYTES": "262144"}


def redriven_records(settings: Settings) -> list[tuple[str, dict[str, bytes]]]:
    """(key, headers) of every record of the profiles topic published by a re-drive."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, consumer_timeout_ms=3_000)
    try:
        partitions = [TopicPartition(settings.kafka.profiles_topic, p) for p in range(3)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records = []
        for record in consumer:
            headers = dict(record.headers or [])
            if headers.get("userpulse-source") == REDRIVE_SOURCE.encode():
                records.append((record.key.decode(), headers))
        return records
    finally:
        consumer.close()


def stored_uuids(settings: Settings) -> set[str]:
    client = mongo_client(settings)
    try:
        profiles = mongo_database(client, settings)[settings.mongo.raw_profiles_collection]
        return {document["_id"] for document in profiles.find({}, {"_id": 1})}
    finally:
        client.close()


def test_a_redrive_publishes_what_now_passes_once_and_never_an_erased_subjects_record(
    spark: SparkSession, own_stores: Callable[..., Settings]
) -> None:
    settings = own_stores("redrive", profiles={"max_record_bytes": SMALL_LIMIT})
    pipeline = Pipeline(settings, spark)
    users = SyntheticSource(61, now=BASE).next_batch(7)
    pipeline.produce(
        {"user": user, "fetched_at": BASE + timedelta(seconds=i)} for i, user in enumerate(users[:6])
    )
    # Over the limit and, once the limit is raised, still refused for a field of its own.
    odd = {**users[6], "gender": "unknown"}
    odd_value = profile_envelope(odd, "synthetic", BASE, "1.4").value()
    assert len(odd_value) > SMALL_LIMIT
    pipeline.produce_bad(odd_value, key=odd["login"]["uuid"])
    pipeline.speed()
    assert stored_uuids(settings) == set()
    assert run_json(settings, "dead-letters reasons") == [
        {"layer": "speed", "reason": OVER_THE_LIMIT, "dead_letters": 7}
    ]

    uuids = [user["login"]["uuid"] for user in users[:6]]
    pipeline.erase(uuids[0])  # an erasure deletes the subject's dead letters
    with subject_key_store(settings, enabled=True) as keys:
        assert keys is not None
        keys.delete_key(uuids[1])  # an erasure stopped after shredding the key: its dead letter is left

    command = f"dead-letters redrive --reason {shlex.quote(OVER_THE_LIMIT)}"
    expected = {
        "reason": OVER_THE_LIMIT, "selected": 6, "from_producer": 0, "redriven": 4, "erased": 1,
        "still_refused": {"user.gender: not male or female": 1},
    }  # fmt: skip
    assert run_json(settings, f"{command} --dry-run", **RAISED) == {**expected, "dry_run": True}
    assert redriven_records(settings) == []  # a dry run changes nothing
    assert run_json(settings, "dead-letters reasons")[0]["dead_letters"] == 6

    assert run_json(settings, command, **RAISED) == {**expected, "dry_run": False}
    published = redriven_records(settings)
    assert sorted(key for key, _ in published) == sorted(uuids[2:])
    reasons = run_json(settings, "dead-letters reasons")
    assert reasons == [{"layer": "speed", "reason": next(iter(expected["still_refused"])), "dead_letters": 1}]
    [letter] = run_json(settings, "dead-letters list")
    assert letter["value"].count("***") >= 1 and odd["email"] not in letter["value"]

    # Marked: a second run selects nothing and publishes nothing.
    again = run_json(settings, command, **RAISED)
    assert (again["selected"], again["redriven"]) == (0, 0)
    assert len(redriven_records(settings)) == 4
    redriven_as = {key: headers["userpulse-redrive-of"].decode() for key, headers in published}
    shown = run_json(settings, f"dead-letters show {redriven_as[uuids[2]]}")
    assert shown["redriven_as"].startswith(f"{settings.kafka.profiles_topic}:")

    # The speed layer, limit raised, counts each re-driven profile once; the erased ones not at all.
    pipeline.settings = settings.model_copy(
        update={"profiles": settings.profiles.model_copy(update={"max_record_bytes": 262_144})}
    )
    pipeline.speed()
    assert stored_uuids(settings) == set(uuids[2:])

    # A run that died after publishing and before marking publishes again: still counted once.
    client = mongo_client(settings)
    try:
        dead_letters = mongo_database(client, settings)[settings.mongo.dead_letters_collection]
        dead_letters.update_many({}, {"$unset": {"redriven": ""}})
    finally:
        client.close()
    assert run_json(settings, command, **RAISED)["redriven"] == 4
    assert len(redriven_records(settings)) == 8
    pipeline.speed()
    _, timeline = pipeline.merged()
    assert sum(timeline.values()) == 4
    assert stored_uuids(settings) == set(uuids[2:])


def producer_dead_letter_keys(settings: Settings) -> list[str]:
    """The keys (uuids) of the records of the producer's dead-letter topic."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, consumer_timeout_ms=3_000)
    try:
        topic = settings.kafka.dead_letter_topic
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return [record.key.decode() for record in consumer]
    finally:
        consumer.close()


def test_the_producers_dead_letters_are_redriven_from_its_topic_once_sealed_and_never_an_erased_one(
    spark: SparkSession, own_stores: Callable[..., Settings]
) -> None:
    settings = own_stores("redrive_producer")
    pipeline = Pipeline(settings, spark)
    # The producer itself refuses every profile (over a limit of 500 bytes): they go to its own topic.
    produced = subprocess.run(
        [sys.executable, "-m", "userpulse.cli", "produce", "--source", "synthetic", "--count", "5",
         "--seed", "62"],
        env=cli_environment(settings, USERPULSE_PROFILES__MAX_RECORD_BYTES=str(SMALL_LIMIT)),
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    uuids = producer_dead_letter_keys(settings)
    assert len(uuids) == 5 and redriven_records(settings) == []
    pipeline.erase(uuids[0])  # its letter stays in the topic, sealed under a key that is gone

    command = f"dead-letters redrive --reason {shlex.quote(OVER_THE_LIMIT)}"
    expected = {
        "reason": OVER_THE_LIMIT, "selected": 5, "from_producer": 5, "redriven": 4, "erased": 1,
        "still_refused": {},
    }  # fmt: skip
    assert run_json(settings, f"{command} --dry-run", **RAISED) == {**expected, "dry_run": True}
    assert redriven_records(settings) == []
    assert run_json(settings, command, **RAISED) == {**expected, "dry_run": False}
    published = redriven_records(settings)
    assert sorted(key for key, _ in published) == sorted(uuids[1:])
    topic = settings.kafka.dead_letter_topic
    assert all(headers["userpulse-redrive-of"].decode().startswith(f"{topic}:") for _, headers in published)

    # Marked in the dead-letter store: a second run publishes nothing; the marks are not counted as
    # letters. The erased subject's letter is found again (its topic keeps it, sealed under a key that
    # is gone, until retention) and never re-driven; nothing of that subject is written to mark it.
    again = run_json(settings, command, **RAISED)
    assert (again["selected"], again["redriven"], again["erased"]) == (1, 0, 1)
    assert len(redriven_records(settings)) == 4
    assert [r for r in run_json(settings, "dead-letters reasons") if r["layer"] != "producer"] == []

    # Sealed like any profile: the speed layer opens them and stores each once; the erased one never.
    pipeline.speed()
    assert stored_uuids(settings) == set(uuids[1:])
