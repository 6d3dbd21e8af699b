"""Speed-layer benchmark: sustained throughput and end-to-end latency into MongoDB and Cassandra.

    .venv/bin/python bench/bench_speed_layer.py [--profiles 100000] [--rate 1000] [--seconds 30]

1. Throughput, plain and sealed envelopes: ``--profiles`` synthetic profiles are produced to a fresh
   topic first, then the job consumes them (``availableNow``, batches of ``max_offsets_per_trigger``)
   into fresh stores; the figure is profiles per second of wall time through the whole job (keys,
   parse, transform, version rule, both stores).
2. The fixed cost: the median duration of a warm 100-record micro-batch (``stream_batches``).
3. Latency: the job runs continuously while another process produces profiles at a steady ``--rate``;
   for one profile of every produced batch, the time from send to its row being readable in Cassandra
   is taken.

The last line sums it up: ``speed layer: <N> profiles/s sustained, 100-record batch <M> ms, p95 <P> s
at <rate>/s`` (N: plain envelopes).

Starts the local stack if it is not running (and stops it after); everything it creates is removed.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from multiprocessing.connection import Connection

from core.settings import Settings, get_settings
from core.spark import build_spark_session
from core.validation import RecordLimits
from infra.isolation import drop_own_stores, own_settings
from infra.stack import LocalStack
from ingestion.kafka_publisher import ProfilePublisher, ensure_topics
from ingestion.producer import seal_envelopes, split_batch
from ingestion.synthetic import SyntheticSource
from speed_layer.job import speed_layer_job
from stores.connections import cassandra_session
from stores.speed_views import CassandraSpeedStore
from stores.subject_keys import SubjectKeyStore, subject_key_store


def publish(
    publisher: ProfilePublisher, source: SyntheticSource, count: int, keys: SubjectKeyStore | None = None
) -> list[str]:
    """Publish ``count`` synthetic profiles now (sealed under their subjects' keys with ``keys``), as
    the producer does; returns their uuids."""
    split = split_batch(source.next_batch(count), "synthetic", datetime.now(UTC), RecordLimits(), "1.4")
    uuids = [envelope.user["login"]["uuid"] for envelope in split.envelopes]
    if keys is None:
        for envelope in split.envelopes:
            publisher.publish(envelope)
        return uuids
    sealed, _ = seal_envelopes(split.envelopes, keys.keys_creating_missing(uuids))
    for envelope in sealed:
        publisher.publish(envelope, envelope.value())
    return uuids


def throughput(base: Settings, profiles: int, sealed: bool) -> float:
    """Profiles per second of wall time through the whole job, on a topic filled beforehand."""
    name = f"bench_speed_{uuid.uuid4().hex[:8]}"
    settings = own_settings(base, name, base.paths.stack_dir / "bench" / name)
    ensure_topics(settings, {name: settings.kafka.topic_partitions, settings.kafka.dead_letter_topic: 1})
    source = SyntheticSource(5)
    with (
        ProfilePublisher(settings, name, settings.kafka.dead_letter_topic) as publisher,
        subject_key_store(settings, enabled=sealed) as keys,
    ):
        for _ in range(0, profiles, 5000):
            publish(publisher, source, 5000, keys)
    spark = build_spark_session(settings, "userpulse-bench")
    try:
        with speed_layer_job(settings, spark) as job:
            started = time.perf_counter()
            job.run_until_consumed()
            elapsed = time.perf_counter() - started
        rate = profiles / elapsed
        print(
            f"throughput ({'sealed' if sealed else 'plain'}): {profiles:,} profiles through the speed layer "
            f"in {elapsed:.1f} s = {rate:,.0f} profiles/s (batches of up to "
            f"{settings.speed_layer.max_offsets_per_trigger:,}, Spark {settings.spark.master})"
        )
        return rate
    finally:
        drop_own_stores(base, name)


def small_batches(base: Settings, batches: int = 12) -> float:
    """Median duration (ms) of a 100-record micro-batch of a warm job (its first batch left out)."""
    name = f"bench_small_{uuid.uuid4().hex[:8]}"
    settings = own_settings(base, name, base.paths.stack_dir / "bench" / name)
    settings = settings.model_copy(
        update={"speed_layer": settings.speed_layer.model_copy(update={"max_offsets_per_trigger": 100})}
    )
    ensure_topics(settings, {name: settings.kafka.topic_partitions, settings.kafka.dead_letter_topic: 1})
    with ProfilePublisher(settings, name, settings.kafka.dead_letter_topic) as publisher:
        publish(publisher, SyntheticSource(8), 100 * batches)
    spark = build_spark_session(settings, "userpulse-bench")
    cluster, session = cassandra_session(settings)
    try:
        with speed_layer_job(settings, spark) as job:
            job.run_until_consumed()
        store = CassandraSpeedStore(session, name, settings.cassandra.concurrency)
        durations = sorted(
            batch.duration_ms
            for batch in store.recent_batches(settings.speed_layer.job_name, limit=100_000)
            if batch.batch_id > 0
        )
        median = statistics.median(durations)
        print(
            f"micro-batch of 100 records: p50 {median:.0f} ms, max {durations[-1]} ms "
            f"({len(durations)} batches after the first)"
        )
        return median
    finally:
        cluster.shutdown()
        drop_own_stores(base, name)


def produce_steadily(settings: Settings, rate: int, seconds: int, sent: Connection) -> None:
    """Publish ``rate`` profiles/s for ``seconds`` in tenths of a second; after each tenth is flushed,
    send (its last uuid, ``time.monotonic()``) through ``sent``, then None when done.

    Runs in its own process, as the producer does in production: it shares the cores with the job,
    not the job's interpreter.
    """
    source = SyntheticSource(6)
    batches_per_s = 10
    name = settings.kafka.profiles_topic
    with ProfilePublisher(settings, name, settings.kafka.dead_letter_topic) as publisher:
        started = time.monotonic()
        for tick in range(seconds * batches_per_s):
            time.sleep(max(0.0, started + tick / batches_per_s - time.monotonic()))
            uuids = publish(publisher, source, rate // batches_per_s)
            publisher.flush()
            sent.send((uuids[-1], time.monotonic()))
    sent.send(None)
    sent.close()


def latency(base: Settings, rate: int, seconds: int) -> float:
    """p95 seconds from a profile's publication to its row being readable in Cassandra."""
    name = f"bench_latency_{uuid.uuid4().hex[:8]}"
    settings = own_settings(base, name, base.paths.stack_dir / "bench" / name)
    settings = settings.model_copy(
        update={"speed_layer": settings.speed_layer.model_copy(update={"trigger_interval": "0 seconds"})}
    )
    ensure_topics(settings, {name: settings.kafka.topic_partitions, settings.kafka.dead_letter_topic: 1})
    spark = build_spark_session(settings, "userpulse-bench")
    cluster, session = cassandra_session(settings)
    sent_at: dict[str, float] = {}
    visible_after: dict[str, float] = {}
    producing_done = threading.Event()
    try:
        with speed_layer_job(settings, spark) as job:
            query = job.start()
            store = CassandraSpeedStore(session, name, settings.cassandra.concurrency)

            def watch() -> None:
                while not (producing_done.is_set() and len(visible_after) == len(sent_at)):
                    for sample in [s for s in list(sent_at) if s not in visible_after]:
                        if store.profile_row(sample) is not None:
                            visible_after[sample] = time.monotonic() - sent_at[sample]
                    time.sleep(0.02)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            time.sleep(5)  # let the first (empty) triggers pass
            receiving, sending = multiprocessing.get_context("spawn").Pipe(duplex=False)
            producer = multiprocessing.get_context("spawn").Process(
                target=produce_steadily, args=(settings, rate, seconds, sending)
            )
            producer.start()
            sending.close()
            while (sample := receiving.recv()) is not None:
                sent_at[sample[0]] = sample[1]
            producer.join()
            producing_done.set()
            watcher.join(timeout=120)
            query.stop()
        latencies = sorted(visible_after.values())
        p50 = statistics.median(latencies)
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(
            f"latency at {rate:,} profiles/s for {seconds} s: produced -> readable in Cassandra "
            f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s ({len(latencies)} samples)"
        )
        return p95
    finally:
        cluster.shutdown()
        drop_own_stores(base, name)


def main() -> None:
    # Synthetic data on throwaway stores: the public default secrets are fine (see SecretSettings).
    os.environ.setdefault("USERPULSE_SECRETS__DEVELOPMENT_MODE", "true")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("speed_layer").setLevel(logging.DEBUG)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    settings = get_settings()
    stack = LocalStack(settings)
    started_stack = not stack.all_answering()
    if started_stack:
        stack.up()
    try:
        plain = throughput(settings, args.profiles, sealed=False)
        throughput(settings, args.profiles, sealed=True)
        batch_ms = small_batches(settings)
        p95 = latency(settings, args.rate, args.seconds)
        print(
            f"speed layer: {plain:,.0f} profiles/s sustained, 100-record batch {batch_ms:.0f} ms, "
            f"p95 {p95:.1f} s at {args.rate}/s"
        )
    finally:
        if started_stack:
            stack.down()


if __name__ == "__main__":
    main()
