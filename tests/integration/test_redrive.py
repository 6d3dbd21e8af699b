"""``userpulse dead-letters redrive`` on the real stack: dead letters of a limit since raised are
validated again, published once (however often the command runs), counted once by the speed layer; the
others keep today's reason; an erased subject's dead letter is never re-driven."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import SparkSession

from core.profile import profile_envelope
from core.settings import Settings
from core.stores import mongo_client, mongo_database
from core.subject_keys import subject_key_store
from ingestion.redrive import REDRIVE_SOURCE
from ingestion.synthetic import SyntheticSource
from tests.integration.pipeline import Pipeline
from tests.integration.processes import run_json

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
        "reason": OVER_THE_LIMIT, "selected": 6, "redriven": 4, "erased": 1,
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
