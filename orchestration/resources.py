"""The resource every asset, check and op of the batch layer gets: the platform's settings and its Spark
session, built from the one settings object (a run from the UI does what ``userpulse batch`` does)."""

# No `from __future__ import annotations`: Dagster inspects the context annotations at definition time.

from dagster import ConfigurableResource
from pydantic import Field
from pyspark.sql import SparkSession

from core.settings import Settings, get_settings
from core.spark import build_spark_session


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
