"""One validation in three places: the producer, the speed layer and the batch layer give every record
the same verdict and the same reason, on the real Kafka, Spark and MongoDB-compatible store.

The same profiles (valid ones and every kind of bad one the issue lists) go through the producer's
split (which refuses the bad ones), and are also written to the topic as they are, as another client
could; the speed layer and the batch layer, each with its own dead-letter store, then read the topic.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from batch_layer.archive import run_archive
from batch_layer.recompute import refresh_silver_profiles
from core.profile import envelope_fields
from core.settings import Settings
from core.validation import RecordLimits
from ingestion.producer import split_batch, within_size_limit
from speed_layer.job import speed_layer_job
from stores.connections import mongo_client
from tests.integration.support.kafka_helpers import create_topic
from tests.randomuser_server import fixture_users

pytestmark = pytest.mark.integration

FETCHED_AT = datetime.now(UTC) - timedelta(minutes=5)


def kinds() -> dict[str, Any]:
    """A valid profile and one of each kind of bad one, as the source would serve them."""
    base = fixture_users("codeacademyuz__randomuser_me_project__randomusers.json")[:12]

    def changed(index: int, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        user = copy.deepcopy(base[index])
        change(user)
        return user

    return {
        "valid": base[0],
        "valid, API 1.3 without registered": changed(1, lambda u: u.pop("registered")),
        "missing uuid": changed(2, lambda u: u["login"].pop("uuid")),
        "uuid not a UUID": changed(3, lambda u: u["login"].update(uuid="not-a-uuid")),
        "birth in the future": changed(4, lambda u: u["dob"].update(date="2099-01-01T00:00:00.000Z")),
        "unparsable birth date": changed(5, lambda u: u["dob"].update(date="last tuesday")),
        "postcode object": changed(6, lambda u: u["location"].update(postcode={"code": 75001})),
        "nested nulls": changed(7, lambda u: u.update(dob=None, location={"country": None})),
        "wrong types": changed(8, lambda u: u["dob"].update(age="old")),
        "2 MB": changed(9, lambda u: u.update(padding="x" * 2_000_000)),
        "empty object": {},
        "not an object": "a string",
    }


def producer_reason(user: Any, limits: RecordLimits) -> str | None:
    """Why the producer does not publish ``user``: its validation, then the size of the sealed value."""
    split = split_batch([user], "randomuser", FETCHED_AT, limits, "1.4")
    if split.dead_letters:
        return split.dead_letters[0][1].reason
    _, too_large = within_size_limit(split.envelopes, limits)
    return too_large[0][1].reason if too_large else None


def dead_letters(settings: Settings) -> dict[int, dict[str, Any]]:
    """The dead-letter store's letters by Kafka offset (one partition)."""
    with mongo_client(settings) as client:
        collection = client[settings.mongo.database][settings.mongo.dead_letters_collection]
        return {letter["offset"]: letter for letter in collection.find()}


def test_the_producer_and_both_layers_give_every_record_the_same_reason(
    spark: SparkSession, own_stores: Callable[[str], Settings]
) -> None:
    records = kinds()
    speed_settings = own_stores("layers")
    # The batch layer reads the same topic, but stores its dead letters in a database of its own.
    batch_settings = speed_settings.model_copy(
        update={
            "mongo": speed_settings.mongo.model_copy(
                update={"database": own_stores("layers_batch").mongo.database}
            )
        }
    )
    limits = speed_settings.profiles.limits
    names = list(records)
    producer_reasons = {
        name: reason for name, user in records.items() if (reason := producer_reason(user, limits))
    }

    topic = speed_settings.kafka.profiles_topic
    create_topic(speed_settings, topic, partitions=1)
    kafka = KafkaProducer(
        bootstrap_servers=speed_settings.kafka.bootstrap_servers,
        acks="all",
        compression_type="gzip",
        max_request_size=4_000_000,
    )
    for user in records.values():
        envelope = envelope_fields(user, "randomuser", FETCHED_AT, "1.4")
        uuid = user.get("login", {}).get("uuid") if isinstance(user, dict) else None
        key = uuid.encode() if isinstance(uuid, str) else None
        kafka.send(topic, key=key, value=json.dumps(envelope).encode()).get(timeout=30)
    kafka.close()

    with speed_layer_job(speed_settings, spark) as job:
        job.run_until_consumed(timeout_s=600)
    run_archive(batch_settings, spark)
    refreshed = refresh_silver_profiles(batch_settings, spark)

    speed_reasons = {
        names[offset]: letter["reason"] for offset, letter in dead_letters(speed_settings).items()
    }
    batch_letters = dead_letters(batch_settings)
    batch_reasons = {names[offset]: letter["reason"] for offset, letter in batch_letters.items()}
    assert producer_reasons == speed_reasons == batch_reasons
    assert {letter["job"] for letter in batch_letters.values()} == {"batch"}
    assert refreshed.profiles == 2  # the two valid ones
    # Each reason says what is wrong, and where.
    assert speed_reasons == {
        "missing uuid": "user.login.uuid: missing",
        "uuid not a UUID": "user.login.uuid: not a UUID",
        "birth in the future": "user.dob.date: after fetched_at (in the future when fetched)",
        "unparsable birth date": "user.dob.date: not an ISO-8601 instant",
        "postcode object": "user.location.postcode: not a text value",
        "nested nulls": "user.location.country: missing; user.dob.date: missing",
        "wrong types": "user.dob.age: not an integer",
        "2 MB": "record over the limit of 262144 bytes",
        "empty object": "user.login.uuid: missing",
        "not an object": "user: not an object; user.login.uuid: missing",
    }
