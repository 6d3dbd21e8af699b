"""One rule for both layers: after every step of the pipeline, the merged view equals a recount.

The rule (``core.versions``, ``docs/architecture.md``): a uuid is counted once, in the window of its first
copy, with the attributes of its latest copy, if that copy is old enough; the batch view covers the records
of the speed layer's batches up to its horizon and the speed partials the rest, so every record is counted
by exactly one layer. These tests run the real Kafka, Spark/Delta, Cassandra and FerretDB.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from pyspark.sql import SparkSession

from core.settings import Settings
from ingestion.synthetic import SyntheticSource
from tests.integration.support.pipeline import Pipeline
from tests.integration.support.processes import cli_environment

pytestmark = pytest.mark.integration

BASE = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
"""Event times of the produced profiles start here (in the past: a fetch time may not be ahead of now)."""

COUNTRIES = ("Atlantis", "Lemuria", "Mu")


def profiles(seed: int, count: int) -> list[dict[str, Any]]:
    """Synthetic users (the API's shape), deterministic for a seed."""
    return SyntheticSource(seed, now=BASE).next_batch(count)


def envelope(user: dict[str, Any], fetched_at: datetime) -> dict[str, Any]:
    return {"user": copy.deepcopy(user), "fetched_at": fetched_at}


def assert_merged_equals_recount(pipeline: Pipeline) -> None:
    merged, timeline = pipeline.merged()
    expected, expected_timeline = pipeline.expected()
    assert merged == expected
    assert timeline == expected_timeline


def test_a_profile_refetched_after_the_cutoff_is_counted_once_with_its_latest_attributes(
    spark: SparkSession, own_stores: Callable[[str], Settings]
) -> None:
    """Regression: 260 new profiles, then 20 of them re-fetched in another country with the speed layer
    ahead of the archive. The first copies are before the batch cutoff, the latest after it; the merged
    view must count 280 before and after the recomputation that moves the cutoff past the re-fetches."""
    pipeline = Pipeline(own_stores("refetch"), spark)
    users = profiles(17, 280)
    pipeline.produce(envelope(user, BASE + timedelta(seconds=5 * i)) for i, user in enumerate(users))
    pipeline.speed()
    pipeline.archive()
    first = pipeline.recompute()
    assert first.made_current and first.speed_batch_id is not None
    assert_merged_equals_recount(pipeline)

    refetched = []
    for user in users[:20]:
        changed = copy.deepcopy(user)
        changed["location"]["country"] = "Atlantis"
        refetched.append(envelope(changed, BASE + timedelta(minutes=90)))
    pipeline.produce(refetched)
    pipeline.speed()  # ahead of the archive: the batch view still counts the first copies' countries
    assert_merged_equals_recount(pipeline)
    merged, _ = pipeline.merged()
    assert merged[("country", "Atlantis")][0] == 20
    assert sum(n for (dimension, _), (n, *_) in merged.items() if dimension == "gender") == len(
        {u["login"]["uuid"] for u in users}
    )

    pipeline.archive()
    second = pipeline.recompute()  # the horizon moves past the re-fetches
    assert second.made_current and second.speed_batch_id > first.speed_batch_id  # type: ignore[operator]
    assert_merged_equals_recount(pipeline)

    # `userpulse views --json` prints the same merged view, with the batch view it comes from.
    printed = subprocess.run(
        [sys.executable, "-m", "userpulse.cli", "views", "--json"],
        env=cli_environment(pipeline.settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    document = json.loads(printed.stdout)
    assert document["freshness"]["batch_speed_batch_id"] == second.speed_batch_id
    listed = {
        (view["dimension"], v["value"]): (v["profiles"], v["age_sum"], v["age_min"], v["age_max"])
        for view in document["dimensions"]
        for v in view["values"]
    }
    assert listed == pipeline.expected()[0]
    gender = next(view for view in document["dimensions"] if view["dimension"] == "gender")
    assert gender["batch_profiles"] == gender["profiles"] == 280 and gender["speed_profiles"] == 0


def test_a_recomputation_after_every_subject_was_erased_counts_nobody(
    spark: SparkSession, own_stores: Callable[[str], Settings]
) -> None:
    """Regression (found by the property test): with every subject erased the silver table is empty, and
    Spark dropped the observation of the view's count from the plan."""
    pipeline = Pipeline(own_stores("all_erased"), spark)
    users = profiles(31, 3)
    pipeline.produce(envelope(user, BASE + timedelta(minutes=i)) for i, user in enumerate(users))
    pipeline.archive()
    for user in users:
        pipeline.erase(user["login"]["uuid"])
    pipeline.archive()
    result = pipeline.recompute()
    assert result.made_current and result.profiles == 0
    assert pipeline.merged() == ({}, {}) == pipeline.expected()


class LambdaMachine(RuleBasedStateMachine):
    """Random sequences of records and pipeline runs; the merged view checked after every step."""

    def __init__(self, make_settings: Callable[[str], Settings], spark: SparkSession) -> None:
        super().__init__()
        self.pipeline = Pipeline(make_settings("lambda"), spark)
        self.pool = profiles(23, 60)
        self.next_user = 0
        self.clock = 0.0
        """Minutes after ``BASE`` of the next new profile."""
        self.latest: dict[str, dict[str, Any]] = {}
        """uuid -> the envelope of its newest copy so far (what a re-fetch starts from)."""

    @initialize()
    def start(self) -> None:
        self.new_profiles(3)

    def live(self) -> list[str]:
        return [uuid for uuid in self.latest if uuid not in self.pipeline.erased]

    @rule(count=st.integers(1, 6), minor=st.booleans())
    def new_profiles(self, count: int, minor: bool = False) -> None:
        batch = []
        for _ in range(count):
            if self.next_user >= len(self.pool):
                return
            user = copy.deepcopy(self.pool[self.next_user])
            self.next_user += 1
            if minor:
                user["dob"] = {"date": (BASE - timedelta(days=365 * 15)).isoformat().replace("+00:00", "Z")}
            self.clock += 0.4
            batch.append(envelope(user, BASE + timedelta(minutes=self.clock)))
        self.pipeline.produce(batch)
        for item in batch:
            self.latest[item["user"]["login"]["uuid"]] = item

    @rule(data=st.data())
    def refetch_with_changes(self, data: st.DataObject) -> None:
        live = self.live()
        if not live:
            return
        uuid = data.draw(st.sampled_from(live))
        changed = copy.deepcopy(self.latest[uuid])
        changed["user"]["location"]["country"] = data.draw(st.sampled_from(COUNTRIES))
        if data.draw(st.booleans()):  # another birth date: another age, band, minimum and maximum
            years = data.draw(st.integers(16, 70))
            changed["user"]["dob"] = {
                "date": (BASE - timedelta(days=365 * years + 40)).isoformat().replace("+00:00", "Z")
            }
        self.clock += 0.3
        changed["fetched_at"] = BASE + timedelta(minutes=self.clock)
        self.pipeline.produce([changed])
        self.latest[uuid] = changed

    @rule(data=st.data())
    def exact_duplicate(self, data: st.DataObject) -> None:
        live = self.live()
        if live:
            self.pipeline.produce([copy.deepcopy(self.latest[data.draw(st.sampled_from(live))])])

    @rule(data=st.data(), earlier=st.floats(1, 30))
    def late_copy(self, data: st.DataObject, earlier: float) -> None:
        """A copy fetched before the first one seen (it moves the profile to an earlier window)."""
        live = self.live()
        if not live:
            return
        uuid = data.draw(st.sampled_from(live))
        first = min(c.order[0] for c in self.pipeline.copies if c.uuid == uuid)
        late = copy.deepcopy(self.latest[uuid])
        late["user"]["location"]["country"] = "Hyperborea"
        late["fetched_at"] = first - timedelta(minutes=earlier)
        self.pipeline.produce([late])

    @rule()
    def bad_record(self) -> None:
        self.pipeline.produce_bad(b'{"schema_version": 2, "user": "nobody"}')

    @rule(data=st.data())
    def erase(self, data: st.DataObject) -> None:
        live = self.live()
        if live:
            self.pipeline.erase(data.draw(st.sampled_from(live)))

    @rule()
    def speed_batch(self) -> None:
        self.pipeline.speed()

    @rule()
    def archive(self) -> None:
        self.pipeline.archive()

    @rule()
    def recompute(self) -> None:
        self.pipeline.recompute()

    @invariant()
    def merged_view_equals_the_recount(self) -> None:
        assert_merged_equals_recount(self.pipeline)


def test_the_merged_view_equals_a_recount_after_every_step(
    spark: SparkSession, own_stores: Callable[[str], Settings]
) -> None:
    run_state_machine_as_test(
        lambda: LambdaMachine(own_stores, spark),
        settings=settings(
            max_examples=4,
            stateful_step_count=15,
            deadline=None,
            derandomize=True,  # the same sequences on every run
            phases=(Phase.explicit, Phase.generate),  # a failure is reported as found (each step is seconds)
            suppress_health_check=list(HealthCheck),
        ),
    )
