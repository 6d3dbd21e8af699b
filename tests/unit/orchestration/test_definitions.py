"""Wiring: the Dagster definitions load, the jobs resolve, the graph is archive -> silver -> views (and
lake maintenance), silver is partitioned by ingestion day, and archived days become one refresh range."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    BackfillPolicy,
    DagsterRunStatus,
    DailyPartitionsDefinition,
    RunRequest,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.test_utils import create_run_for_test

from core.settings import Settings
from orchestration.assets import ingestion_days, profile_archive
from orchestration.definitions import batch_layer_definitions
from orchestration.jobs import archive_job, refresh_job
from orchestration.metadata import days_from_text, offsets_from_text, offsets_text
from orchestration.resources import KafkaResource, PlatformSettings, batch_layer_resources
from orchestration.runs import ARCHIVE_ASSET, ARCHIVE_JOB, REFRESH_DUE_WITHIN_S, REFRESH_JOB, batch_layer_busy
from orchestration.sensors import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    partition_range_tags,
    refresh_range,
)

defs = batch_layer_definitions(Settings())
"""The definitions of the default settings."""
refresh_appended_days = defs.resolve_sensor_def("refresh_appended_days")
new_offsets_waiting = defs.resolve_sensor_def("new_offsets_waiting")


def test_definitions_load_and_the_jobs_resolve() -> None:
    graph = defs.resolve_asset_graph()

    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "profile_archive",
        "silver_profiles",
        "batch_views",
        "lake_maintenance",
    }
    assert graph.get(AssetKey("silver_profiles")).parent_keys == {AssetKey("profile_archive")}
    assert graph.get(AssetKey("batch_views")).parent_keys == {AssetKey("silver_profiles")}
    assert graph.get(AssetKey("lake_maintenance")).parent_keys == {
        AssetKey("profile_archive"),
        AssetKey("silver_profiles"),
    }
    assert defs.resolve_job_def("archive_topic").asset_layer.selected_asset_keys == {
        AssetKey("profile_archive")
    }
    assert defs.resolve_job_def("refresh_views").asset_layer.selected_asset_keys == {
        AssetKey("silver_profiles"),
        AssetKey("batch_views"),
    }
    assert defs.resolve_job_def("maintain_lake").asset_layer.selected_asset_keys == {
        AssetKey("lake_maintenance")
    }
    assert defs.resolve_schedule_def("archive_topic_schedule").cron_schedule == "*/15 * * * *"
    assert defs.resolve_schedule_def("maintain_lake_schedule").cron_schedule == "30 3 * * *"
    assert defs.resolve_sensor_def("new_offsets_waiting").job_name == "archive_topic"
    assert defs.resolve_sensor_def("refresh_appended_days").job_name == "refresh_views"


def test_only_silver_is_partitioned_by_ingestion_day_and_backfilled_in_one_run() -> None:
    graph = defs.resolve_asset_graph()
    silver = graph.get(AssetKey("silver_profiles"))

    assert isinstance(silver.partitions_def, DailyPartitionsDefinition)
    assert silver.partitions_def.timezone == "UTC"
    assert silver.backfill_policy == BackfillPolicy.single_run()
    assert graph.get(AssetKey("profile_archive")).partitions_def is None
    assert graph.get(AssetKey("batch_views")).partitions_def is None


def test_appended_days_become_one_range_cut_to_the_partitions() -> None:
    partitions = DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)

    assert refresh_range({date(2026, 3, 4), date(2026, 3, 2)}, partitions) == ("2026-03-02", "2026-03-04")
    assert refresh_range({date(2025, 12, 30), date(2026, 1, 2)}, partitions) == ("2026-01-01", "2026-01-02")
    assert refresh_range({date(2025, 12, 30)}, partitions) is None
    assert refresh_range(set(), partitions) is None
    request = RunRequest(tags=partition_range_tags("2026-03-02", "2026-03-04"))
    assert (request.partition_key_range.start, request.partition_key_range.end) == (
        "2026-03-02",
        "2026-03-04",
    )


def test_metadata_texts_round_trip() -> None:
    assert offsets_from_text(offsets_text({2: 7, 0: 12})) == {0: 12, 2: 7}
    assert offsets_from_text("") == {}
    assert days_from_text("2026-11-22,2026-11-23") == [date(2026, 11, 22), date(2026, 11, 23)]
    assert days_from_text("") == []


def test_resource_overrides_replace_single_settings() -> None:
    settings = PlatformSettings(
        overrides={"kafka.profiles_topic": "t1", "cassandra.keyspace": "ks1"}
    ).settings()

    assert (settings.kafka.profiles_topic, settings.cassandra.keyspace) == ("t1", "ks1")
    assert settings.kafka.port == 9092  # everything else as configured


def test_every_resource_reads_the_same_overridden_settings() -> None:
    resources = batch_layer_resources({"cassandra.keyspace": "ks2"})

    assert set(resources) == {"platform", "spark", "cassandra", "mongo", "kafka"}
    for name in ("spark", "cassandra", "mongo", "kafka"):
        assert resources[name].settings().cassandra.keyspace == "ks2"


def test_importing_the_definitions_reads_no_settings() -> None:
    """Settings are read when Dagster loads the definitions: an invalid one fails the load, not the
    import (``dagster dev`` then says which setting, and tests build definitions of their own)."""
    code = (
        "import orchestration.definitions as module; print('imported'); "
        "from dagster import Definitions; module.defs()"
    )
    environment = {**os.environ, "USERPULSE_BATCH_LAYER__ARCHIVE_SCHEDULE": "not a cron"}
    ran = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert ran.stdout.strip().splitlines()[-1] == "imported"
    assert ran.returncode != 0 and "archive_schedule" in ran.stderr


def test_the_partitions_start_at_the_configured_day() -> None:
    settings = Settings.model_validate({"batch_layer": {"partitions_start_date": "2026-02-03"}})
    silver = batch_layer_definitions(settings).resolve_asset_graph().get(AssetKey("silver_profiles"))

    assert silver.partitions_def.get_first_partition_key() == "2026-02-03"
    assert ingestion_days(settings).get_first_partition_key() == "2026-02-03"


def test_the_archive_schedule_comes_from_the_settings() -> None:
    """``batch_layer.archive_schedule`` sets the cron (the demo sets it to every minute)."""
    code = (
        "from orchestration.definitions import defs; "
        "print(defs().resolve_schedule_def('archive_topic_schedule').cron_schedule)"
    )
    environment = {**os.environ, "USERPULSE_BATCH_LAYER__ARCHIVE_SCHEDULE": "* * * * *"}
    printed = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    ).stdout
    assert printed.strip().splitlines()[-1] == "* * * * *"


def test_the_archive_trigger_turns_on_either_the_schedule_or_the_new_offsets_sensor() -> None:
    code = (
        "from orchestration.definitions import defs; d = defs(); "
        "print(d.resolve_schedule_def('archive_topic_schedule').default_status.value, "
        "d.resolve_sensor_def('new_offsets_waiting').default_status.value, "
        "d.resolve_sensor_def('new_offsets_waiting').minimum_interval_seconds)"
    )
    statuses = {}
    for trigger in ("schedule", "new_offsets"):
        environment = {
            **os.environ,
            "USERPULSE_BATCH_LAYER__ARCHIVE_TRIGGER": trigger,
            "USERPULSE_BATCH_LAYER__NEW_OFFSETS_CHECK_S": "10",
        }
        printed = subprocess.run(
            [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
        ).stdout
        statuses[trigger] = printed.strip().splitlines()[-1]
    assert statuses == {"schedule": "RUNNING STOPPED 10", "new_offsets": "STOPPED RUNNING 10"}


def test_the_batch_layer_jobs_are_the_archive_and_the_refresh() -> None:
    assert (archive_job.name, refresh_job.name, profile_archive.key) == (
        ARCHIVE_JOB,
        REFRESH_JOB,
        ARCHIVE_ASSET,
    )


def test_no_archive_starts_between_an_archive_and_the_refresh_it_asks_for() -> None:
    with instance_for_test() as instance:
        assert not batch_layer_busy(instance)
        instance.report_runless_asset_event(AssetMaterialization(ARCHIVE_ASSET))
        archived_at = instance.get_latest_materialization_event(ARCHIVE_ASSET).timestamp

        assert batch_layer_busy(instance)  # its refresh is due: the refresh sensor has not asked yet
        # A refresh that never comes (skipped: no day to do) holds the archive back only for a while.
        assert not batch_layer_busy(instance, now=archived_at + REFRESH_DUE_WITHIN_S + 1)

        create_run_for_test(instance, job_name="refresh_views", status=DagsterRunStatus.SUCCESS)
        assert not batch_layer_busy(instance)  # the refresh was asked for (and is done)


def test_no_archive_starts_while_the_batch_layer_runs_and_no_refresh_while_one_is() -> None:
    schedule = defs.resolve_schedule_def("archive_topic_schedule")
    for running_job in ("archive_topic", "refresh_views"):
        with instance_for_test() as instance:
            create_run_for_test(instance, job_name="archive_topic", status=DagsterRunStatus.SUCCESS)
            assert schedule.evaluate_tick(build_schedule_context(instance=instance)).run_requests

            create_run_for_test(instance, job_name=running_job, status=DagsterRunStatus.STARTED)
            assert not schedule.evaluate_tick(build_schedule_context(instance=instance)).run_requests

    # The new-offsets sensor waits too, before it even asks Kafka (an unreachable broker here).
    offline = KafkaResource(platform=PlatformSettings(overrides={"kafka.port": "1"}))
    for running_job in ("archive_topic", "refresh_views"):
        with instance_for_test() as instance:
            create_run_for_test(instance, job_name=running_job, status=DagsterRunStatus.STARTED)
            with build_sensor_context(
                instance=instance, cursor="0:5", resources={"kafka": offline}
            ) as context:
                waiting = new_offsets_waiting(context)
                assert isinstance(waiting, SkipReason) and "in flight or due" in str(waiting.skip_message)
                assert context.cursor == "0:5"

    with instance_for_test() as instance:
        create_run_for_test(instance, job_name="refresh_views", status=DagsterRunStatus.STARTING)
        context = build_sensor_context(instance=instance, cursor="7")
        skipped = refresh_appended_days(context)
        assert isinstance(skipped, SkipReason) and "in flight" in str(skipped.skip_message)
        assert context.cursor == "7"  # kept: the next tick covers what arrived meanwhile


def test_the_days_of_a_failed_refresh_are_refreshed_again_after_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    today = datetime.now(UTC).date().isoformat()
    with instance_for_test() as instance:
        instance.report_runless_asset_event(
            AssetMaterialization(ARCHIVE_ASSET, metadata={"appended_days": yesterday})
        )
        context = build_sensor_context(instance=instance)
        first = refresh_appended_days(context)
        assert isinstance(first, RunRequest) and first.tags[PARTITION_RANGE_START_TAG] == yesterday
        covered = context.cursor

        # The run fails (a store down, say); meanwhile the archive appends to another day.
        create_run_for_test(
            instance, job_name="refresh_views", status=DagsterRunStatus.FAILURE, tags=first.tags
        )
        instance.report_runless_asset_event(
            AssetMaterialization(ARCHIVE_ASSET, metadata={"appended_days": today})
        )
        paused = refresh_appended_days(build_sensor_context(instance=instance, cursor=covered))
        assert isinstance(paused, SkipReason) and "failed" in str(paused.skip_message)

        monkeypatch.setattr("orchestration.sensors.REFRESH_RETRY_AFTER_S", 0.0)
        context = build_sensor_context(instance=instance, cursor=covered)
        retry = refresh_appended_days(context)
        # Both days: the failed run's and the new one, under a run key of its own.
        assert isinstance(retry, RunRequest)
        assert (retry.tags[PARTITION_RANGE_START_TAG], retry.tags[PARTITION_RANGE_END_TAG]) == (
            yesterday,
            today,
        )
        assert retry.run_key != first.run_key and "retry" in (retry.run_key or "")

        # Once that run succeeded, nothing is asked again.
        create_run_for_test(
            instance, job_name="refresh_views", status=DagsterRunStatus.SUCCESS, tags=retry.tags
        )
        done = refresh_appended_days(build_sensor_context(instance=instance, cursor=context.cursor))
        assert isinstance(done, SkipReason) and "no archive materialization" in str(done.skip_message)
