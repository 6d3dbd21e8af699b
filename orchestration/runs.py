"""Runs in flight: what the archive schedule and the refresh sensor wait for, and what a stopped Dagster
left behind.

When ``dagster dev`` is stopped (the demo's Ctrl-C), the run workers it launched die with it and their
runs stay STARTED in its storage for ever. The schedule and the sensor start nothing while a run of the
batch layer is in flight, so such a run would hold the batch layer back for good: before Dagster starts
on a home, nothing can be running on it, so every run still in flight then was abandoned.
"""

from __future__ import annotations

import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

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
