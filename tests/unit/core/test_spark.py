from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from core.settings import PathSettings, Settings, get_settings
from core.spark import (
    HUGE_METHODS_COMPILED,
    SparkSetupError,
    connector_jars,
    jar_artifact,
    session_config,
    spark_connector_jars,
)


@pytest.mark.parametrize(
    ("jar_name", "artifact"),
    [
        ("delta-spark_2.13-4.4.0.jar", "delta-spark_2.13"),
        ("spark-sql-kafka-0-10_2.13-4.1.1.jar", "spark-sql-kafka-0-10_2.13"),
        ("jackson-databind-2.13.5.jar", "jackson-databind"),
        ("kafka-clients-3.9.1.jar", "kafka-clients"),
        ("antlr4-runtime-4.13.1.jar", "antlr4-runtime"),
        ("commons-pool2-2.12.0.jar", "commons-pool2"),
    ],
)
def test_jar_artifact_strips_the_version(jar_name: str, artifact: str) -> None:
    assert jar_artifact(jar_name) == artifact


def test_connector_jars_leave_out_what_pyspark_bundles() -> None:
    resolved = [
        Path("/jars/delta-spark_2.13-4.4.0.jar"),
        Path("/jars/jackson-databind-2.15.0.jar"),
        Path("/jars/kafka-clients-3.9.1.jar"),
    ]
    bundled = ["jackson-databind-2.13.5.jar", "spark-core_2.13-4.1.1.jar"]

    assert connector_jars(resolved, bundled) == [
        Path("/jars/delta-spark_2.13-4.4.0.jar"),
        Path("/jars/kafka-clients-3.9.1.jar"),
    ]


def test_missing_connector_jars_name_the_install_step(tmp_path: Path) -> None:
    settings = Settings(paths=PathSettings(tools_dir=tmp_path))

    with pytest.raises(SparkSetupError, match="make install"):
        spark_connector_jars(settings)


def test_the_session_carries_the_machine_sized_settings(spark: SparkSession) -> None:
    """The performance settings the README's figures depend on reach the running JVM."""
    jvm_arguments = list(
        spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
    )
    settings = get_settings()

    assert HUGE_METHODS_COMPILED in jvm_arguments
    assert spark.conf.get("spark.databricks.delta.snapshotPartitions") == str(
        settings.spark.delta_snapshot_partitions
    )
    assert spark.conf.get("spark.sql.shuffle.partitions") == str(settings.spark.shuffle_partitions)


def test_extra_spark_settings_come_last_and_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "USERPULSE_SPARK__CONF", '{"spark.executor.memory": "4g", "spark.sql.shuffle.partitions": "8"}'
    )
    settings = Settings()

    config = session_config(settings, "/usr/bin/python3")

    assert config["spark.executor.memory"] == "4g"
    assert config["spark.sql.shuffle.partitions"] == "8"  # over spark.shuffle_partitions
    assert config["spark.pyspark.python"] == "/usr/bin/python3"
    assert config["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
