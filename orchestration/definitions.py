"""Dagster definitions of the batch layer, wired from their modules (laid out as Dagster's own example
projects): ``assets``, ``checks``, ``jobs``, ``schedules``, ``sensors``, ``resources``. ``dagster dev``
(see ``[tool.dagster]`` in pyproject.toml) shows the graph.

The assets call the same functions as ``userpulse batch``; resources are built from the one settings
object, so a run from the UI and a run from the command line do the same thing. Nothing reads the
settings at import: ``defs`` builds the definitions when Dagster loads them.

Day to day, the ``archive_topic`` job runs on a schedule (``batch_layer.archive_schedule``, skipped
while the previous run is in flight; or when the sensor sees new offsets); each archive
materialization records the ingestion days it appended to, and the ``refresh_appended_days`` sensor
asks for one ``refresh_views`` run over exactly those days. ``maintain_lake`` compacts and vacuums both
Delta tables every night; ``retention`` deletes what is older than each store's retention every night.
"""

from dagster import Definitions, definitions, in_process_executor

from core.settings import Settings, get_settings
from orchestration.assets import (
    batch_views,
    ingestion_days,
    lake_maintenance,
    profile_archive,
    silver_profiles_asset,
)
from orchestration.checks import (
    archive_holds_every_offset,
    batch_totals_match_silver,
    horizon_moves_forward,
    silver_has_no_null_uuid,
)
from orchestration.jobs import archive_job, maintenance_job, refresh_job, retention_job
from orchestration.resources import batch_layer_resources
from orchestration.schedules import archive_schedule, nightly_maintenance, nightly_retention
from orchestration.sensors import new_offsets_waiting, refresh_appended_days


def batch_layer_definitions(settings: Settings, overrides: dict[str, str] | None = None) -> Definitions:
    """The batch layer's definitions for ``settings`` (the partitions' first day, the archive's schedule
    and trigger come from them); ``overrides`` go to the resources (see ``PlatformSettings``)."""
    days = ingestion_days(settings)
    return Definitions(
        assets=[profile_archive, silver_profiles_asset(days), batch_views, lake_maintenance],
        asset_checks=[
            archive_holds_every_offset,
            silver_has_no_null_uuid,
            batch_totals_match_silver,
            horizon_moves_forward,
        ],
        jobs=[archive_job, refresh_job, maintenance_job, retention_job],
        schedules=[archive_schedule(settings), nightly_maintenance, nightly_retention],
        sensors=[new_offsets_waiting(settings), refresh_appended_days(days)],
        resources=batch_layer_resources(overrides),
        executor=in_process_executor,  # one Spark session per run, not one JVM per step
    )


@definitions
def defs() -> Definitions:
    """What ``dagster dev`` loads: the definitions of the process's settings, read when Dagster loads
    the code location (not when this module is imported)."""
    return batch_layer_definitions(get_settings())
