"""Runs in flight: what the archive schedule and the refresh sensor wait for, and what a stopped Dagster
left behind.

When ``dagster dev`` is stopped (the demo's Ctrl-C), the run workers it launched die with it and their
runs stay STARTED in its storage for ever. The schedule and the sensor start nothing while a run of the
batch layer is in flight, so such a run would hold the batch layer back for good: before Dagster starts
on a home, nothing can be running on it, so every run still in flight then was abandoned.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter

IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
"""Run states of a run that has not finished yet."""


def job_in_flight(instance: DagsterInstance, job_name: str) -> bool:
    """Whether a run of ``job_name`` is queued or running (a second one would only compete with it)."""
    return bool(instance.get_run_records(RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1))


ARCHIVE_JOB, REFRESH_JOB = "archive_topic", "refresh_views"
"""The jobs of the batch layer's cycle: one of them at a time (each starts a Spark session)."""
ARCHIVE_ASSET = AssetKey("profile_archive")
REFRESH_DUE_WITHIN_S = 60.0
"""How soon after an archive materialization its refresh run is expected (the refresh sensor looks
every 15 s); past that, the archive no longer waits for it (it may have been skipped: no day to do)."""


def refresh_due(instance: DagsterInstance, now: float | None = None) -> bool:
    """Whether an archive materialized after the last refresh run was created, recently enough that the
    refresh sensor is about to ask for its refresh. Between an archive run's end and that request no
    run is in flight, and an archive started then would run beside the refresh (measured: both took
    twice as long)."""
    latest = instance.get_latest_materialization_event(ARCHIVE_ASSET)
    if latest is None:
        return False
    refreshes = instance.get_run_records(RunsFilter(job_name=REFRESH_JOB), limit=1)
    last_refresh = refreshes[0].create_timestamp.timestamp() if refreshes else 0.0
    now = time.time() if now is None else now
    return latest.timestamp > last_refresh and now - latest.timestamp < REFRESH_DUE_WITHIN_S


def batch_layer_busy(instance: DagsterInstance, now: float | None = None) -> bool:
    """Whether an archive or refresh run is in flight, or a refresh is due: a new archive would only
    compete with it for the cores (and the refresh that follows it would wait for the one running)."""
    return (
        job_in_flight(instance, ARCHIVE_JOB)
        or job_in_flight(instance, REFRESH_JOB)
        or refresh_due(instance, now)
    )


def fail_abandoned_runs(dagster_home: Path) -> list[str]:
    """Mark every run still in flight on ``dagster_home`` as failed (call it only while no Dagster runs
    on that home); returns their job names."""
    if not dagster_home.exists():
        return []
    instance = DagsterInstance.from_config(str(dagster_home))
    try:
        abandoned = [
            record.dagster_run for record in instance.get_run_records(RunsFilter(statuses=IN_FLIGHT))
        ]
        for run in abandoned:
            instance.report_run_failed(run, "abandoned: the Dagster that ran it was stopped")
    finally:
        instance.dispose()
    return [run.job_name for run in abandoned]


# The tags Dagster sets on a run over partitions (its single-run backfills read them): public strings of
# its run API, spelled out rather than imported from a private module.
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"


@dataclass(frozen=True)
class BatchRun:
    """One run of the batch layer as Dagster's run storage tells it."""

    run_id: str
    job: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    days: str | None
    """The ingestion days it covered (``first..last`` or one day), when it ran over partitions."""

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


def batch_run(record: RunRecord) -> BatchRun:
    run, tags = record.dagster_run, record.dagster_run.tags
    first, last = tags.get(PARTITION_RANGE_START_TAG), tags.get(PARTITION_RANGE_END_TAG)
    days = tags.get(PARTITION_TAG) or (first if first == last else f"{first}..{last}" if first else None)

    def moment(timestamp: float | None) -> datetime | None:
        return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)

    return BatchRun(
        run.run_id, run.job_name, run.status.value, moment(record.start_time), moment(record.end_time), days
    )


class RunHistory:
    """The batch layer's runs in the storage of a Dagster home (``paths.dagster_home``, as the demo and
    ``dagster dev`` use it; its ``dagster.yaml`` says where the storage is), opened once and read by one
    thread at a time. A home that does not exist yet has no runs."""

    def __init__(self, dagster_home: Path) -> None:
        self.dagster_home = dagster_home
        self._instance: DagsterInstance | None = None
        self._lock = threading.Lock()

    def recent(self, limit: int) -> list[BatchRun]:
        """The latest ``limit`` runs of the archive and refresh jobs, newest first."""
        with self._lock:
            if self._instance is None:
                if not self.dagster_home.exists():
                    return []
                self._instance = DagsterInstance.from_config(str(self.dagster_home))
            records = [
                record
                for job in (ARCHIVE_JOB, REFRESH_JOB)
                for record in self._instance.get_run_records(RunsFilter(job_name=job), limit=limit)
            ]
        records.sort(key=lambda record: record.create_timestamp, reverse=True)
        return [batch_run(record) for record in records[:limit]]

    def close(self) -> None:
        with self._lock:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None

    def __enter__(self) -> RunHistory:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
