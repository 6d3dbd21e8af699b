"""``userpulse topics`` and ``userpulse lag`` on a real topic, as the layers consume it: the figures are
checked against the offsets Kafka gave the test's own records."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from core.settings import Settings
from core.validation import NOT_JSON, NOT_JSON_OBJECT
from ingestion.synthetic import SyntheticSource
from serving.operations import RATE_WINDOW_S, TopicReader, hour_starts
from tests.integration.support.kafka_helpers import create_topic
from tests.integration.support.pipeline import Pipeline
from tests.integration.support.processes import run_json

pytestmark = pytest.mark.integration

BASE = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)


def produce(pipeline: Pipeline, seed: int, count: int) -> None:
    users = SyntheticSource(seed, now=BASE).next_batch(count)
    pipeline.produce(
        {"user": user, "fetched_at": BASE + timedelta(seconds=i)} for i, user in enumerate(users)
    )


def test_topics_and_the_lag_of_each_layer_follow_what_was_produced_and_consumed(
    spark: SparkSession, own_stores: Callable[[str], Settings]
) -> None:
    settings = own_stores("ops")
    pipeline = Pipeline(settings, spark)
    produce(pipeline, 51, 40)
    per_partition = Counter(copy.partition for copy in pipeline.copies)
    # Two records the speed layer cannot use, under one key (so one partition).
    bad_partition = pipeline.produce_bad(b"jane.doe@example.com called +1 (555) 123-4567", key="k")
    assert pipeline.produce_bad(b"[1, 2, 3]", key="k") == bad_partition
    per_partition[bad_partition] += 2

    # The partition's last records, newest first, identifiers masked.
    last_two = run_json(settings, f"messages --partition {bad_partition} --last 2")
    assert [(m["offset"], m["key"], m["value"]) for m in last_two] == [
        (per_partition[bad_partition] - 1, "k", "[1, 2, 3]"),
        (per_partition[bad_partition] - 2, "k", "j***@example.com called ***67"),
    ]
    profile_copy = pipeline.copies[0]
    [shown] = run_json(settings, f"messages --partition {profile_copy.partition} --last 1000")[-1:]
    assert shown["offset"] == 0 and shown["key"] == profile_copy.uuid
    assert profile_copy.envelope["user"]["email"] not in shown["value"]

    [profiles, dead_letters] = run_json(settings, "topics")
    assert profiles["topic"] == settings.kafka.profiles_topic and profiles["records"] == 42
    # Every record was appended within the rate's window, and each partition holds bytes on disk.
    assert {p["partition"]: (p["earliest"], p["end"], p["recent"]) for p in profiles["partitions"]} == {
        p: (0, per_partition[p], per_partition[p]) for p in range(3)
    }
    assert profiles["size_bytes"] == sum(p["size_bytes"] for p in profiles["partitions"]) > 0
    assert dead_letters == {
        "topic": settings.kafka.dead_letter_topic, "exists": False, "records": 0, "rate_per_s": 0.0,
        "size_bytes": None, "retention_ms": None, "partitions": [],
    }  # fmt: skip

    def lag_by_partition() -> dict[int, tuple[int | None, int | None]]:
        return {row["partition"]: (row["speed_lag"], row["archive_lag"]) for row in run_json(settings, "lag")}

    # Neither layer has run: no checkpoint, no figure (rather than a lag it cannot know).
    assert lag_by_partition() == {p: (None, None) for p in range(3)}

    pipeline.speed()
    assert lag_by_partition() == {p: (0, None) for p in range(3)}
    # Its micro-batches: every record read once, the two bad ones dead-lettered.
    speed_batches = run_json(settings, "batches")
    totals = {
        name: sum(b[name] for b in speed_batches) for name in ("input_rows", "new_profiles", "dead_lettered")
    }
    assert totals == {"input_rows": 42, "new_profiles": 40, "dead_lettered": 2}

    # What the speed layer could not use, by reason, and each letter with its value masked.
    reasons = run_json(settings, "dead-letters reasons")
    assert reasons == [
        {"layer": "speed", "reason": NOT_JSON, "dead_letters": 1},
        {"layer": "speed", "reason": NOT_JSON_OBJECT, "dead_letters": 1},
    ]
    # The same two per hour (stored within seconds, possibly either side of an hour's start).
    hours = run_json(settings, "dead-letters hourly")
    sources = ("producer", "speed", "batch", "total")
    assert [sum(h[source] for h in hours) for source in sources] == [0, 2, 0, 2]
    [letter] = run_json(settings, f"dead-letters list --reason {NOT_JSON!r}")
    assert (letter["topic"], letter["partition"]) == (settings.kafka.profiles_topic, bad_partition)
    assert letter["value"] == "j***@example.com called ***67"

    produced_at = time.time()
    produce(pipeline, 52, 20)
    pipeline.archive()
    newer = Counter(copy.partition for copy in pipeline.copies[40:])
    lag_rows = run_json(settings, "lag")
    waited = time.time() - produced_at
    assert {r["partition"]: (r["speed_lag"], r["archive_lag"]) for r in lag_rows} == {
        p: (newer[p], 0) for p in range(3)
    }
    # In seconds: the speed layer's oldest record not committed has waited since it was produced.
    for row in lag_rows:
        assert row["archive_lag_s"] == 0
        if newer[row["partition"]]:
            assert 0 < row["speed_lag_s"] <= waited + 1, row
        else:
            assert row["speed_lag_s"] == 0


def test_a_topic_rate_and_its_records_per_hour_follow_the_kafka_timestamps(
    spark: SparkSession, own_stores: Callable[[str], Settings]
) -> None:
    """Records stamped before the rate's window hold bytes but add no rate; each record's timestamp is
    found without reading it; a record counts in the hour of its timestamp."""
    settings = own_stores("rate")
    pipeline = Pipeline(settings, spark)
    # Under one key (one partition), in the order of their timestamps: hours old, before the window, now.
    now_ms = int(time.time() * 1000)
    stamped = [now_ms - age_s * 1000 for age_s in (3 * 3600, 2 * 3600 + 17, RATE_WINDOW_S + 600)]
    partition = pipeline.produce_bad(b"[0]", key="k", timestamp_ms=stamped[0])
    for stamp_ms in stamped[1:]:
        assert pipeline.produce_bad(b"[0]", key="k", timestamp_ms=stamp_ms) == partition
    assert pipeline.produce_bad(b"[1]", key="k") == pipeline.produce_bad(b"[2]", key="k") == partition
    with TopicReader(settings) as reader:
        [profiles, _] = reader.overview()
        # Each record's timestamp, found from the broker's time index: to a second, or 1% of its age.
        for offset, stamp_ms in enumerate(stamped):
            found = reader.record_timestamps({partition: offset})[partition]
            error_ms = stamp_ms - found.timestamp() * 1000
            assert 0 <= error_ms <= max(1_000, (now_ms - stamp_ms) / 100 + 1_000), (offset, error_ms)
    assert profiles.partitions is not None
    held = {p.partition: (p.records, p.recent, bool(p.size_bytes)) for p in profiles.partitions}
    assert held == {p: (5, 2, True) if p == partition else (0, 0, False) for p in range(3)}
    assert profiles.rate_per_s == 2 / RATE_WINDOW_S

    # Per hour, on the dead-letter topic: records stamped within each of the last three hours.
    starts = hour_starts(datetime.now(UTC), 3)
    with TopicReader(settings) as reader:
        assert reader.appended_per_hour(settings.kafka.dead_letter_topic, starts) == {}  # not created yet
        create_topic(settings, settings.kafka.dead_letter_topic)
        producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
        for stamp in (starts[0] + timedelta(minutes=1), starts[1] + timedelta(minutes=1),
                      starts[1] + timedelta(minutes=2), starts[2]):  # fmt: skip
            producer.send(
                settings.kafka.dead_letter_topic, value=b"{}", timestamp_ms=int(stamp.timestamp() * 1000)
            ).get(timeout=30)
        producer.close()
        per_hour = reader.appended_per_hour(settings.kafka.dead_letter_topic, starts)
    assert per_hour == {starts[0]: 1, starts[1]: 2, starts[2]: 1}


def test_a_topic_reader_kept_open_reads_the_timestamps_of_the_records_asked_each_time(
    spark: SparkSession, own_stores: Callable[[str], Settings]
) -> None:
    """The operations page keeps one reader open between refreshes, and asks it twice per refresh (the
    speed layer's positions, then the archive's): each answer holds every partition asked."""
    settings = own_stores("reader")
    pipeline = Pipeline(settings, spark)
    before = datetime.now(UTC) - timedelta(seconds=1)
    produce(pipeline, 53, 30)
    after = datetime.now(UTC) + timedelta(seconds=1)
    ends = Counter(copy.partition for copy in pipeline.copies)
    with TopicReader(settings) as reader:
        for round_ in range(4):
            positions = {p: (round_ * 3 + p) % ends[p] for p in range(3)}
            stamps = reader.record_timestamps(positions)
            assert sorted(stamps) == [0, 1, 2], (round_, positions, stamps)
            assert all(before <= stamp <= after for stamp in stamps.values())
        # A partition with nothing at the position asked (its end) is left out.
        assert reader.record_timestamps({0: ends[0]}) == {}
