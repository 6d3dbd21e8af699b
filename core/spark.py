"""The one place Spark sessions are built: local jars for the Kafka source and Delta Lake, no Ivy.

The connector jars are resolved ahead of time by Maven (``infra/jvm/spark``) into
``.tools/jars/spark``. That folder also holds transitive dependencies pyspark already ships (Hadoop,
Jackson, Scala...); putting a second copy of those on the classpath invites version clashes, so only
the artifacts pyspark lacks are passed in ``spark.jars``.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyspark
from py4j.protocol import Py4JJavaError
from pyspark.sql import DataFrame, Observation, Row, SparkSession

from core.settings import Settings

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
HUGE_METHODS_COMPILED = "-XX:-DontCompileHugeMethods"

# "<artifact>-<version>.jar", the version starting with digits and a dot (e.g. 2.13.5, 4.1.1, 1.13.1).
_JAR_NAME = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d+\.\d+[^/]*)\.jar$")


class SparkSetupError(RuntimeError):
    """The Spark connector jars are missing; the message names the install step."""


def jar_artifact(jar_name: str) -> str:
    """The artifact id of a Maven-named jar file (``delta-spark_2.13-4.4.0.jar`` -> ``delta-spark_2.13``)."""
    match = _JAR_NAME.match(jar_name)
    return match.group("artifact") if match else jar_name.removesuffix(".jar")


def connector_jars(resolved_jars: list[Path], bundled_jar_names: list[str]) -> list[Path]:
    """The resolved jars whose artifact pyspark does not bundle, in a stable order."""
    bundled = {jar_artifact(name) for name in bundled_jar_names}
    return sorted(jar for jar in resolved_jars if jar_artifact(jar.name) not in bundled)


def pyspark_bundled_jars() -> list[str]:
    """File names of the jars shipped inside the installed pyspark."""
    return [jar.name for jar in (Path(pyspark.__file__).parent / "jars").glob("*.jar")]


def spark_connector_jars(settings: Settings) -> list[Path]:
    """The Kafka-source and Delta jars (with their own dependencies) to put on Spark's classpath."""
    jars_dir = settings.paths.spark_jars_dir
    resolved = sorted(jars_dir.glob("*.jar"))
    names = {jar.name for jar in resolved}
    if not any(name.startswith("spark-sql-kafka") for name in names) or not any(
        name.startswith("delta-spark") for name in names
    ):
        raise SparkSetupError(
            f"the Spark Kafka and Delta connector jars are missing from {jars_dir}: run `make install`"
        )
    return connector_jars(resolved, pyspark_bundled_jars())


def session_config(settings: Settings, python: str) -> dict[str, str]:
    """Every setting a session is built with: the project's, then ``spark.conf`` (which wins)."""
    spark = settings.spark
    return {
        "spark.jars": ",".join(str(jar) for jar in spark_connector_jars(settings)),
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
        "spark.default.parallelism": str(spark.shuffle_partitions),
        "spark.driver.memory": spark.driver_memory,
        # Whole-stage code generation writes one Java method per stage; the parser's and the
        # transformations' stage is larger than the 8,000 bytes of bytecode HotSpot compiles by default,
        # so it ran interpreted (a fifth of the silver step's CPU in one method). Measured on 500k
        # records: silver rewrite 15.7 s -> 11.5 s once warm.
        "spark.driver.extraJavaOptions": HUGE_METHODS_COMPILED,
        "spark.executor.extraJavaOptions": HUGE_METHODS_COMPILED,
        "spark.databricks.delta.snapshotPartitions": str(spark.delta_snapshot_partitions),
        "spark.ui.enabled": str(spark.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.host": spark.driver_host,
        "spark.driver.bindAddress": spark.driver_bind_address,
        "spark.sql.warehouse.dir": settings.paths.warehouse_dir,
        "spark.pyspark.python": python,
        "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
        # For a lake and checkpoints at s3a:// locations (Hadoop's S3A, jars from infra/jvm/spark).
        **{f"spark.hadoop.{key}": value for key, value in settings.object_store.hadoop_conf().items()},
        **spark.conf,
    }


def build_spark_session(settings: Settings, app_name: str) -> SparkSession:
    """A Spark session with the Kafka source, Delta Lake and settings sized for the machine.

    ``getOrCreate`` returns the running session when there is one (one JVM per process); its static
    settings (jars, memory) are those of the first call.
    """
    # Python workers run the project's code (the speed layer's writes, the batch layer's dead letters):
    # they need an interpreter with its packages, this one unless told otherwise. PySpark takes the
    # workers' interpreter from PYSPARK_PYTHON when the context starts (the setting alone is not read).
    python = settings.spark.python or sys.executable
    os.environ["PYSPARK_PYTHON"] = python
    builder = SparkSession.builder.appName(app_name).master(settings.spark.master)
    for key, value in session_config(settings, python).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def observed(observation: Observation) -> dict[str, Any] | None:
    """The metrics of an ``Observation`` once its action ran; None when Spark removed the observed node
    from the plan because it knew the input was empty (an empty Delta table: no metrics at all)."""
    try:
        return dict(observation.get)
    except Py4JJavaError as error:
        if "PythonSQLUtils.toPyRow" in str(error):
            return None
        raise


def as_utc(moment: datetime | None) -> datetime | None:
    """An aware UTC datetime from what ``collect()`` returns (naive, in the Python process's local time)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.astimezone(UTC)


def row_dict(row: Row) -> dict[str, Any]:
    """A collected row as a dict, its timestamps made aware (UTC)."""
    return {k: as_utc(v) if isinstance(v, datetime) else v for k, v in row.asDict().items()}


def collect_dicts(frame: DataFrame) -> list[dict[str, Any]]:
    """All rows of ``frame`` as dicts with aware UTC timestamps (for small results only)."""
    return [row_dict(row) for row in frame.collect()]
