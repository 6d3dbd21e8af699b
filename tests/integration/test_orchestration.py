"""The Dagster asset graph materialized in-process against the real services, with its checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import AssetSelection, DagsterInstance, materialize
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from core.settings import Settings
from orchestration.definitions import (
    UserPulseResource,
    archive_holds_every_offset,
    batch_totals_match_silver,
    batch_views,
    cutoff_moves_forward,
    profile_archive,
    silver_has_no_null_uuid,
    silver_profiles,
)
from tests.integration.batch_views import batch_recount, stored_views
from tests.integration.kafka_helpers import create_topic, delete_topics, drop_keyspace
from tests.integration.profiles_input import known_input, produce_known_input

pytestmark = pytest.mark.integration

ASSETS = [profile_archive, silver_profiles, batch_views]
CHECKS = [
    archive_holds_every_offset,
    silver_has_no_null_uuid,
    batch_totals_match_silver,
    cutoff_moves_forward,
]


@pytest.fixture
def resource(
    stack_settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[UserPulseResource]:
    name = unique_name("dagster")
    create_topic(stack_settings, name)
    yield UserPulseResource(
        overrides={
            "kafka.profiles_topic": name,
            "kafka.host": stack_settings.kafka.host,
            "kafka.port": str(stack_settings.kafka.port),
            "cassandra.keyspace": name,
            "cassandra.host": stack_settings.cassandra.host,
            "cassandra.port": str(stack_settings.cassandra.port),
            "paths.lake_dir": str(tmp_path / "lake"),
            "paths.checkpoints_dir": str(tmp_path / "checkpoints"),
        }
    )
    delete_topics(stack_settings, name)
    drop_keyspace(stack_settings, name)


def test_the_asset_graph_materializes_with_passing_checks(
    spark: SparkSession, resource: UserPulseResource
) -> None:
    settings = resource.settings()
    produce_known_input(settings, settings.kafka.profiles_topic)
    instance = DagsterInstance.ephemeral()

    result = materialize([*ASSETS, *CHECKS], resources={"userpulse": resource}, instance=instance)

    assert result.success
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {
        "archive_holds_every_offset": True,
        "silver_has_no_null_uuid": True,
        "batch_totals_match_silver": True,
        "cutoff_moves_forward": True,
    }
    _, envelopes, _ = known_input()
    expected_cutoff, expected_windows, expected_totals = batch_recount(envelopes)
    _, cutoff, windows, totals = stored_views(settings)
    assert (cutoff, windows, totals) == (expected_cutoff, expected_windows, expected_totals)

    # Records that arrive after the run: the archive check now fails, until the archive runs again.
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    producer.send(settings.kafka.profiles_topic, key=b"late", value=b"{}").get(timeout=30)
    producer.close()
    stale = materialize(
        [*ASSETS, archive_holds_every_offset],
        selection=AssetSelection.checks(archive_holds_every_offset),
        resources={"userpulse": resource},
        instance=instance,
        raise_on_error=False,
    )
    [evaluation] = stale.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "1" in str(evaluation.metadata["partitions_behind"].value)
