"""Crashes and outages during a live stream, against the real stack: the speed layer killed again and
again, Kafka killed while the producer publishes, Cassandra and FerretDB each stopped for a minute while
both run.

Each test ends by comparing every store with an independent recount of the topic (``stream``): the
speed partials per dimension, window and age, the ``profiles`` rows, the raw MongoDB documents and the
``stream_batches`` metrics (new profiles, under-age, duplicates). 0 lost, 0 counted twice, 0 hung: a
hang ends in a bounded wait's assertion, never in a stuck test run.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
from pyspark.sql import SparkSession

from core.settings import Settings
from tests.faults.stream import (
    BackgroundProducer,
    ReseeingSource,
    catch_up_and_check,
    committed_batches,
    speed_layer_process,
    stop_when_caught_up,
    topic_input,
    wait_until,
)
from tests.integration.support.kafka_helpers import create_topic

pytestmark = pytest.mark.faults


@pytest.mark.timeout(1500)  # five cold restarts of Spark, then a recount of 30,000 profiles: ~11 min
def test_the_speed_layer_killed_five_times_during_a_stream_loses_and_doubles_nothing(
    spark: SparkSession, own_stores: Callable[..., Settings]
) -> None:
    """A 30,000-profile stream (1% later versions of earlier profiles) arrives in six parts of 5,000.
    Five times, ``userpulse speed`` starts, commits a micro-batch, and the next part begins to arrive
    (at 500/s); a moment later the speed layer is SIGKILLed (its Spark JVM with it), mid-batch and
    mid-stream. Pacing the stream by the restarts, not by the clock, keeps every kill inside it however
    long a restart takes."""
    settings = own_stores("sigkill")
    create_topic(settings, settings.kafka.profiles_topic)
    source, pauses = ReseeingSource(51), random.Random(51)
    BackgroundProducer(settings, source, count=5_000, rate_per_s=2_000).start().join(timeout_s=300)
    for _ in range(5):
        with speed_layer_process(settings, USERPULSE_SPEED_LAYER__MAX_OFFSETS_PER_TRIGGER="2000") as process:
            before = committed_batches(settings)
            wait_until(
                lambda before=before: committed_batches(settings) > before or process.poll() is not None,
                timeout_s=300,
                what="a micro-batch committed by the restarted speed layer",
            )
            assert process.poll() is None, "the speed layer exited before it was killed"
            part = BackgroundProducer(settings, source, count=5_000, rate_per_s=500).start()
            time.sleep(pauses.uniform(0.5, 3.0))  # into the next micro-batch
            assert part.running(), "the part of the stream ended before the kill"
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        part.join(timeout_s=300)

    catch_up_and_check(settings, spark)


def test_kafka_killed_during_produce_loses_and_doubles_nothing(
    spark: SparkSession,
    own_stores: Callable[..., Settings],
    stopped: Callable[..., AbstractContextManager[None]],
) -> None:
    """kill -9 of the broker while the producer publishes (idempotent, acks=all): it retries through the
    restart; the topic holds every profile once, and the speed layer counts each once."""
    settings = own_stores("kafka_kill")
    create_topic(settings, settings.kafka.profiles_topic)
    producer = BackgroundProducer(settings, ReseeingSource(53), count=4_000, rate_per_s=200).start()
    time.sleep(5)
    with stopped("kafka", kill=True):
        time.sleep(3)
    assert producer.running(), "the producer finished before the broker came back"
    producer.join(timeout_s=300)

    produced = topic_input(settings)
    assert len(produced.copies) == 4_000  # every profile once on the topic: none lost, none doubled
    catch_up_and_check(settings, spark)


def test_cassandra_then_ferretdb_stopped_for_a_minute_while_the_stream_runs(
    spark: SparkSession,
    own_stores: Callable[..., Settings],
    stopped: Callable[..., AbstractContextManager[None]],
) -> None:
    """Each store is stopped for 60 s (then started again) while the producer and ``userpulse speed``
    run: the producer waits out the key store, the speed layer retries its micro-batch whole, and
    neither gives up within the outage tolerance (4 minutes here, a minute of restart included)."""
    tolerance = {"USERPULSE_RELIABILITY__OUTAGE_TOLERANCE_S": "240"}
    settings = own_stores("store_stops", reliability={"outage_tolerance_s": 240, "retry_max_delay_s": 5})
    create_topic(settings, settings.kafka.profiles_topic)
    producer = BackgroundProducer(settings, ReseeingSource(57), count=10_000, rate_per_s=40).start()
    with speed_layer_process(settings, **tolerance) as process:
        wait_until(lambda: committed_batches(settings) > 0, timeout_s=240, what="the first micro-batch")
        for store in ("cassandra", "mongo"):
            with stopped(store):
                time.sleep(60)
            assert process.poll() is None, f"the speed layer gave up during the {store} outage"
            assert producer.running(), f"the stream ended during the {store} outage"
        producer.join(timeout_s=600)
        stop_when_caught_up(settings, process, after="the outages")

    catch_up_and_check(settings, spark)
