"""Runs in flight: what the archive schedule and the refresh sensor wait for, and what a stopped Dagster
left behind.

When ``dagster dev`` is stopped (the demo's Ctrl-C), the run workers it launched die with it and their
runs stay STARTED in its storage for ever. The schedule and the sensor start nothing while a run of the
batch layer is in flight, so such a run would hold the batch layer back for good: before Dagster starts
on a home, nothing can be running on it, so every run still in flight then was abandoned.
"""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

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


BATCH_LAYER_JOBS = ("archive_topic", "refresh_views")
"""The jobs of the batch layer's cycle: one of them at a time (each starts a Spark session)."""


def batch_layer_busy(instance: DagsterInstance) -> bool:
    """Whether an archive or refresh run is in flight: a new archive would only compete with it for the
    cores (and the refresh that follows it would wait for the one running anyway)."""
    return any(job_in_flight(instance, job_name) for job_name in BATCH_LAYER_JOBS)


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
