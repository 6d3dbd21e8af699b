"""Jobs: archive the topic, refresh silver and the views, maintain the lake, and enforce retention (an op
job: it produces no data asset, it removes old data from every store, one op per store so that a store
that is down does not hold back the others)."""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

from dagster import OpExecutionContext, Output, RetryPolicy, define_asset_job, job, op

from orchestration.assets import SILVER_PROFILES, batch_views, lake_maintenance, profile_archive
from orchestration.resources import CassandraResource, KafkaResource, MongoResource, SparkResource
from privacy.retention import now_utc
from stores.documents import mongo_raw_store
from stores.lake import DeltaLake
from stores.personal_data import StoreRetention
from stores.speed_views import CassandraSpeedStore
from stores.topics import KafkaTopics

archive_job = define_asset_job("archive_topic", selection=[profile_archive])

refresh_job = define_asset_job("refresh_views", selection=[SILVER_PROFILES, batch_views.key])

maintenance_job = define_asset_job("maintain_lake", selection=[lake_maintenance])


def retention_output(context: OpExecutionContext, results: list[StoreRetention]) -> Output[int]:
    """Log each store's line and return the total removed, with one metadata entry per store."""
    for result in results:
        context.log.info(result.describe())
    return Output(
        sum(result.removed for result in results),
        metadata={result.store: result.describe() for result in results},
    )


@op
def topic_retention(context: OpExecutionContext, kafka: KafkaResource) -> Output[int]:
    """Set ``retention.ms`` on the existing topics where it differs (the broker deletes the segments)."""
    settings = kafka.settings()
    return retention_output(context, KafkaTopics(settings.kafka).expire(settings.retention, now_utc()))


@op
def mongo_retention(context: OpExecutionContext, mongo: MongoResource) -> Output[int]:
    """Delete raw documents, their latest copy and dead letters older than their retention."""
    settings = mongo.settings()
    with mongo.database() as database:
        results = mongo_raw_store(database, settings).expire(settings.retention, now_utc())
    return retention_output(context, results)


@op
def cassandra_retention(context: OpExecutionContext, cassandra: CassandraResource) -> Output[int]:
    """Align the tables' default TTL with the settings and delete the rows already past it."""
    settings = cassandra.settings()
    with cassandra.session() as session:
        speed = CassandraSpeedStore(session, settings.cassandra.keyspace, settings.cassandra.concurrency)
        results = speed.expire(settings.retention, now_utc())
    return retention_output(context, results)


@op(retry_policy=RetryPolicy(max_retries=2, delay=120))  # a concurrent silver refresh may win the commit
def lake_retention(context: OpExecutionContext, spark: SparkResource) -> Output[int]:
    """Delete the archive's and silver's ingestion days older than the archive retention."""
    settings = spark.settings()
    lake = DeltaLake(spark.session(), settings.paths, settings.secrets.pseudonymization_key_bytes())
    return retention_output(context, lake.expire(settings.retention, now_utc()))


@job(name="retention")
def retention_job() -> None:
    """Every store's retention (``retention.*`` settings), the same functions as ``userpulse retention``."""
    topic_retention()
    mongo_retention()
    cassandra_retention()
    lake_retention()
