"""The whole pipeline of one test on the real stack: its own topic, stores and lake, each step callable.

Profiles are produced as the producer publishes them (sealed under their subject's key, keyed by uuid);
the speed layer, the archive, the batch recomputation and erasure run the platform's own functions; the
merged view is read through serving. ``expected`` recounts, independently of ``core``, what the merged
view must show: the rule over every record the speed layer has processed, erased subjects left out.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kafka import KafkaProducer
from pyspark.sql import SparkSession

from batch_layer.archive import run_archive
from batch_layer.recompute import BatchViewVersion, recompute_batch_views, refresh_silver_profiles
from core.profile import profile_envelope
from core.settings import Settings
from privacy.erasure import erase_subjects
from serving.views import TOTAL_DIMENSION, ServingViews, TimeRange
from speed_layer.job import speed_layer_job
from stores.connections import cassandra_session
from stores.subject_keys import subject_key_store
from tests.integration.support.kafka_helpers import create_topic
from tests.integration.support.profiles_input import AgeCounts, Copy, all_time, recount

Figures = dict[tuple[str, str], tuple[int, int, int | None, int | None]]


def figures_of(totals: dict[tuple[str, str], Counter[int]]) -> Figures:
    """(dimension, value) -> (profiles, age sum, youngest, oldest) of profiles per age."""
    result: Figures = {}
    for key, ages in totals.items():
        present = [age for age, n in ages.items() if n > 0]
        if sum(ages.values()):
            result[key] = (
                sum(ages.values()),
                sum(a * n for a, n in ages.items()),
                min(present),
                max(present),
            )
    return result


@dataclass
class Pipeline:
    """One test's pipeline: what it produced, and what the speed layer has processed so far."""

    settings: Settings
    spark: SparkSession
    copies: list[Copy] = field(default_factory=list)
    """Every valid record produced, in order, with its Kafka coordinates."""
    bad_records: int = 0
    processed: int = 0
    """How many of ``copies`` the speed layer has processed (all those produced before its last run)."""
    archived: int = 0
    """How many of ``copies`` the archive holds."""
    view_covers: int | None = None
    """How many of ``copies`` the current batch view covers when it covers the archive without the speed
    layer (it was computed before any speed batch); None otherwise."""
    erased: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        create_topic(self.settings, self.settings.kafka.profiles_topic)

    # --- steps ------------------------------------------------------------------------------------

    def produce(self, envelopes: Iterable[dict[str, Any]]) -> None:
        """Publish envelopes (user, fetched_at, source) sealed as the producer seals them."""
        envelopes = list(envelopes)
        uuids = [e["user"]["login"]["uuid"] for e in envelopes]
        with subject_key_store(self.settings, enabled=True) as keys:
            assert keys is not None
            data_keys = keys.keys_creating_missing(uuids)
        producer = KafkaProducer(bootstrap_servers=self.settings.kafka.bootstrap_servers, acks="all")
        try:
            sent = []
            for envelope in envelopes:
                uuid = envelope["user"]["login"]["uuid"]
                assert uuid in data_keys, "the test does not publish an erased subject's profile"
                published = profile_envelope(envelope["user"], "synthetic", envelope["fetched_at"], "1.4")
                value = published.sealed_with(data_keys[uuid]).value()
                future = producer.send(self.settings.kafka.profiles_topic, key=uuid.encode(), value=value)
                as_read = {**json.loads(published.value()), "user": copy.deepcopy(envelope["user"])}
                sent.append((as_read, future))
            for as_read, future in sent:  # all in flight at once, recorded in the order sent
                metadata = future.get(timeout=60)
                self.copies.append(Copy(as_read, metadata.partition, metadata.offset))
        finally:
            producer.close()

    def produce_users_then_moves(self, users: list[dict[str, Any]], start: datetime, moved: int) -> None:
        """``users`` fetched a second apart from ``start``, then the first ``moved`` of them fetched again
        20 minutes later, living in another country: later versions of the same profiles."""
        self.produce({"user": u, "fetched_at": start + timedelta(seconds=i)} for i, u in enumerate(users))
        later_versions = []
        for user in users[:moved]:
            later = copy.deepcopy(user)
            later["location"]["country"] = "Atlantis"
            later_versions.append({"user": later, "fetched_at": start + timedelta(minutes=20)})
        self.produce(later_versions)

    def produce_bad(self, value: bytes, key: str | None = None, timestamp_ms: int | None = None) -> int:
        """Publish a record the layers cannot use (with the Kafka timestamp given, or now); returns its
        partition."""
        producer = KafkaProducer(bootstrap_servers=self.settings.kafka.bootstrap_servers, acks="all")
        try:
            metadata = producer.send(
                self.settings.kafka.profiles_topic,
                key=key.encode() if key else None,
                value=value,
                timestamp_ms=timestamp_ms,
            ).get(timeout=30)
        finally:
            producer.close()
        self.bad_records += 1
        return int(metadata.partition)

    def speed(self) -> None:
        """The speed layer over everything the topic holds now."""
        with speed_layer_job(self.settings, self.spark) as job:
            job.run_until_consumed(timeout_s=600)
        self.processed = len(self.copies)

    def archive(self) -> None:
        run_archive(self.settings, self.spark)
        self.archived = len(self.copies)

    def recompute(self) -> BatchViewVersion:
        refresh_silver_profiles(self.settings, self.spark)
        result = recompute_batch_views(self.settings, self.spark)
        if result.made_current:
            self.view_covers = self.archived if result.speed_batch_id is None else None
        return result

    def erase(self, uuid: str) -> None:
        erase_subjects(self.settings, self.spark, [uuid], "test")
        self.erased.add(uuid)

    # --- what serving shows, and what it should show ----------------------------------------------

    def merged(self) -> tuple[Figures, dict[datetime, int]]:
        """Every dimension's merged figures, all time, and the profiles per window."""
        cluster, session = cassandra_session(self.settings)
        try:
            cassandra = self.settings.cassandra
            views = ServingViews(
                session, cassandra.keyspace, self.settings.speed_layer.job_name, cassandra.concurrency
            )
            figures = {
                (view.dimension, v.value): (v.profiles, v.age_sum, v.age_min, v.age_max)
                for view in views.dimensions(("country", "gender", "nationality", "email_domain", "age_band"))
                for v in view.values
            }
            timeline = {w.window_start: w.profiles for w in views.timeline(TimeRange(), TOTAL_DIMENSION)}
        finally:
            cluster.shutdown()
        return figures, timeline

    def expected_counts(self) -> AgeCounts:
        """The rule over what the merged view covers: the records the speed layer processed, or those a
        batch view computed without the speed layer covers (serving then leaves the speed layer out)."""
        covered = self.processed if self.view_covers is None else self.view_covers
        kept = [c for c in self.copies[:covered] if c.uuid not in self.erased]
        return recount(kept)

    def expected(self) -> tuple[Figures, dict[datetime, int]]:
        counts = self.expected_counts()
        timeline: dict[datetime, int] = {}
        for (dimension, window, _), ages in counts.items():
            if dimension == TOTAL_DIMENSION:
                timeline[window] = timeline.get(window, 0) + sum(ages.values())
        return figures_of(all_time(counts)), {w: n for w, n in timeline.items() if n}
