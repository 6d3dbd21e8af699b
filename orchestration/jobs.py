"""Jobs: archive the topic, refresh silver and the views, maintain the lake, and enforce retention (an op
job: it produces no data asset, it removes old data from every store, one op per store so that a store
that is down does not hold back the others)."""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

from dagster import OpExecutionContext, Output, RetryPolicy, define_asset_job, job, op

from orchestration.assets import batch_views, lake_maintenance, profile_archive, silver_profiles
from orchestration.resources import UserPulseResource
from privacy.retention import (
    StoreRetention,
    enforce_cassandra,
    enforce_lake,
    enforce_mongo,
    enforce_topics,
    now_utc,
)
from stores.connections import cassandra_session, mongo_client, mongo_database

archive_job = define_asset_job("archive_topic", selection=[profile_archive])

refresh_job = define_asset_job("refresh_views", selection=[silver_profiles, batch_views])

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
