"""Producer benchmark: synthetic profiles into the real Kafka as fast as they go.

    .venv/bin/python bench/bench_producer.py [--count 200000] [--batch-size 5000]

Starts the local stack if it is not running (and stops it after), produces ``count`` profiles to a
fresh topic, and reports profiles/s and MB/s of envelopes acknowledged by the broker, plus the cost of
each stage on its own (generation, validation + minimization + envelope) to show where time goes.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import UTC, datetime

from kafka import KafkaAdminClient

from core.sealing import new_data_key
from core.settings import get_settings
from core.validation import RecordLimits
from infra.stack import LocalStack
from ingestion.kafka_publisher import ProfilePublisher, ensure_topics
from ingestion.producer import ProfileProducer, seal_envelopes, split_batch
from ingestion.synthetic import SyntheticSource
from stores.subject_keys import subject_key_store


def stage_rates(batch_size: int, batches: int) -> tuple[float, float, float]:
    """Profiles/s of generation alone, of validation + minimization + envelope serialization, and of
    sealing the identifiers (AES-GCM, keys already at hand) + serialization."""
    source = SyntheticSource(1)
    started = time.perf_counter()
    generated = [source.next_batch(batch_size) for _ in range(batches)]
    generation_rate = batch_size * batches / (time.perf_counter() - started)
    started = time.perf_counter()
    for batch in generated:
        for envelope in split_batch(batch, "synthetic", datetime.now(UTC), RecordLimits(), "1.4").envelopes:
            envelope.model_dump_json()
    envelope_rate = batch_size * batches / (time.perf_counter() - started)
    envelopes = [
        split_batch(batch, "synthetic", datetime.now(UTC), RecordLimits(), "1.4").envelopes
        for batch in generated
    ]
    keys = {e.user["login"]["uuid"]: new_data_key() for batch in envelopes for e in batch}
    started = time.perf_counter()
    for batch in envelopes:
        for envelope in seal_envelopes(batch, keys)[0]:
            envelope.model_dump_json()
    sealing_rate = batch_size * batches / (time.perf_counter() - started)
    return generation_rate, envelope_rate, sealing_rate


def main() -> None:
    # Synthetic data on throwaway stores: the public default secrets are fine (see SecretSettings).
    os.environ.setdefault("USERPULSE_SECRETS__DEVELOPMENT_MODE", "true")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    settings = get_settings()

    generation_rate, envelope_rate, sealing_rate = stage_rates(args.batch_size, batches=4)
    print(f"generation only:            {generation_rate:>10,.0f} profiles/s")
    print(f"validate + minimize + JSON: {envelope_rate:>10,.0f} profiles/s")
    print(f"seal identifiers + JSON:    {sealing_rate:>10,.0f} profiles/s")

    stack = LocalStack(settings)
    started_stack = not stack.all_answering()
    if started_stack:
        stack.up()
    topic = f"bench_producer_{uuid.uuid4().hex[:8]}"
    try:
        ensure_topics(settings, {topic: settings.kafka.topic_partitions, f"{topic}.dlq": 1})
        # As `userpulse produce` runs: each new subject gets a key in Cassandra, identifiers are sealed.
        with (
            ProfilePublisher(settings, topic, f"{topic}.dlq") as publisher,
            subject_key_store(settings) as keys,
        ):
            producer = ProfileProducer(SyntheticSource(2), publisher, args.batch_size, subject_keys=keys)
            started = time.perf_counter()
            producer.run(count=args.count)  # returns after flush: every record acknowledged
            elapsed = time.perf_counter() - started
        counts = publisher.counts()
        print(
            f"into Kafka (acks=all, idempotent, {settings.producer.compression_type}, "
            f"{settings.kafka.topic_partitions} partitions, sealed: {settings.producer.seal_identifiers}): "
            f"{counts.sent:,} profiles in {elapsed:.1f} s = "
            f"{counts.sent / elapsed:,.0f} profiles/s, {counts.bytes_sent / elapsed / 1e6:,.1f} MB/s "
            f"of JSON envelopes (failed {counts.failed})"
        )
    finally:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        admin.delete_topics([topic, f"{topic}.dlq"])
        admin.close()
        if started_stack:
            stack.down()


if __name__ == "__main__":
    main()
