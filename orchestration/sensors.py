"""Sensors: each archive materialization records the ingestion days it appended to, and
``refresh_appended_days`` asks for one ``refresh_views`` run over exactly those days; ``new_offsets_waiting``
(on with ``batch_layer.archive_trigger = new_offsets``, as in the demo) starts an archive when the topic
has new offsets."""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

import time
from datetime import date

from dagster import (
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    DailyPartitionsDefinition,
    DefaultSensorStatus,
    RunRecord,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from core.settings import Settings
from orchestration.assets import profile_archive
from orchestration.jobs import archive_job, refresh_job
from orchestration.metadata import days_from_text, offsets_text
from orchestration.resources import KafkaResource
from orchestration.runs import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    batch_layer_busy,
    job_in_flight,
)

MATERIALIZATIONS_AFTER_TAG = "userpulse/archive_materializations_after"
"""Tag of a refresh run the sensor requested: it covers the archive materializations after this storage
id (empty: from the first)."""
REFRESH_RETRY_AFTER_S = 60.0
"""Pause between a refresh run's failure and the run that does its days again (a store outage has time
to end; a persistent error does not start a run every tick)."""


def new_offsets_waiting(settings: Settings) -> SensorDefinition:
    """The sensor that starts the archiving when the topic has offsets the archive has not consumed yet
    (on with ``batch_layer.archive_trigger = new_offsets``; looks every ``new_offsets_check_s``)."""

    @sensor(
        name="new_offsets_waiting",
        job=archive_job,
        minimum_interval_seconds=settings.batch_layer.new_offsets_check_s,
        default_status=(
            DefaultSensorStatus.RUNNING
            if settings.batch_layer.archive_trigger == "new_offsets"
            else DefaultSensorStatus.STOPPED
        ),
    )
    def new_offsets_waiting(
        context: SensorEvaluationContext, kafka: KafkaResource
    ) -> RunRequest | SkipReason:
        """Start the archiving when the topic has new offsets and no batch run is going."""
        if batch_layer_busy(context.instance):
            # The cursor stays: the offsets that arrive meanwhile are archived by the run after it.
            return SkipReason("an archive or refresh run is in flight or due")
        end_offsets = kafka.end_offsets()
        cursor = offsets_text(end_offsets)
        if not end_offsets or cursor == context.cursor:
            return SkipReason("no new offsets since the last run request")
        context.update_cursor(cursor)
        return RunRequest(run_key=cursor)

    return new_offsets_waiting


def refresh_range(days: set[date], partitions: DailyPartitionsDefinition) -> tuple[str, str] | None:
    """The partition range covering ``days``, cut to the days the partitions offer (None if none left)."""
    first_key, last_key = partitions.get_first_partition_key(), partitions.get_last_partition_key()
    if not days or first_key is None or last_key is None:
        return None
    first = max(min(days).isoformat(), first_key)  # ISO dates: text order is date order
    last = min(max(days).isoformat(), last_key)
    return (first, last) if first <= last else None


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make a run cover the partitions from ``first`` to ``last`` (both included)."""
    return {PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last}


def failed_refresh(instance: DagsterInstance) -> RunRecord | None:
    """The last ``refresh_views`` run, if this sensor requested it and it failed or was canceled: the
    days it was to refresh still are to be refreshed."""
    records = instance.get_run_records(RunsFilter(job_name=refresh_job.name), limit=1)
    if not records:
        return None
    run = records[0].dagster_run
    failed = run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
    return records[0] if failed and MATERIALIZATIONS_AFTER_TAG in run.tags else None


def refresh_appended_days(days_partitions: DailyPartitionsDefinition) -> SensorDefinition:
    """The sensor that refreshes silver and the views for the days archive runs appended to, cut to
    ``days_partitions`` (``ingestion_days(settings)``)."""

    @sensor(
        name="refresh_appended_days",
        job=refresh_job,
        minimum_interval_seconds=15,
        default_status=DefaultSensorStatus.RUNNING,
    )
    def refresh_appended_days(context: SensorEvaluationContext) -> RunRequest | SkipReason:
        """After archive materializations, refresh silver and the views for the days they appended to.

        Reads every archive materialization since its cursor (not only the latest: two archive runs between
        ticks may have appended to different days) and requests one run over the range of their days. The
        run's tags say which materializations it covers: when it fails, the next request covers them again
        (``REFRESH_RETRY_AFTER_S`` after the failure), with whatever was archived meanwhile.
        """
        if job_in_flight(context.instance, refresh_job.name):
            # The cursor stays: the next tick after that run covers these materializations too, in one run.
            return SkipReason("a refresh_views run is still in flight")
        after = int(context.cursor) if context.cursor else None
        retry_of = failed_refresh(context.instance)
        if retry_of is not None:
            ended = retry_of.end_time or retry_of.create_timestamp.timestamp()
            if time.time() - ended < REFRESH_RETRY_AFTER_S:
                return SkipReason(f"refresh run {retry_of.dagster_run.run_id} failed: retried after a pause")
            covered_after = retry_of.dagster_run.tags[MATERIALIZATIONS_AFTER_TAG]
            after = int(covered_after) if covered_after else None
        days: set[date] = set()
        last_seen = after
        page: str | None = None
        while True:
            result = context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=profile_archive.key, after_storage_id=after),
                limit=100,
                cursor=page,
                ascending=True,
            )
            for record in result.records:
                last_seen = record.storage_id
                materialization = record.asset_materialization
                appended = materialization.metadata.get("appended_days") if materialization else None
                days.update(days_from_text(str(appended.value)) if appended is not None else ())
            if not result.has_more:
                break
            page = result.cursor
        if last_seen == after:
            return SkipReason("no archive materialization since the last tick")
        context.update_cursor(str(last_seen))
        selected = refresh_range(days, days_partitions)
        if selected is None:
            return SkipReason(f"the archive appended to no day the partitions offer ({sorted(days)})")
        run_key = f"archive-{last_seen}"
        if retry_of is not None:  # a run key is requested once: the retry needs its own
            run_key += f"-retry-of-{retry_of.dagster_run.run_id}"
        tags = {
            **partition_range_tags(*selected),
            MATERIALIZATIONS_AFTER_TAG: "" if after is None else str(after),
        }
        return RunRequest(run_key=run_key, tags=tags)

    return refresh_appended_days
