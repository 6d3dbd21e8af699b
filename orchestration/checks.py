"""Asset checks: what must hold after each materialization (blocking ones stop the run's downstream)."""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check
from pyspark.sql import functions as F

from batch_layer.archive import archived_end_offsets
from batch_layer.recompute import within_horizon
from core.aggregates import COPY_COLUMNS, counted_profiles
from orchestration.assets import SILVER_PROFILES, batch_views, profile_archive
from orchestration.metadata import offsets_from_text
from orchestration.resources import CassandraResource, KafkaResource, SparkResource
from stores.batch_views import BatchViewStore
from stores.subject_keys import SubjectKeyStore


@asset_check(asset=profile_archive, blocking=True)
def archive_holds_every_offset(
    context: AssetCheckExecutionContext, spark: SparkResource, kafka: KafkaResource
) -> AssetCheckResult:
    """The archive has consumed the topic up to the end offsets it had when the run started (records
    produced since are the next run's), and holds each offset once."""
    settings = spark.settings()
    session = spark.session()
    archive = session.read.format("delta").load(str(settings.paths.archive_table))
    rows, distinct = archive.count(), archive.select("partition", "offset").distinct().count()
    latest = context.instance.get_latest_materialization_event(profile_archive.key)
    recorded = (
        latest.asset_materialization.metadata.get("topic_end_offsets_at_start")
        if (latest is not None and latest.asset_materialization is not None)
        else None
    )
    expected = offsets_from_text(str(recorded.value)) if recorded is not None else kafka.end_offsets()
    archived = archived_end_offsets(session, settings)
    behind = {p: end - archived.get(p, 0) for p, end in expected.items() if archived.get(p, 0) < end}
    return AssetCheckResult(
        passed=rows == distinct and not behind,
        metadata={"rows": rows, "distinct_offsets": distinct, "partitions_behind": str(behind)},
    )


@asset_check(asset=SILVER_PROFILES, blocking=True)
def silver_has_no_null_uuid(spark: SparkResource) -> AssetCheckResult:
    """Every silver profile has a uuid, a subject pseudonym and an ingestion day, and each archived
    record (Kafka partition and offset) is in silver once at most."""
    settings = spark.settings()
    silver = spark.session().read.format("delta").load(str(settings.paths.silver_table))
    nulls = silver.where(
        F.col("uuid").isNull() | F.col("subject_pseudonym").isNull() | F.col("ingestion_date").isNull()
    ).count()
    rows, distinct = silver.count(), silver.select("partition", "offset").distinct().count()
    return AssetCheckResult(
        passed=nulls == 0 and rows == distinct,
        metadata={"null_uuids": nulls, "rows": rows, "distinct": distinct},
    )


@asset_check(asset=batch_views)
def batch_totals_match_silver(spark: SparkResource, cassandra: CassandraResource) -> AssetCheckResult:
    """The current view counts exactly the profiles the counting rule counts among the silver copies up
    to its horizon, erased subjects left out: its all-time rows hold every one of them once."""
    settings = spark.settings()
    keyspace, concurrency = settings.cassandra.keyspace, settings.cassandra.concurrency
    with cassandra.session() as session:
        store = BatchViewStore(session, keyspace, concurrency)
        current = store.current()
        key = settings.secrets.pseudonymization_key_bytes()
        erased = SubjectKeyStore(session, keyspace, key, concurrency).erased_pseudonyms()
        view_total = sum(row.profiles for row in store.totals(current.version, "gender")) if current else 0
    silver = spark.session().read.format("delta").load(str(settings.paths.silver_table))
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
    context: AssetCheckExecutionContext, cassandra: CassandraResource
) -> AssetCheckResult:
    """The batch view's horizon (the last speed batch it covers) never moves backwards from one
    materialization to the next: a view never takes back records it covered."""
    settings = cassandra.settings()
    with cassandra.session() as session:
        current = BatchViewStore(
            session, settings.cassandra.keyspace, settings.cassandra.concurrency
        ).current()
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
