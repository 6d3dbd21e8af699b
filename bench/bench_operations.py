"""Operations page benchmark: latency of one refresh (``serving.operations.operations_snapshot``) and
of one read of the dead letters (``dead_letters_snapshot``) on loaded topics and stores.

    .venv/bin/python bench/bench_operations.py [--records 1000000] [--dead-letters 10000] [--repeat 50]

Loads a profiles topic of three partitions with ``--records`` records (~200 bytes each) and the
producer's dead-letter topic with 1,000; ``--dead-letters`` dead letters of the speed and batch layers
in MongoDB over eight reasons; 200 micro-batch rows in ``stream_batches``; and checkpoints of the speed
layer (90% of each partition committed) and of the archive (50%), so each refresh also fetches the
oldest record each layer waits on (the lag in seconds).

Then times ``--repeat`` times the page's periodic refresh (topics, lag in records and seconds, the latest
micro-batches and batch runs, a partition's last records), its read of the dead letters (on their own
cadence, ``serving.dead_letters_refresh_s``: by reason, per hour, the latest; all reasons, one reason),
and each part on its own: p50 and p95 in milliseconds. Starts the local stack if it is not running (and
stops it after); everything it creates is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import local_stack, timed
from kafka import KafkaProducer

from core.settings import Settings, get_settings
from infra.isolation import local_folder, own_stores
from ingestion.kafka_publisher import ensure_topics
from orchestration.runs import RunHistory
from serving.operations import (
    DEAD_LETTER_HOURS,
    OperationsSources,
    TopicReader,
    dead_letters_snapshot,
    hour_starts,
    layer_lag,
    operations_snapshot,
    topic_overview,
)
from serving.profiles import profile_documents
from serving.views import serving_views
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session, mongo_client, mongo_database
from stores.documents import dead_letter_document, mongo_raw_store
from stores.speed_views import CassandraSpeedStore

PARTITIONS = 3
REASONS = [
    "not JSON", "not a JSON object", "no Kafka key", "user.gender: not male or female",
    "user.email: missing", "user.dob.date: not an instant", "record over the limit of 262144 bytes",
    "user.nat: not a nationality the API serves",
]  # fmt: skip


def load_topics(settings: Settings, records: int) -> dict[int, int]:
    """The profiles topic with ``records`` records and the dead-letter topic with 1,000; end offsets."""
    kafka = settings.kafka
    ensure_topics(settings, {kafka.profiles_topic: PARTITIONS, kafka.dead_letter_topic: 1})
    producer = KafkaProducer(**kafka.client_options(), acks=1, linger_ms=50, batch_size=1_048_576)
    started = time.monotonic()
    value = json.dumps(
        {"schema_version": 2, "user": {"login": {"uuid": str(uuid.uuid4())}}, "pad": "x" * 120}
    )
    for index in range(records):
        producer.send(kafka.profiles_topic, value=value.encode(), partition=index % PARTITIONS)
    for _ in range(1_000):
        producer.send(kafka.dead_letter_topic, value=b'{"reason": "user.email: missing"}')
    producer.flush()
    producer.close()
    print(f"kafka: {records:,} records loaded in {time.monotonic() - started:.0f} s")
    base, extra = divmod(records, PARTITIONS)
    return {p: base + (1 if p < extra else 0) for p in range(PARTITIONS)}


def write_checkpoint(folder: Path, topic: str, offsets: dict[int, int]) -> None:
    """A Structured Streaming checkpoint whose last committed micro-batch ends at ``offsets``."""
    (folder / "offsets").mkdir(parents=True)
    (folder / "commits").mkdir()
    metadata = {"batchWatermarkMs": 0, "batchTimestampMs": 0, "conf": {}}
    source = {topic: {str(p): o for p, o in offsets.items()}}
    (folder / "offsets" / "0").write_text(f"v1\n{json.dumps(metadata)}\n{json.dumps(source)}")
    (folder / "commits" / "0").write_text('v1\n{"nextBatchWatermarkMs":0}')


def load_stores(settings: Settings, dead_letters: int) -> None:
    """Dead letters in MongoDB (two layers, eight reasons) and micro-batch rows in Cassandra."""
    client = mongo_client(settings)
    started = time.monotonic()
    try:
        store = mongo_raw_store(mongo_database(client, settings), settings)
        store.ensure_indexes()
        now = datetime.now(UTC)
        for start in range(0, dead_letters, 1_000):
            letters = [
                dead_letter_document(
                    {
                        "topic": settings.kafka.profiles_topic,
                        "partition": i % PARTITIONS,
                        "offset": i,
                        "kafka_timestamp": now,
                        "kafka_key": None,
                        "raw_value": b'{"user": {"email": "jane.doe@example.com"}}' + b" " * 200,
                        "dead_letter_reason": REASONS[i % len(REASONS)],
                    },
                    "speed" if i % 3 else "batch",
                )
                for i in range(start, min(start + 1_000, dead_letters))
            ]
            store.insert_dead_letters(letters, now - timedelta(seconds=dead_letters - start))
    finally:
        client.close()
    cluster, session = cassandra_session(settings)
    try:
        apply_schema(session, settings.cassandra.keyspace, settings.cassandra.keyspace_replication)
        speed = CassandraSpeedStore(session, settings.cassandra.keyspace, settings.cassandra.concurrency)
        now = datetime.now(UTC)
        for batch_id in range(200):
            speed.write_batch_metrics(
                {"job": settings.speed_layer.job_name, "batch_id": batch_id, "processed_at": now,
                 "input_rows": 5_000, "new_profiles": 4_900, "duplicates": 50, "dead_lettered": 10,
                 "under_age": 40, "late_rows_dropped": 0, "duration_ms": 3_000, "max_event_time": None,
                 "end_offsets": {0: batch_id}, "windows": set()}
            )  # fmt: skip
    finally:
        cluster.shutdown()
    elapsed = time.monotonic() - started
    print(f"stores: {dead_letters:,} dead letters, 200 micro-batches loaded in {elapsed:.0f} s")


def measure(settings: Settings, repeat: int) -> list[dict[str, Any]]:
    cluster, session = cassandra_session(settings)
    client = mongo_client(settings)
    reader = TopicReader(settings)  # kept open between refreshes, as the page keeps it
    history = RunHistory(settings.paths.dagster_home)
    try:
        views = serving_views(session, settings)
        documents = profile_documents(mongo_database(client, settings), settings)
        sources = OperationsSources(reader, documents, views, history)

        def refresh() -> object:
            return operations_snapshot(settings, sources, messages_of=(settings.kafka.profiles_topic, 0))

        def dead_letters(reason: str | None) -> Callable[[], object]:
            return lambda: dead_letters_snapshot(settings, sources, reason, 20)

        snapshot = operations_snapshot(settings, sources)
        assert not snapshot.errors, snapshot.errors
        assert snapshot.lag is not None and all(row.speed_lag_s is not None for row in snapshot.lag)
        letters = dead_letters_snapshot(settings, sources, None, 20)
        assert not letters.errors and letters.hourly, letters.errors
        dead_letter_topic = settings.kafka.dead_letter_topic

        def producer_hours() -> object:
            starts = hour_starts(datetime.now(UTC), DEAD_LETTER_HOURS)
            return reader.appended_per_hour(dead_letter_topic, starts)

        return [
            timed("periodic refresh", refresh, repeat),
            timed("dead letters, all reasons (own cadence)", dead_letters(None), repeat),
            timed("dead letters, one reason (own cadence)", dead_letters(REASONS[3]), repeat),
            timed("topics (Kafka)", reader.overview, repeat),
            timed("topics, clients opened for it (the CLI)", lambda: topic_overview(settings), repeat),
            timed("lag with seconds, clients opened for it (the CLI)", lambda: layer_lag(settings), repeat),
            timed("dead letters by layer, reason, hour (MongoDB)", documents.dead_letter_tallies, repeat),
            timed(f"producer's dead letters per hour, {DEAD_LETTER_HOURS} h (Kafka)", producer_hours, repeat),
            timed("latest dead letters (MongoDB)", lambda: documents.latest_dead_letters(20), repeat),
            timed("latest 120 micro-batches (Cassandra)", lambda: views.recent_speed_batches(120), repeat),
            timed("last 10 records of a partition (Kafka)",
                  lambda: reader.last_messages(settings.kafka.profiles_topic, 0, 10), repeat),
            timed("latest 10 batch runs (Dagster storage)", lambda: history.recent(10), repeat),
        ]  # fmt: skip
    finally:
        history.close()
        reader.close()
        client.close()
        cluster.shutdown()


def main() -> None:
    # Synthetic data on throwaway stores: the public default secrets are fine (see SecretSettings).
    os.environ.setdefault("USERPULSE_SECRETS__DEVELOPMENT_MODE", "true")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dead-letters", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    base = get_settings()
    with (
        local_stack(base),
        own_stores(base, "bench_operations", Path(tempfile.mkdtemp(prefix="bench_operations"))) as settings,
    ):
        topic, paths = settings.kafka.profiles_topic, settings.paths
        ends = load_topics(settings, args.records)
        speed_at = {p: end * 9 // 10 for p, end in ends.items()}
        write_checkpoint(local_folder(paths.checkpoint(settings.speed_layer.job_name)), topic, speed_at)
        archive_at = {p: end // 2 for p, end in ends.items()}
        write_checkpoint(
            local_folder(paths.checkpoint(settings.batch_layer.archive_job_name)), topic, archive_at
        )
        load_stores(settings, args.dead_letters)
        results = measure(settings, args.repeat)
        print(json.dumps({"records": args.records, "dead_letters": args.dead_letters, "results": results}))


if __name__ == "__main__":
    main()
