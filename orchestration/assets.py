"""The batch layer's data assets: archive -> silver profiles -> batch views, and the lake's maintenance.

Partitions: ``silver_profiles`` is partitioned by UTC ingestion day, so a range of days can be
re-materialized (backfilled) from the UI after a fix, in a single run (``BackfillPolicy.single_run``:
one Spark session, one Delta commit for the range). The archive is not: it is a streaming copy of the
topic that appends whatever offsets are new, whichever days they belong to. ``batch_views`` is not
either: it is recomputed from every silver day, since the latest version of a profile may be on any day.
"""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

from datetime import date

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    RetryPolicy,
    asset,
)

from batch_layer.archive import archived_end_offsets, run_archive
from batch_layer.maintenance import maintain_lake
from batch_layer.recompute import recompute_batch_views, refresh_silver_profiles
from core.settings import Settings
from orchestration.metadata import offsets_from_text, offsets_text
from orchestration.resources import KafkaResource, SparkResource


def ingestion_days(settings: Settings) -> DailyPartitionsDefinition:
    """UTC ingestion days from ``batch_layer.partitions_start_date``: the archive's Delta partitions,
    and the silver table's."""
    return DailyPartitionsDefinition(
        start_date=settings.batch_layer.partitions_start_date.isoformat(),
        timezone="UTC",
        end_offset=1,  # today is a partition too: its records arrive all day and are refreshed as they come
    )


SILVER_PROFILES = AssetKey("silver_profiles")
"""Key of the silver asset, built per settings by ``silver_profiles_asset`` (its days start at a setting)."""


@asset(group_name="batch_layer")
def profile_archive(
    context: AssetExecutionContext, spark: SparkResource, kafka: KafkaResource
) -> MaterializeResult:
    """Every record of the profiles topic, as received, in a Delta table partitioned by ingestion date.

    Not a partitioned asset: each run appends the topic's new offsets, whatever day they are from. Its
    metadata records the ingestion days appended to since the last successful materialization, which
    the ``refresh_appended_days`` sensor turns into a silver refresh of those days.
    """
    settings = spark.settings()
    previous = context.instance.get_latest_materialization_event(context.asset_key)
    since = None
    if previous is not None and previous.asset_materialization is not None:
        recorded = previous.asset_materialization.metadata.get("archived_end_offsets")
        since = offsets_from_text(str(recorded.value)) if recorded is not None else None
    # What the run must reach at least (the producer may keep appending while it runs).
    target = kafka.end_offsets()
    session = spark.session()
    result = run_archive(settings, session, days_since=since)
    context.log.info(
        f"archived {result.records} new records in {result.batches} batches, "
        f"ingestion days {[day.isoformat() for day in result.days]}"
    )
    return MaterializeResult(
        metadata={
            "new_records": result.records,
            "batches": result.batches,
            "appended_days": ",".join(day.isoformat() for day in result.days),
            "archived_end_offsets": offsets_text(archived_end_offsets(session, settings)),
            "topic_end_offsets_at_start": offsets_text(target),
            "path": str(settings.paths.archive_table),
        }
    )


def silver_profiles_asset(days_partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    """The ``silver_profiles`` asset over ``days_partitions`` (``ingestion_days(settings)``)."""

    @asset(
        name="silver_profiles",
        group_name="batch_layer",
        deps=[profile_archive],
        partitions_def=days_partitions,
        backfill_policy=BackfillPolicy.single_run(),
    )
    def silver_profiles(context: AssetExecutionContext, spark: SparkResource) -> MaterializeResult:
        """Cleaned, pseudonymized profiles per ingestion day (the latest version of each uuid that day).

        A run rewrites exactly its partition range (Delta ``replaceWhere`` on ``ingestion_date``); the
        other days are not touched. Deduplication across days is left to ``batch_views``.
        """
        key_range = context.partition_key_range
        days = (date.fromisoformat(key_range.start), date.fromisoformat(key_range.end))
        result = refresh_silver_profiles(spark.settings(), spark.session(), days)
        return MaterializeResult(
            metadata={
                "profiles_in_range": result.profiles,
                "days_with_profiles": len(result.days),
                "newest_event": str(result.newest_event),
            }
        )

    return silver_profiles


@asset(group_name="batch_layer", deps=[SILVER_PROFILES])
def batch_views(context: AssetExecutionContext, spark: SparkResource) -> MaterializeResult:
    """Authoritative aggregates per dimension, all-time and per window, of the records up to the speed
    layer's horizon (Cassandra)."""
    result = recompute_batch_views(spark.settings(), spark.session())
    if result.note:
        context.log.warning(result.note)
    return MaterializeResult(
        metadata={
            "version": result.version,
            "made_current": result.made_current,
            **({"speed_batch_id": result.speed_batch_id} if result.speed_batch_id is not None else {}),
            "cutoff": str(result.cutoff),
            "profiles": result.profiles,
            "removed_versions": str(result.removed_versions),
            **({"note": result.note} if result.note else {}),
        }
    )


@asset(
    group_name="batch_layer",
    deps=[profile_archive, SILVER_PROFILES],
    # OPTIMIZE loses to a concurrent commit that removed the same files (a silver refresh of the same
    # day): Delta refuses the second commit, nothing is damaged, and a later attempt goes through.
    retry_policy=RetryPolicy(max_retries=2, delay=120),
)
def lake_maintenance(spark: SparkResource) -> MaterializeResult:
    """OPTIMIZE and VACUUM of the archive and silver tables (``batch_layer.vacuum_retention_hours``)."""
    results = maintain_lake(spark.settings(), spark.session())
    metadata: dict[str, int] = {}
    for result in results:
        name = result.name
        metadata[f"{name}_files_before"] = result.files_before
        metadata[f"{name}_files_after"] = result.files_after
        metadata[f"{name}_files_vacuumed"] = result.files_vacuumed
    return MaterializeResult(metadata=metadata)
