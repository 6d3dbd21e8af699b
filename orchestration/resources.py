"""The resources the batch layer's assets, checks and ops get, one per engine they use: the platform's
settings, Spark, Cassandra, MongoDB and Kafka. Each is built from the one settings object, so a run
from the UI does what ``userpulse batch`` does; ``settings.deployment`` (``USERPULSE_DEPLOYMENT``) says
where the engines run and is checked when the definitions load (see ``core.settings.Deployment``).

An op asks for the resources it uses by name (``spark: SparkResource``); the UI lists them per asset.
"""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import ConfigurableResource, ResourceDependency
from pydantic import Field
from pyspark.sql import SparkSession

from batch_layer.archive import topic_end_offsets
from core.settings import Settings, get_settings
from core.spark import build_spark_session
from stores.connections import Database, Session, cassandra_session, mongo_client, mongo_database


class PlatformSettings(ConfigurableResource):
    """The platform's settings (from ``USERPULSE_*`` variables).

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


class EngineResource(ConfigurableResource):
    """An engine's resource: reached with the platform's settings (one ``PlatformSettings`` for all)."""

    platform: ResourceDependency[PlatformSettings]

    def settings(self) -> Settings:
        return self.platform.settings()


class SparkResource(EngineResource):
    """The Spark session of a run: ``spark.master`` (local threads, or a cluster's master URL)."""

    def session(self) -> SparkSession:
        return build_spark_session(self.settings(), app_name="userpulse-dagster")


class CassandraResource(EngineResource):
    """Sessions on the Cassandra cluster of ``cassandra.*`` (its contact points, login and TLS)."""

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A connected session, shut down when the block ends."""
        cluster, session = cassandra_session(self.settings())
        try:
            yield session
        finally:
            cluster.shutdown()


class MongoResource(EngineResource):
    """The raw documents' database on the MongoDB server of ``mongo.*`` (FerretDB locally)."""

    @contextmanager
    def database(self) -> Iterator[Database]:
        """The configured database, its client closed when the block ends."""
        settings = self.settings()
        client = mongo_client(settings)
        try:
            yield mongo_database(client, settings)
        finally:
            client.close()


class KafkaResource(EngineResource):
    """The Kafka cluster of ``kafka.*``: the profiles topic's offsets, its topics' settings."""

    def end_offsets(self) -> dict[int, int]:
        """The profiles topic's end offset per partition."""
        return topic_end_offsets(self.settings())


def batch_layer_resources(overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Every resource of the definitions, sharing one ``PlatformSettings`` (with ``overrides``)."""
    platform = PlatformSettings(overrides=overrides or {})
    return {
        "platform": platform,
        "spark": SparkResource(platform=platform),
        "cassandra": CassandraResource(platform=platform),
        "mongo": MongoResource(platform=platform),
        "kafka": KafkaResource(platform=platform),
    }
