"""Schedules: the archive (``batch_layer.archive_schedule``, skipped while the batch layer is busy), and
the nightly lake maintenance and retention."""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

from dagster import DefaultScheduleStatus, ScheduleDefinition, ScheduleEvaluationContext

from core.settings import Settings
from orchestration.jobs import archive_job, maintenance_job, retention_job
from orchestration.runs import batch_layer_busy


def batch_layer_idle(context: ScheduleEvaluationContext) -> bool:
    return not batch_layer_busy(context.instance)


def archive_schedule(settings: Settings) -> ScheduleDefinition:
    """The archive's schedule (``batch_layer.archive_schedule``), skipped while the batch layer is busy.

    Schedules run as soon as a Dagster daemon does (``dagster dev``, ``userpulse demo``). This one is on
    unless ``batch_layer.archive_trigger`` hands the archive to the new-offsets sensor (the demo does).
    """
    return ScheduleDefinition(
        job=archive_job,
        cron_schedule=settings.batch_layer.archive_schedule,
        execution_timezone="UTC",
        should_execute=batch_layer_idle,
        default_status=(
            DefaultScheduleStatus.RUNNING
            if settings.batch_layer.archive_trigger == "schedule"
            else DefaultScheduleStatus.STOPPED
        ),
    )


nightly_maintenance = ScheduleDefinition(
    job=maintenance_job, cron_schedule="30 3 * * *", default_status=DefaultScheduleStatus.RUNNING
)


nightly_retention = ScheduleDefinition(
    job=retention_job, cron_schedule="0 3 * * *", default_status=DefaultScheduleStatus.RUNNING
)
