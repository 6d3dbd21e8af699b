"""Dagster definitions of the batch layer: archive -> silver profiles -> batch views, lake maintenance,
with checks, schedules and sensors. ``dagster dev`` (see ``[tool.dagster]`` in pyproject.toml) shows the
graph.

The assets call the same functions as ``userpulse batch``; resources are built from the one settings
object, so a run from the UI and a run from the command line do the same thing.

Partitions: ``silver_profiles`` is partitioned by UTC ingestion day, so a range of days can be
re-materialized (backfilled) from the UI after a fix, in a single run (``BackfillPolicy.single_run``:
one Spark session, one Delta commit for the range). The archive is not: it is a streaming copy of the
topic that appends whatever offsets are new, whichever days they belong to. ``batch_views`` is not
either: it is recomputed from every silver day, since the latest version of a profile may be on any day.

Day to day, the ``archive_topic`` job runs on a schedule (``batch_layer.archive_schedule``, skipped
while the previous run is in flight; or when the sensor sees new offsets); each
archive materialization records the ingestion days it appended to, and the ``refresh_appended_days``
sensor asks for one ``refresh_views`` run over exactly those days. ``maintain_lake`` compacts and
vacuums both Delta tables every night; ``retention`` (an op job: it produces no data asset, it removes
old data from every store) deletes what is older than each store's retention every night, one op per
store so that a store that is down does not hold back the others.
"""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

from datetime import date

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetRecordsFilter,
    BackfillPolicy,
    ConfigurableResource,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    MaterializeResult,
    OpExecutionContext,
    Output,
    RetryPolicy,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    asset,
    asset_check,
    define_asset_job,
    in_process_executor,
    job,
    op,
    sensor,
)

# The tags Dagster itself sets on a run over a partition range (single-run backfills read them).
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from kafka import KafkaConsumer, TopicPartition
from pydantic import Field
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch_layer.archive import archived_end_offsets, run_archive
from batch_layer.maintenance import maintain_lake
from batch_layer.recompute import recompute_batch_views, refresh_silver_profiles, within_horizon
from batch_layer.view_store import BatchViewStore
from core.aggregates import COPY_COLUMNS, counted_profiles
from core.retention import (
    StoreRetention,
    enforce_cassandra,
    enforce_lake,
    enforce_mongo,
    enforce_topics,
    now_utc,
)
from core.settings import Settings, get_settings
from core.spark import build_spark_session
from core.stores import cassandra_session, mongo_client, mongo_database
from core.subject_keys import SubjectKeyStore
from orchestration.runs import job_in_flight

ingestion_days = DailyPartitionsDefinition(
    start_date=get_settings().batch_layer.partitions_start_date.isoformat(),
    timezone="UTC",
    end_offset=1,  # today is a partition too: its records arrive all day and are refreshed as they come
)
"""UTC ingestion days: the archive's Delta partitions, and the silver table's."""


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
    consumer = KafkaConsumer(**settings.kafka.client_options())
    try:
        partitions = [
            TopicPartition(settings.kafka.profiles_topic, p)
            for p in consumer.partitions_for_topic(settings.kafka.profiles_topic) or ()
        ]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def offsets_text(offsets: dict[int, int]) -> str:
    """``{0: 12, 1: 7}`` -> ``"0:12,1:7"`` (how end offsets are kept in metadata and sensor cursors)."""
    return ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))


def offsets_from_text(text: str) -> dict[int, int]:
    """The inverse of ``offsets_text``."""
    return {int(p): int(o) for p, o in (pair.split(":") for pair in text.split(",") if pair)}


def days_from_text(text: str) -> list[date]:
    """``"2026-11-22,2026-11-23"`` -> the dates (how appended days are kept in metadata)."""
    return [date.fromisoformat(day) for day in text.split(",") if day]


@asset(group_name="batch_layer")
def profile_archive(context: AssetExecutionContext, userpulse: UserPulseResource) -> MaterializeResult:
    """Every record of the profiles topic, as received, in a Delta table partitioned by ingestion date.

    Not a partitioned asset: each run appends the topic's new offsets, whatever day they are from. Its
    metadata records the ingestion days appended to since the last successful materialization, which
    the ``refresh_appended_days`` sensor turns into a silver refresh of those days.
    """
    settings = userpulse.settings()
    previous = context.instance.get_latest_materialization_event(context.asset_key)
    since = None
    if previous is not None and previous.asset_materialization is not None:
        recorded = previous.asset_materialization.metadata.get("archived_end_offsets")
        since = offsets_from_text(str(recorded.value)) if recorded is not None else None
    # What the run must reach at least (the producer may keep appending while it runs).
    target = topic_end_offsets(settings)
    spark = userpulse.spark()
    result = run_archive(settings, spark, days_since=since)
    context.log.info(
        f"archived {result.records} new records in {result.batches} batches, "
        f"ingestion days {[day.isoformat() for day in result.days]}"
    )
    return MaterializeResult(
        metadata={
            "new_records": result.records,
            "batches": result.batches,
            "appended_days": ",".join(day.isoformat() for day in result.days),
            "archived_end_offsets": offsets_text(archived_end_offsets(spark, settings)),
            "topic_end_offsets_at_start": offsets_text(target),
            "path": str(settings.paths.archive_table),
        }
    )


@asset(
    group_name="batch_layer",
    deps=[profile_archive],
    partitions_def=ingestion_days,
    backfill_policy=BackfillPolicy.single_run(),
)
def silver_profiles(context: AssetExecutionContext, userpulse: UserPulseResource) -> MaterializeResult:
    """Cleaned, pseudonymized profiles per ingestion day (the latest version of each uuid that day).

    A run rewrites exactly its partition range (Delta ``replaceWhere`` on ``ingestion_date``); the
    other days are not touched. Deduplication across days is left to ``batch_views``.
    """
    key_range = context.partition_key_range
    days = (date.fromisoformat(key_range.start), date.fromisoformat(key_range.end))
    result = refresh_silver_profiles(userpulse.settings(), userpulse.spark(), days)
    return MaterializeResult(
        metadata={
            "profiles_in_range": result.profiles,
            "days_with_profiles": len(result.days),
            "newest_event": str(result.newest_event),
        }
    )


@asset(group_name="batch_layer", deps=[silver_profiles])
def batch_views(context: AssetExecutionContext, userpulse: UserPulseResource) -> MaterializeResult:
    """Authoritative aggregates per dimension, all-time and per window, of the records up to the speed
    layer's horizon (Cassandra)."""
    settings = userpulse.settings()
    result = recompute_batch_views(settings, userpulse.spark())
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
    deps=[profile_archive, silver_profiles],
    # OPTIMIZE loses to a concurrent commit that removed the same files (a silver refresh of the same
    # day): Delta refuses the second commit, nothing is damaged, and a later attempt goes through.
    retry_policy=RetryPolicy(max_retries=2, delay=120),
)
def lake_maintenance(userpulse: UserPulseResource) -> MaterializeResult:
    """OPTIMIZE and VACUUM of the archive and silver tables (``batch_layer.vacuum_retention_hours``)."""
    results = maintain_lake(userpulse.settings(), userpulse.spark())
    metadata: dict[str, int] = {}
    for result in results:
        name = result.path.name
        metadata[f"{name}_files_before"] = result.files_before
        metadata[f"{name}_files_after"] = result.files_after
        metadata[f"{name}_files_vacuumed"] = result.files_vacuumed
    return MaterializeResult(metadata=metadata)


@asset_check(asset=profile_archive, blocking=True)
def archive_holds_every_offset(
    context: AssetCheckExecutionContext, userpulse: UserPulseResource
) -> AssetCheckResult:
    """The archive has consumed the topic up to the end offsets it had when the run started (records
    produced since are the next run's), and holds each offset once."""
    settings = userpulse.settings()
    spark = userpulse.spark()
    archive = spark.read.format("delta").load(str(settings.paths.archive_table))
    rows, distinct = archive.count(), archive.select("partition", "offset").distinct().count()
    latest = context.instance.get_latest_materialization_event(profile_archive.key)
    recorded = (
        latest.asset_materialization.metadata.get("topic_end_offsets_at_start")
        if (latest is not None and latest.asset_materialization is not None)
        else None
    )
    expected = offsets_from_text(str(recorded.value)) if recorded is not None else topic_end_offsets(settings)
    archived = archived_end_offsets(spark, settings)
    behind = {p: end - archived.get(p, 0) for p, end in expected.items() if archived.get(p, 0) < end}
    return AssetCheckResult(
        passed=rows == distinct and not behind,
        metadata={"rows": rows, "distinct_offsets": distinct, "partitions_behind": str(behind)},
    )


@asset_check(asset=silver_profiles, blocking=True)
def silver_has_no_null_uuid(userpulse: UserPulseResource) -> AssetCheckResult:
    """Every silver profile has a uuid, a subject pseudonym and an ingestion day, and each archived
    record (Kafka partition and offset) is in silver once at most."""
    settings = userpulse.settings()
    silver = userpulse.spark().read.format("delta").load(str(settings.paths.silver_table))
    nulls = silver.where(
        F.col("uuid").isNull() | F.col("subject_pseudonym").isNull() | F.col("ingestion_date").isNull()
    ).count()
    rows, distinct = silver.count(), silver.select("partition", "offset").distinct().count()
    return AssetCheckResult(
        passed=nulls == 0 and rows == distinct,
        metadata={"null_uuids": nulls, "rows": rows, "distinct": distinct},
    )


@asset_check(asset=batch_views)
def batch_totals_match_silver(userpulse: UserPulseResource) -> AssetCheckResult:
    """The current view counts exactly the profiles the counting rule counts among the silver copies up
    to its horizon, erased subjects left out: its all-time rows hold every one of them once."""
    settings = userpulse.settings()
    cluster, session = cassandra_session(settings)
    try:
        cassandra = settings.cassandra
        store = BatchViewStore(session, cassandra.keyspace, cassandra.concurrency)
        current = store.current()
        key = settings.secrets.pseudonymization_key_bytes()
        erased = SubjectKeyStore(session, cassandra.keyspace, key).erased_pseudonyms()
        view_total = sum(row.profiles for row in store.totals(current.version, "gender")) if current else 0
    finally:
        cluster.shutdown()
    spark = userpulse.spark()
    silver = spark.read.format("delta").load(str(settings.paths.silver_table))
    copies = within_horizon(silver, current.horizon if current else {})
    copies = copies.where(~F.col("subject_pseudonym").isin(erased)) if erased else copies
    expected = counted_profiles(
        copies.select(*COPY_COLUMNS), settings.profiles.minimum_age, settings.profiles.window_duration
    ).count()
    recorded = current.profiles if current else 0
    return AssetCheckResult(
        passed=view_total == expected == recorded,
        metadata={"view_total": view_total, "silver_within_horizon": expected, "recorded": recorded},
    )


@asset_check(asset=batch_views)
def horizon_moves_forward(
    context: AssetCheckExecutionContext, userpulse: UserPulseResource
) -> AssetCheckResult:
    """The batch view's horizon (the last speed batch it covers) never moves backwards from one
    materialization to the next: a view never takes back records it covered."""
    settings = userpulse.settings()
    cluster, session = cassandra_session(settings)
    try:
        current = BatchViewStore(
            session, settings.cassandra.keyspace, settings.cassandra.concurrency
        ).current()
    finally:
        cluster.shutdown()
    history = [
        record.asset_materialization.metadata.get("speed_batch_id")
        for record in context.instance.fetch_materializations(batch_views.key, limit=2).records
        if record.asset_materialization is not None
    ]
    earlier = history[1].value if len(history) > 1 and history[1] is not None else None
    now = current.speed_batch_id if current else None
    passed = earlier is None or now is None or now >= earlier
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={"speed_batch_id": str(now), "previous_speed_batch_id": str(earlier)},
    )


archive_job = define_asset_job("archive_topic", selection=[profile_archive])

refresh_job = define_asset_job("refresh_views", selection=[silver_profiles, batch_views])


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

maintenance_job = define_asset_job("maintain_lake", selection=[lake_maintenance])

nightly_maintenance = ScheduleDefinition(
    job=maintenance_job, cron_schedule="30 3 * * *", default_status=DefaultScheduleStatus.RUNNING
)


def retention_output(context: OpExecutionContext, results: list[StoreRetention]) -> Output[int]:
    """Log each store's line and return the total removed, with one metadata entry per store."""
    for result in results:
        context.log.info(result.describe())
    return Output(
        sum(result.removed for result in results),
        metadata={result.store: result.describe() for result in results},
    )


@op
def topic_retention(context: OpExecutionContext, userpulse: UserPulseResource) -> Output[int]:
    """Set ``retention.ms`` on the existing topics where it differs (the broker deletes the segments)."""
    return retention_output(context, enforce_topics(userpulse.settings()))


@op
def mongo_retention(context: OpExecutionContext, userpulse: UserPulseResource) -> Output[int]:
    """Delete raw documents, their latest copy and dead letters older than their retention."""
    settings = userpulse.settings()
    client = mongo_client(settings)
    try:
        results = enforce_mongo(mongo_database(client, settings), settings, now_utc())
    finally:
        client.close()
    return retention_output(context, results)


@op
def cassandra_retention(context: OpExecutionContext, userpulse: UserPulseResource) -> Output[int]:
    """Align the tables' default TTL with the settings and delete the rows already past it."""
    settings = userpulse.settings()
    cluster, session = cassandra_session(settings)
    try:
        results = enforce_cassandra(session, settings, now_utc())
    finally:
        cluster.shutdown()
    return retention_output(context, results)


@op(retry_policy=RetryPolicy(max_retries=2, delay=120))  # a concurrent silver refresh may win the commit
def lake_retention(context: OpExecutionContext, userpulse: UserPulseResource) -> Output[int]:
    """Delete the archive's and silver's ingestion days older than the archive retention."""
    return retention_output(context, enforce_lake(userpulse.spark(), userpulse.settings(), now_utc()))


@job(name="retention")
def retention_job() -> None:
    """Every store's retention (``retention.*`` settings), the same functions as ``userpulse retention``."""
    topic_retention()
    mongo_retention()
    cassandra_retention()
    lake_retention()


nightly_retention = ScheduleDefinition(
    job=retention_job, cron_schedule="0 3 * * *", default_status=DefaultScheduleStatus.RUNNING
)


@sensor(job=archive_job, minimum_interval_seconds=60)
def new_offsets_waiting(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    """Start the archiving when the topic has offsets the archive has not consumed yet."""
    settings = get_settings()
    end_offsets = topic_end_offsets(settings)
    cursor = offsets_text(end_offsets)
    if not end_offsets or cursor == context.cursor:
        return SkipReason("no new offsets since the last run request")
    context.update_cursor(cursor)
    return RunRequest(run_key=cursor)


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
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


@sensor(job=refresh_job, minimum_interval_seconds=15, default_status=DefaultSensorStatus.RUNNING)
def refresh_appended_days(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    """After archive materializations, refresh silver and the views for the days they appended to.

    Reads every archive materialization since its cursor (not only the latest: two archive runs between
    ticks may have appended to different days) and requests one run over the range of their days.
    """
    if job_in_flight(context.instance, refresh_job.name):
        # The cursor stays: the next tick after that run covers these materializations too, in one run.
        return SkipReason("a refresh_views run is still in flight")
    after = int(context.cursor) if context.cursor else None
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
    selected = refresh_range(days, ingestion_days)
    if selected is None:
        return SkipReason(f"the archive appended to no day the partitions offer ({sorted(days)})")
    return RunRequest(run_key=f"archive-{last_seen}", tags=partition_range_tags(*selected))


defs = Definitions(
    assets=[profile_archive, silver_profiles, batch_views, lake_maintenance],
    asset_checks=[
        archive_holds_every_offset,
        silver_has_no_null_uuid,
        batch_totals_match_silver,
        horizon_moves_forward,
    ],
    jobs=[archive_job, refresh_job, maintenance_job, retention_job],
    schedules=[archive_schedule, nightly_maintenance, nightly_retention],
    sensors=[new_offsets_waiting, refresh_appended_days],
    resources={"userpulse": UserPulseResource()},
    executor=in_process_executor,  # one Spark session per run, not one JVM per step
)
