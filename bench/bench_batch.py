"""Batch-layer benchmark: archive and recompute time for N synthetic profiles, and how it scales.

    .venv/bin/python bench/bench_batch.py [--profiles 1000000 5000000] [--pool 20000] [--event-rate 1000]
                                          [--sealed]

For each size, a fresh topic is filled with N profiles, then the batch layer runs on it as
``userpulse batch archive`` and ``userpulse batch recompute`` would, each step timed:

1. archive: the topic into the Delta archive (``run_archive``, Structured Streaming ``availableNow``);
2. silver: the archive into the silver table (``refresh_silver_profiles``, every day);
3. views: silver into a new version of the Cassandra batch views (``recompute_batch_views``).

Filling: producing 5M profiles through kafka-python takes ~17 min (~5,000/s, see bench_producer.py),
so a pool of ``--pool`` synthetic profiles is generated and validated by the producer's own code
(``split_batch``: the same envelope, credentials removed), then replicated by Spark's Kafka sink: each
copy gets a fresh ``login.uuid`` (also the record key, so deduplication does not collapse copies) and
a ``fetched_at`` spread at ``--event-rate`` profiles per second of event time. Records are gzip
compressed, as the producer sends them. Filling is timed too but is not part of the figures.

With ``--sealed``, the records are sealed as the producer seals them by default (version 2): each
copy's direct identifiers are encrypted by Spark (``aes_encrypt``, AES-256-GCM, the copy's uuid as
associated data, the layout ``core.sealing`` writes) under a key of its own, and every copy's key is
stored in the keyspace's ``subject_keys`` before the steps run (not timed). The silver step then pays
what it pays in production: reading every subject key and opening every record.

Starts the local stack if it is not running (and stops it after). Every size uses its own topic,
keyspace, lake and checkpoint folders, removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from batch_layer.archive import run_archive
from batch_layer.recompute import recompute_batch_views, refresh_silver_profiles
from core.sealing import new_data_key, split_identifiers
from core.settings import Settings, get_settings
from core.spark import build_spark_session
from core.validation import RecordLimits
from infra.isolation import drop_own_stores, own_settings
from infra.stack import LocalStack
from ingestion.kafka_publisher import ensure_topics
from ingestion.producer import split_batch
from ingestion.synthetic import SyntheticSource
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session
from stores.subject_keys import SubjectKeyStore

UUID_MARK = "@@UUID@@"
FETCHED_AT_MARK = "@@FETCHED_AT@@"
SEALED_MARK = "@@SEALED@@"
_FETCHED_AT_JSON = re.compile(r'"fetched_at":"[^"]*"')
T = TypeVar("T")


@dataclass(frozen=True)
class Template:
    """One pool envelope as JSON with marks where each copy puts its own values."""

    text: str
    identifiers: str = ""
    """Sealed templates: the plaintext of the token (the JSON of the direct identifiers)."""


def envelope_templates(pool: int, seed: int = 7, sealed: bool = False) -> list[Template]:
    """``pool`` validated synthetic envelopes as JSON, their uuid, fetch time (and token) replaced by
    marks."""
    source = SyntheticSource(seed)
    templates: list[Template] = []
    while len(templates) < pool:
        count = min(5000, pool - len(templates))
        for envelope in split_batch(
            source.next_batch(count), "synthetic", datetime.now(UTC), RecordLimits(), "1.4"
        ).envelopes:
            profile_uuid = str(envelope.user["login"]["uuid"])
            identifiers = ""
            if sealed:
                identifiers = split_identifiers(envelope.user)[1].decode("utf-8")
                envelope = envelope.sealed_with(new_data_key())
                envelope = envelope.model_copy(update={"sealed": SEALED_MARK})
            text = envelope.model_dump_json()
            assert text.count(profile_uuid) == 1, "the uuid must appear once, as login.uuid"
            text = text.replace(profile_uuid, UUID_MARK)
            text, replaced = _FETCHED_AT_JSON.subn(f'"fetched_at":"{FETCHED_AT_MARK}"', text)
            assert replaced == 1
            templates.append(Template(text, identifiers))
    return templates


def uuid_column(number: Column, salt: str) -> Column:
    """A uuid-shaped, deterministic, unique string per number (an md5 of the run's salt and the number)."""
    digest = F.md5(F.concat_ws(":", F.lit(salt), number.cast("string")))
    parts = [(1, 8), (9, 4), (13, 4), (17, 4), (21, 12)]
    return F.concat_ws("-", *(F.substring(digest, start, length) for start, length in parts))


def copy_uuid(number: int, salt: str) -> str:
    """``uuid_column`` in Python: the uuid of copy ``number``."""
    digest = hashlib.md5(f"{salt}:{number}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def copy_key_column(number: Column, salt: str) -> Column:
    """The 32-byte data key of copy ``number`` (a SHA-256 of the run's salt and the number)."""
    return F.unhex(F.sha2(F.concat_ws(":", F.lit(salt), F.lit("key"), number.cast("string")), 256))


def copy_key(number: int, salt: str) -> bytes:
    """``copy_key_column`` in Python."""
    return hashlib.sha256(f"{salt}:key:{number}".encode()).digest()


def replicated_records(
    spark: SparkSession, templates: list[Template], profiles: int, salt: str, first_event: datetime, rate: int
) -> DataFrame:
    """``profiles`` Kafka records (key, value): the templates repeated, each with a fresh uuid and time
    (and, sealed, its identifiers sealed under its own key)."""
    pool = spark.createDataFrame(
        [(index, t.text, t.identifiers) for index, t in enumerate(templates)],
        "pool_index long, template string, identifiers string",
    )
    copies = spark.range(-(-profiles // len(templates))).withColumnRenamed("id", "copy")
    number = F.col("copy") * F.lit(len(templates)) + F.col("pool_index")
    fetched_at = F.timestamp_seconds(F.lit(first_event.timestamp()) + number / F.lit(rate))
    fetched_text = F.date_format(fetched_at, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
    key = uuid_column(number, salt)
    value = F.replace(
        F.replace(F.col("template"), F.lit(UUID_MARK), key), F.lit(FETCHED_AT_MARK), fetched_text
    )
    if templates[0].identifiers:
        # A random 12-byte nonce is generated and prepended (iv ""), as core.sealing lays tokens out;
        # Spark's base64 breaks lines every 76 characters (MIME), which JSON strings cannot hold.
        encrypted = F.base64(
            F.aes_encrypt(
                F.col("identifiers").cast("binary"), copy_key_column(number, salt),
                F.lit("GCM"), F.lit("DEFAULT"), F.lit(""), key.cast("binary"),
            )
        )  # fmt: skip
        token = F.translate(encrypted, "\r\n", "")
        value = F.replace(value, F.lit(SEALED_MARK), token)
    return copies.crossJoin(pool).where(number < profiles).select(key.alias("key"), value.alias("value"))


def fill_topic(
    spark: SparkSession, settings: Settings, templates: list[Template], profiles: int, rate: int
) -> None:
    """Write ``profiles`` records to the settings' topic with Spark's Kafka sink (gzip, acks=all)."""
    first_event = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
        seconds=profiles // rate
    )
    records = replicated_records(
        spark, templates, profiles, settings.kafka.profiles_topic, first_event, rate
    ).repartition(settings.spark.shuffle_partitions * 2)
    (
        records.write.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("topic", settings.kafka.profiles_topic)
        .option("kafka.acks", "all")
        .option("kafka.compression.type", settings.producer.compression_type)
        .option("kafka.linger.ms", str(settings.producer.linger_ms))
        .option("kafka.batch.size", str(settings.producer.batch_bytes))
        .save()
    )


def store_copy_keys(settings: Settings, profiles: int) -> None:
    """Store the data key of every copy in the keyspace's ``subject_keys``, as the producer would have."""
    cluster, session = cassandra_session(settings)
    try:
        cassandra = settings.cassandra
        apply_schema(session, cassandra.keyspace, cassandra.keyspace_replication)
        keys = SubjectKeyStore(
            session, cassandra.keyspace, settings.secrets.pseudonymization_key_bytes(), cassandra.concurrency
        )
        salt = settings.kafka.profiles_topic
        keys.write_keys(
            ((copy_uuid(n, salt), copy_key(n, salt)) for n in range(profiles)), cassandra.rows_per_batch
        )
    finally:
        cluster.shutdown()


@dataclass(frozen=True)
class Timings:
    """Seconds of each step for one size."""

    profiles: int
    fill: float
    archive: float
    silver: float
    views: float

    @property
    def recompute(self) -> float:
        return self.silver + self.views

    @property
    def total(self) -> float:
        return self.archive + self.recompute


def timed(step: str, profiles: int, action: Callable[[], T]) -> tuple[float, T]:
    """Run ``action()`` and print its duration and rate."""
    started = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - started
    print(f"  {step:<8} {elapsed:8.1f} s  {profiles / elapsed:>10,.0f} profiles/s  {result}", flush=True)
    return elapsed, result


def run_size(
    spark: SparkSession, base: Settings, templates: list[Template], profiles: int, rate: int
) -> Timings:
    """Fill a fresh topic with ``profiles`` records, then time the three batch steps on it."""
    name = f"bench_batch_{uuid.uuid4().hex[:8]}"
    settings = own_settings(base, name, base.paths.stack_dir / "bench" / name)
    print(f"{profiles:,} profiles (topic and keyspace {settings.kafka.profiles_topic})", flush=True)
    try:
        ensure_topics(settings, {settings.kafka.profiles_topic: settings.kafka.topic_partitions})
        fill, _ = timed("fill", profiles, lambda: fill_topic(spark, settings, templates, profiles, rate))
        if templates[0].identifiers:
            timed("keys", profiles, lambda: store_copy_keys(settings, profiles))
        archive, archived = timed("archive", profiles, lambda: run_archive(settings, spark))
        assert archived.records == profiles, archived
        silver, refreshed = timed("silver", profiles, lambda: refresh_silver_profiles(settings, spark))
        assert refreshed.profiles == profiles, refreshed
        views, _ = timed("views", profiles, lambda: recompute_batch_views(settings, spark))
        return Timings(profiles, fill, archive, silver, views)
    finally:
        drop_own_stores(base, name)
        shutil.rmtree(base.paths.stack_dir / "bench" / name, ignore_errors=True)


def report(settings: Settings, results: list[Timings]) -> None:
    """Profiles/s and seconds of each step per size, and how the times grow from one size to the next."""
    spark = settings.spark
    print(
        f"\nSpark {spark.master}, driver {spark.driver_memory}, {spark.shuffle_partitions} shuffle partitions"
    )
    for r in results:
        print(
            f"{r.profiles:>10,}: archive {r.profiles / r.archive:>7,.0f}/s ({r.archive:.0f} s), "
            f"recompute {r.profiles / r.recompute:>7,.0f}/s "
            f"({r.recompute:.0f} s = silver {r.silver:.0f} + views {r.views:.0f}), "
            f"both {r.profiles / r.total:>7,.0f}/s ({r.total:.0f} s)"
        )
    for small, large in itertools.pairwise(results):
        print(
            f"x{large.profiles / small.profiles:g} profiles: archive x{large.archive / small.archive:.2f} "
            f"time, recompute x{large.recompute / small.recompute:.2f}, both x{large.total / small.total:.2f}"
        )
    print(json.dumps([r.__dict__ for r in results]))


def main() -> None:
    # Synthetic data on throwaway stores: the public default secrets are fine (see SecretSettings).
    os.environ.setdefault("USERPULSE_SECRETS__DEVELOPMENT_MODE", "true")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("batch_layer").setLevel(logging.INFO)  # the silver refresh's phases
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--pool", type=int, default=20_000, help="distinct synthetic profiles replicated")
    parser.add_argument("--event-rate", type=int, default=1000, help="profiles per second of event time")
    parser.add_argument("--sealed", action="store_true", help="seal the records, as the producer does")
    args = parser.parse_args()
    base = get_settings()
    stack = LocalStack(base)
    started_stack = not stack.all_answering()
    if started_stack:
        stack.up()
    try:
        started = time.perf_counter()
        templates = envelope_templates(args.pool, sealed=args.sealed)
        print(f"pool of {len(templates):,} validated envelopes in {time.perf_counter() - started:.1f} s")
        spark = build_spark_session(base, app_name="userpulse-bench-batch")
        try:
            results = [run_size(spark, base, templates, n, args.event_rate) for n in args.profiles]
        finally:
            spark.stop()
        report(base, results)
    finally:
        if started_stack:
            stack.down()


if __name__ == "__main__":
    main()
