"""Dagster definitions of the batch layer: archive -> silver profiles -> batch views, with checks,
a schedule and a sensor. ``dagster dev`` (see ``[tool.dagster]`` in pyproject.toml) shows the graph.

The assets call the same functions as ``userpulse batch``; resources are built from the one settings
object, so a run from the UI and a run from the command line do the same thing.
"""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

from datetime import UTC, datetime

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetSelection,
    ConfigurableResource,
    Definitions,
    MaterializeResult,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    asset,
    asset_check,
    define_asset_job,
    in_process_executor,
    sensor,
)
from kafka import KafkaConsumer, TopicPartition
from pydantic import Field
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch_layer.archive import run_archive
from batch_layer.recompute import recompute_batch_views, refresh_silver_profiles
from core.settings import Settings, get_settings
from core.spark import build_spark_session
from core.stores import cassandra_session


class UserPulseResource(ConfigurableResource):
    """The platform's settings (from ``USERPULSE_*`` variables) and its Spark session.

    ``overrides`` replaces single settings, ``{"kafka.profiles_topic": "t"}``: tests point a run at
    their own topic, keyspace and lake without touching the environment.
    """

    overrides: dict[str, str] = Field(default_factory=dict)

    def settings(self) -> Settings:
        settings = get_settings()
        sections: dict[str, dict[str, str]] = {}
        for dotted, value in self.overrides.items():
            section, field = dotted.split(".", 1)
            sections.setdefault(section, {})[field] = value
        return settings.model_copy(
            update={
                section: type(getattr(settings, section)).model_validate(
                    {**getattr(settings, section).model_dump(), **fields}
                )
                for section, fields in sections.items()
            }
        )

    def spark(self) -> SparkSession:
        return build_spark_session(self.settings(), app_name="userpulse-dagster")


def topic_end_offsets(settings: Settings) -> dict[int, int]:
    """The profiles topic's end offset per partition (what an up-to-date archive has consumed)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        partitions = [
            TopicPartition(settings.kafka.profiles_topic, p)
            for p in consumer.partitions_for_topic(settings.kafka.profiles_topic) or ()
        ]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def archived_end_offsets(spark: SparkSession, settings: Settings) -> dict[int, int]:
    """The next offset to archive per partition (last archived offset + 1)."""
    if not (settings.paths.archive_table / "_delta_log").exists():
        return {}
    rows = (
        spark.read.format("delta")
        .load(str(settings.paths.archive_table))
        .groupBy("partition")
        .agg(F.max("offset").alias("last"))
        .collect()
    )
    return {row.partition: row.last + 1 for row in rows}


@asset(group_name="batch_layer")
def profile_archive(context: AssetExecutionContext, userpulse: UserPulseResource) -> MaterializeResult:
    """Every record of the profiles topic, as received, in a Delta table partitioned by ingestion date."""
    settings = userpulse.settings()
    result = run_archive(settings, userpulse.spark())
    context.log.info(f"archived {result.records} new records in {result.batches} batches")
    return MaterializeResult(
        metadata={
            "new_records": result.records,
            "batches": result.batches,
            "path": str(settings.paths.archive_table),
        }
    )


@asset(group_name="batch_layer", deps=[profile_archive])
def silver_profiles(userpulse: UserPulseResource) -> MaterializeResult:
    """One cleaned, pseudonymized row per profile (its latest version), for the views and ad-hoc analysis."""
    settings = userpulse.settings()
    result = refresh_silver_profiles(settings, userpulse.spark())
    return MaterializeResult(metadata={"profiles": result.profiles, "newest_event": str(result.newest_event)})


@asset(group_name="batch_layer", deps=[silver_profiles])
def batch_views(userpulse: UserPulseResource) -> MaterializeResult:
    """Authoritative aggregates per dimension, all-time and per window, up to the batch cutoff (Cassandra)."""
    settings = userpulse.settings()
    result = recompute_batch_views(settings, userpulse.spark())
    return MaterializeResult(
        metadata={
            "version": result.version,
            "cutoff": str(result.cutoff),
            "profiles_before_cutoff": result.profiles,
            "removed_versions": str(result.removed_versions),
        }
    )


@asset_check(asset=profile_archive, blocking=True)
def archive_holds_every_offset(userpulse: UserPulseResource) -> AssetCheckResult:
    """The archive has consumed the topic up to its end offsets, and holds each offset once."""
    settings = userpulse.settings()
    spark = userpulse.spark()
    archive = spark.read.format("delta").load(str(settings.paths.archive_table))
    rows, distinct = archive.count(), archive.select("partition", "offset").distinct().count()
    expected, archived = topic_end_offsets(settings), archived_end_offsets(spark, settings)
    behind = {p: end - archived.get(p, 0) for p, end in expected.items() if end != archived.get(p, 0)}
    return AssetCheckResult(
        passed=rows == distinct and not behind,
        metadata={"rows": rows, "distinct_offsets": distinct, "partitions_behind": str(behind)},
    )


@asset_check(asset=silver_profiles, blocking=True)
def silver_has_no_null_uuid(userpulse: UserPulseResource) -> AssetCheckResult:
    """Every silver profile has a uuid, and each uuid appears once."""
    settings = userpulse.settings()
    silver = userpulse.spark().read.format("delta").load(str(settings.paths.silver_table))
    nulls = silver.where(F.col("uuid").isNull()).count()
    rows, distinct = silver.count(), silver.select("uuid").distinct().count()
    return AssetCheckResult(
        passed=nulls == 0 and rows == distinct,
        metadata={"null_uuids": nulls, "rows": rows, "distinct": distinct},
    )


@asset_check(asset=batch_views)
def batch_totals_match_silver(userpulse: UserPulseResource) -> AssetCheckResult:
    """The current view counts exactly the adult silver profiles fetched before the cutoff."""
    settings = userpulse.settings()
    cluster, session = cassandra_session(settings)
    try:
        current = session.execute(
            f"SELECT version, cutoff, profiles FROM {settings.cassandra.keyspace}.batch_current "
            "WHERE view_name = 'profiles'"
        ).one()
        by_gender = session.execute(
            f"SELECT profiles FROM {settings.cassandra.keyspace}.batch_aggregates "
            "WHERE version = %s AND dimension = 'gender'",
            (current.version,),
        )
        view_total = sum(row.profiles for row in by_gender)
    finally:
        cluster.shutdown()
    silver = userpulse.spark().read.format("delta").load(str(settings.paths.silver_table))
    cutoff = current.cutoff.replace(tzinfo=UTC) if current.cutoff else datetime.max.replace(tzinfo=UTC)
    expected = silver.where(
        (F.col("age") >= settings.speed_layer.minimum_age) & (F.col("fetched_at") < F.lit(cutoff))
    ).count()
    return AssetCheckResult(
        passed=view_total == expected == current.profiles,
        metadata={"view_total": view_total, "silver_before_cutoff": expected, "recorded": current.profiles},
    )


@asset_check(asset=batch_views)
def cutoff_moves_forward(
    context: AssetCheckExecutionContext, userpulse: UserPulseResource
) -> AssetCheckResult:
    """The batch cutoff never moves backwards from one materialization to the next."""
    settings = userpulse.settings()
    cluster, session = cassandra_session(settings)
    try:
        current = session.execute(
            f"SELECT cutoff FROM {settings.cassandra.keyspace}.batch_current WHERE view_name = 'profiles'"
        ).one()
    finally:
        cluster.shutdown()
    history = [
        record.asset_materialization.metadata.get("cutoff")
        for record in context.instance.fetch_materializations(batch_views.key, limit=2).records
        if record.asset_materialization is not None
    ]
    earlier = history[1].value if len(history) > 1 and history[1] is not None else None
    now = str(current.cutoff.replace(tzinfo=UTC)) if current and current.cutoff else "None"
    # Same format on both sides ("YYYY-MM-DD HH:MM:SS+00:00"), so text order is time order.
    passed = earlier in (None, "None") or now >= earlier
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={"cutoff": now, "previous_cutoff": str(earlier)},
    )


batch_layer_job = define_asset_job("batch_layer", selection=AssetSelection.groups("batch_layer"))

every_15_minutes = ScheduleDefinition(job=batch_layer_job, cron_schedule="*/15 * * * *")


@sensor(job=batch_layer_job, minimum_interval_seconds=60)
def new_offsets_waiting(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    """Start the batch layer when the topic has offsets the archive has not consumed yet."""
    settings = get_settings()
    end_offsets = topic_end_offsets(settings)
    cursor = ",".join(f"{p}:{o}" for p, o in sorted(end_offsets.items()))
    if not end_offsets or cursor == context.cursor:
        return SkipReason("no new offsets since the last run request")
    context.update_cursor(cursor)
    return RunRequest(run_key=cursor)


defs = Definitions(
    assets=[profile_archive, silver_profiles, batch_views],
    asset_checks=[
        archive_holds_every_offset,
        silver_has_no_null_uuid,
        batch_totals_match_silver,
        cutoff_moves_forward,
    ],
    jobs=[batch_layer_job],
    schedules=[every_15_minutes],
    sensors=[new_offsets_waiting],
    resources={"userpulse": UserPulseResource()},
    executor=in_process_executor,  # one Spark session per run, not one JVM per step
)
