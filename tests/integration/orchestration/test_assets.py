"""The Dagster asset graph materialized in-process against the real services, with its checks; a
backfill of a range of ingestion days rewrites those days of silver and nothing else."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    PartitionKeyRange,
    build_sensor_context,
    materialize,
)
from kafka import KafkaProducer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.settings import Settings
from infra.isolation import drop_own_stores, own_stores_overrides
from ingestion.synthetic import SyntheticSource
from orchestration.assets import batch_views, ingestion_days, profile_archive, silver_profiles_asset
from orchestration.checks import (
    archive_holds_every_offset,
    batch_totals_match_silver,
    horizon_moves_forward,
    silver_has_no_null_uuid,
)
from orchestration.resources import PlatformSettings, batch_layer_resources
from orchestration.sensors import partition_range_tags
from orchestration.sensors import refresh_appended_days as refresh_sensor
from tests.integration.support.batch_views import stored_views
from tests.integration.support.kafka_helpers import create_topic
from tests.integration.support.profiles_input import (
    EVENT_BASE,
    Copy,
    all_time,
    envelope,
    produce_known_input,
    recount,
)

pytestmark = pytest.mark.integration

DAYS = ingestion_days(Settings())
silver_profiles = silver_profiles_asset(DAYS)
refresh_appended_days = refresh_sensor(DAYS)
ASSETS = [profile_archive, silver_profiles, batch_views]
CHECKS = [
    archive_holds_every_offset,
    silver_has_no_null_uuid,
    batch_totals_match_silver,
    horizon_moves_forward,
]


@pytest.fixture
def overrides(
    stack_settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The settings of the test's own topic, keyspace, database and lake, for the resources."""
    name = unique_name("dagster")
    create_topic(stack_settings, name)
    yield own_stores_overrides(stack_settings, name, tmp_path)
    drop_own_stores(stack_settings, name)


def test_the_asset_graph_materializes_with_passing_checks(
    spark: SparkSession, overrides: dict[str, str]
) -> None:
    settings = PlatformSettings(overrides=overrides).settings()
    produced = produce_known_input(settings, settings.kafka.profiles_topic)
    instance = DagsterInstance.ephemeral()

    today = datetime.now(UTC).date()  # the records' ingestion day (yesterday too, should midnight pass)
    result = materialize(
        [*ASSETS, *CHECKS],
        resources=batch_layer_resources(overrides),
        instance=instance,
        tags=partition_range_tags(str(today - timedelta(days=1)), str(today)),
    )

    assert result.success
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {
        "archive_holds_every_offset": True,
        "silver_has_no_null_uuid": True,
        "batch_totals_match_silver": True,
        "horizon_moves_forward": True,
    }
    # No speed layer here: the view covers the whole archive.
    _, _, windows, totals = stored_views(settings)
    assert windows == recount(produced.copies)
    assert totals == all_time(recount(produced.copies))

    # Records that arrive after the run are the next run's: the check holds the archive to the topic's
    # end offsets when its run started (a live producer never waits for the archive to catch up).
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    producer.send(settings.kafka.profiles_topic, key=b"late", value=b"{}").get(timeout=30)
    producer.close()

    def check_alone() -> AssetCheckEvaluation:
        run = materialize(
            [*ASSETS, archive_holds_every_offset],
            selection=AssetSelection.checks(archive_holds_every_offset),
            resources=batch_layer_resources(overrides),
            instance=instance,
            raise_on_error=False,
        )
        [evaluation] = run.get_asset_check_evaluations()
        return evaluation

    assert check_alone().passed
    # An archive that stopped short of what its run had to reach fails the check.
    instance.report_runless_asset_event(
        AssetMaterialization("profile_archive", metadata={"topic_end_offsets_at_start": "0:1000000"})
    )
    short = check_alone()
    assert not short.passed
    assert "0:" in str(short.metadata["partitions_behind"].value)


def produce_on_days(settings: Settings, records: list[tuple[date, dict[str, Any]]]) -> list[Copy]:
    """Envelopes with a Kafka timestamp at noon (UTC) of the given day, the day the archive files them."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=5)
    copies = []
    try:
        for day, value in records:
            metadata = producer.send(
                settings.kafka.profiles_topic,
                key=value["user"]["login"]["uuid"].encode(),
                value=json.dumps(value).encode(),
                timestamp_ms=int(datetime.combine(day, time(12), UTC).timestamp() * 1000),
            ).get(timeout=30)
            copies.append(Copy(value, metadata.partition, metadata.offset))
    finally:
        producer.close()
    return copies


def three_days_of_profiles(days: tuple[date, date, date]) -> list[tuple[date, dict[str, Any]]]:
    """Profiles ingested over three days, with versions of one profile on different days.

    Day 2 holds a later re-fetch of ten day-1 profiles (its attributes count, in the day-1 window); day
    3 holds late copies of ten day-2 profiles, fetched earlier than the day-2 versions (their window
    counts, with the day-2 attributes).
    """
    users = SyntheticSource(23, now=EVENT_BASE).next_batch(90)
    for user in users[60:63]:  # under age: never counted
        user["dob"] = {"date": "2015-06-01T08:00:00.000Z", "age": 11}

    def at(start: datetime, step_s: int, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [envelope(user, start + timedelta(seconds=step_s * i)) for i, user in enumerate(batch)]

    def changed(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The same profiles with the other gender: a version that must win or lose as a whole."""
        return [
            {**copy.deepcopy(user), "gender": "female" if user["gender"] == "male" else "male"}
            for user in batch
        ]

    first, second, third = days
    by_day = {
        first: at(EVENT_BASE, 7, users[:30]),
        second: at(EVENT_BASE + timedelta(seconds=210), 7, users[30:60])
        + at(EVENT_BASE + timedelta(minutes=15), 1, changed(users[:10])),
        third: at(EVENT_BASE + timedelta(minutes=25), 7, users[60:])
        + at(EVENT_BASE - timedelta(hours=1), 1, changed(users[30:40])),
    }
    return [(day, value) for day, values in by_day.items() for value in values]


def silver_by_day(
    spark: SparkSession, settings: Settings
) -> dict[date, tuple[set[str], set[tuple[str, str]]]]:
    """Per ingestion day: the data files holding it, and its (uuid, e-mail pseudonym) pairs."""
    silver = spark.read.format("delta").load(str(settings.paths.silver_table))
    rows = silver.select(
        "ingestion_date", F.col("_metadata.file_path").alias("file"), "uuid", "email_pseudonym"
    ).collect()
    days: dict[date, tuple[set[str], set[tuple[str, str]]]] = {}
    for row in rows:
        files, pairs = days.setdefault(row.ingestion_date, (set(), set()))
        files.add(row.file)
        pairs.add((row.uuid, row.email_pseudonym))
    return days


def materializations(result: Any, asset: Any) -> list[AssetMaterialization]:
    """The materializations of ``asset`` in an in-process run's result."""
    return [
        event.step_materialization_data.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key == asset.key
    ]


def test_a_backfill_of_a_day_range_rewrites_only_those_days(
    spark: SparkSession, overrides: dict[str, str]
) -> None:
    settings = PlatformSettings(overrides=overrides).settings()
    today = datetime.now(UTC).date()
    days = (today - timedelta(days=3), today - timedelta(days=2), today - timedelta(days=1))
    records = three_days_of_profiles(days)
    copies = produce_on_days(settings, records)
    instance = DagsterInstance.ephemeral()

    first = materialize(
        [*ASSETS, *CHECKS],
        resources=batch_layer_resources(overrides),
        instance=instance,
        tags=partition_range_tags(str(days[0]), str(days[2])),
    )

    assert first.success
    assert all(e.passed for e in first.get_asset_check_evaluations())
    # Day to day, the archive's materialization is what asks for a refresh, of exactly its days.
    request = refresh_appended_days(build_sensor_context(instance=instance))
    assert request.partition_key_range == PartitionKeyRange(str(days[0]), str(days[2]))
    expected = (recount(copies), all_time(recount(copies)))
    assert stored_views(settings)[2:] == expected
    before = silver_by_day(spark, settings)
    assert [len(before[day][1]) for day in days] == [30, 40, 40]  # every copy of the day
    [first_views] = materializations(first, batch_views)

    # A fix to backfill (here: a new pseudonymization key), for days 2 and 3 only.
    fixed = batch_layer_resources({**overrides, "secrets.pseudonymization_key": "rotated"})
    backfill = materialize(
        [*ASSETS, *CHECKS],
        selection=AssetSelection.assets(silver_profiles, batch_views),
        resources=fixed,
        instance=instance,
        tags=partition_range_tags(str(days[1]), str(days[2])),
    )

    assert backfill.success
    assert {e.check_name: e.passed for e in backfill.get_asset_check_evaluations()} == {
        "silver_has_no_null_uuid": True,
        "batch_totals_match_silver": True,
        "horizon_moves_forward": True,
    }
    assert {m.partition for m in materializations(backfill, silver_profiles)} == {str(days[1]), str(days[2])}
    after = silver_by_day(spark, settings)
    assert after[days[0]] == before[days[0]]  # the same files, the same pseudonyms: not rewritten
    for day in days[1:]:
        assert after[day][0].isdisjoint(before[day][0])  # new files
        assert {uuid for uuid, _ in after[day][1]} == {uuid for uuid, _ in before[day][1]}
        assert after[day][1].isdisjoint(before[day][1])  # every pseudonym rewritten with the new key
    # The views were recomputed from every day: a new version, the same counts.
    version, _, *views = stored_views(settings)
    assert tuple(views) == expected
    assert version != first_views.metadata["version"].value
