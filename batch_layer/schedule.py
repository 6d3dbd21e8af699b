"""When the batch layer runs next: the archive schedule (``batch_layer.archive_schedule``, cron, UTC).

Dagster runs the schedule (``orchestration.definitions``); the dashboard only tells the user when the
next run is due, so both read the same setting.
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter


def next_run(cron_schedule: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``cron_schedule`` fires, in UTC."""
    return croniter(cron_schedule, after.astimezone(UTC)).get_next(datetime)
