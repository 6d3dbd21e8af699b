"""Schedules: the archive (``batch_layer.archive_schedule``, skipped while the batch layer is busy), and
the nightly lake maintenance and retention."""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

from dagster import DefaultScheduleStatus, ScheduleDefinition, ScheduleEvaluationContext

from core.settings import get_settings
from orchestration.jobs import archive_job, maintenance_job, refresh_job, retention_job
from orchestration.runs import job_in_flight


def batch_layer_idle(context: ScheduleEvaluationContext) -> bool:
    """No archive or refresh run in flight: a new archive would only compete with it for the cores
    (and the refresh that follows it would wait for the one running anyway)."""
    return not any(job_in_flight(context.instance, job.name) for job in (archive_job, refresh_job))


# Schedules run as soon as a Dagster daemon does (``dagster dev``, ``userpulse demo``); the new-offsets
# sensor stays off by default: on a 2-core machine a Spark run a minute would starve the speed layer.
# ``userpulse demo`` sets the archive schedule to every minute (``demo.archive_schedule``).
archive_schedule = ScheduleDefinition(
    job=archive_job,
    cron_schedule=get_settings().batch_layer.archive_schedule,
    execution_timezone="UTC",
    should_execute=batch_layer_idle,
    default_status=DefaultScheduleStatus.RUNNING,
)

nightly_maintenance = ScheduleDefinition(
    job=maintenance_job, cron_schedule="30 3 * * *", default_status=DefaultScheduleStatus.RUNNING
)


nightly_retention = ScheduleDefinition(
    job=retention_job, cron_schedule="0 3 * * *", default_status=DefaultScheduleStatus.RUNNING
)
