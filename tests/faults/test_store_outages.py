"""Faults against the real stack: large batches of later versions, and a store that stops answering.

Each test runs the speed layer on its own topic and stores, then compares what serving shows (and what
MongoDB holds) with an independent recount of what was produced: nothing lost, nothing counted twice,
and no wait without an end.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession

from core.settings import Settings
from core.streaming import failure_line
from ingestion.kafka_publisher import ProfilePublisher
from ingestion.producer import PatientSubjectKeys, ProfileProducer
from ingestion.synthetic import SyntheticSource
from speed_layer.job import speed_layer_job
from stores.connections import mongo_client, mongo_database
from stores.subject_keys import subject_key_store
from tests.integration.support.kafka_helpers import create_topic, read_topic
from tests.integration.support.pipeline import Pipeline
from tests.integration.support.profiles_input import counted

pytestmark = pytest.mark.faults

BASE = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)


def envelopes(users: list[dict[str, Any]], start: datetime) -> list[dict[str, Any]]:
    return [
        {"user": copy.deepcopy(user), "fetched_at": start + timedelta(seconds=i)}
        for i, user in enumerate(users)
    ]


def stored_countries(settings: Settings) -> dict[str, str]:
    """uuid -> country of each raw document in MongoDB."""
    with mongo_client(settings) as client:
        documents = mongo_database(client, settings)[settings.mongo.raw_profiles_collection]
        return {d["_id"]: d["user"]["location"]["country"] for d in documents.find({}, {"user.location": 1})}


def assert_merged_equals_recount(pipeline: Pipeline) -> None:
    assert pipeline.merged() == pipeline.expected()


def test_a_batch_of_1000_later_versions_completes(
    spark: SparkSession, own_stores: Callable[..., Settings]
) -> None:
    """1,000 stored profiles re-fetched at once: one micro-batch replaces 1,000 raw documents (FerretDB
    never answers a bulk write larger than its connection pool: the store chunks it)."""
    settings = own_stores("versions", speed_layer={"max_offsets_per_trigger": 5000})
    pipeline = Pipeline(settings, spark)
    users = SyntheticSource(41, now=BASE).next_batch(1000)
    pipeline.produce(envelopes(users, BASE))
    pipeline.speed()
    refetched = []
    for user in users:
        later = copy.deepcopy(user)
        later["location"]["country"] = "Atlantis"
        refetched.append(later)
    pipeline.produce(envelopes(refetched, BASE + timedelta(minutes=30)))
    pipeline.speed()

    assert_merged_equals_recount(pipeline)
    adults = set(counted(pipeline.copies))
    assert stored_countries(settings) == dict.fromkeys(adults, "Atlantis")


def test_a_store_that_stops_answering_stops_the_batch_within_the_tolerance_and_the_job_resumes(
    spark: SparkSession,
    own_stores: Callable[..., Settings],
    freeze: Callable[[str], AbstractContextManager[None]],
) -> None:
    """MongoDB frozen mid-stream (SIGSTOP: its sockets stay open, nothing answers): the micro-batch's
    writes time out, the batch is retried whole with backoff, and once the tolerance has passed the job
    stops with one line naming the store. Thawed, the next run resumes from the checkpoint: every
    profile is stored and counted once."""
    settings = own_stores(
        "frozen",
        mongo={"socket_timeout_s": 2, "server_selection_timeout_s": 2, "connect_timeout_s": 2},
        reliability={"outage_tolerance_s": 6, "retry_initial_delay_s": 1, "retry_max_delay_s": 2},
    )
    pipeline = Pipeline(settings, spark)
    users = SyntheticSource(43, now=BASE).next_batch(60)
    pipeline.produce(envelopes(users[:30], BASE))
    pipeline.speed()
    pipeline.produce(envelopes(users[30:], BASE + timedelta(minutes=5)))

    # A hang would end in run_until_consumed's TimeoutError, not in the store's error.
    with (
        speed_layer_job(settings, spark) as job,
        freeze("mongo"),
        pytest.raises(StreamingQueryException) as failure,
    ):
        job.run_until_consumed(timeout_s=180)
    line = failure_line(failure.value)
    assert line.startswith(f"MongoDB at {settings.mongo.host}:{settings.mongo.port} did not answer for 6 s")
    assert f"resumes from checkpoint {job.checkpoint_dir}" in line

    pipeline.speed()  # thawed: the uncommitted batch is read again
    assert_merged_equals_recount(pipeline)
    adults = set(counted(pipeline.copies))
    assert set(stored_countries(settings)) == adults


def test_the_producer_waits_out_a_key_store_outage_and_publishes_every_profile_sealed(
    own_stores: Callable[..., Settings], freeze: Callable[[str], AbstractContextManager[None]]
) -> None:
    """Cassandra (the subjects' keys) frozen for a few seconds while the producer runs: it backs off,
    publishes nothing unsealed, and in the end every profile it fetched is on the topic once."""
    settings = own_stores(
        "keys_outage",
        cassandra={"request_timeout_s": 2, "reconnect_max_delay_s": 2},
        reliability={"outage_tolerance_s": 60, "retry_initial_delay_s": 0.5, "retry_max_delay_s": 2},
    )
    topic, dead_letter_topic = settings.kafka.profiles_topic, settings.kafka.dead_letter_topic
    create_topic(settings, topic)
    with (
        ProfilePublisher(settings, topic, dead_letter_topic) as publisher,
        subject_key_store(settings, enabled=True) as keys,
    ):
        assert keys is not None
        producer = ProfileProducer(
            SyntheticSource(47, now=BASE), publisher, 20, subject_keys=PatientSubjectKeys(keys, settings)
        )
        running = threading.Thread(target=producer.run, kwargs={"count": 300, "rate_per_s": 50})
        running.start()
        time.sleep(1)
        with freeze("cassandra"):
            time.sleep(6)
        running.join(timeout=120)
        assert not running.is_alive()
    records = read_topic(settings, topic)
    assert len(records) == len({r.key for r in records}) == 300
    assert all(r.value["sealed"] for r in records)
