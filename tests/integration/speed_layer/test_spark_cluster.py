"""The speed layer on a Spark standalone cluster: a master and one worker started from the pyspark
package (bound to 127.0.0.1), the job run by ``userpulse speed --available-now`` with
``USERPULSE_SPARK__MASTER=spark://...``. Its executors are other processes than the driver: they look up
the subjects' keys and write both stores themselves. The stores must hold exactly what a ``local[2]``
run over the same topic gives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyspark
import pytest
from pyspark.sql import SparkSession

from core.settings import Settings
from ingestion.synthetic import SyntheticSource
from stores.connections import cassandra_session, mongo_client, mongo_database
from stores.speed_views import PROFILE_COLUMNS
from tests.integration.support.pipeline import Pipeline
from tests.integration.support.processes import cli_environment, free_port
from tests.integration.support.stored_state import copy_subject_keys

pytestmark = pytest.mark.integration

SPARK_HOME = Path(pyspark.__file__).parent
BASE = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)


@contextlib.contextmanager
def standalone_cluster(folder: Path) -> Iterator[str]:
    """A Spark standalone master and one worker (2 cores) on 127.0.0.1; yields the master URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port, master_ui, worker_ui = free_port(), free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    environment = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1"}
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    commands = {
        "master": [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                   "--port", str(port), "--webui-port", str(master_ui)],
        "worker": [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                   "--cores", "2", "--memory", "2g", "--webui-port", str(worker_ui),
                   "--work-dir", str(folder / "work")],
    }  # fmt: skip
    processes = []
    try:
        for name, command in commands.items():
            log = (folder / f"{name}.log").open("w")
            processes.append(
                subprocess.Popen(
                    command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{master_ui}/json/", timeout=2).json().get("aliveworkers"):
                    break
            assert all(p.poll() is None for p in processes), (folder / "master.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the standalone cluster did not start within 120 s"
            time.sleep(1)
        yield url
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def stored(settings: Settings) -> dict[str, Any]:
    """What the speed layer left in the stores, without what depends on when or where it ran."""
    cluster, session = cassandra_session(settings)
    try:
        keyspace = settings.cassandra.keyspace
        columns = [c for c in PROFILE_COLUMNS if c not in ("last_batch_id", "previous")]
        profiles = sorted(
            tuple(row) for row in session.execute(f"SELECT {', '.join(columns)} FROM {keyspace}.profiles")
        )
        batches = sorted(
            (row.input_rows, row.new_profiles, row.dead_lettered)
            for row in session.execute(f"SELECT * FROM {keyspace}.stream_batches")
        )
    finally:
        cluster.shutdown()
    with mongo_client(settings) as client:
        database = mongo_database(client, settings)
        documents = {
            d["_id"]: {k: v for k, v in d.items() if k != "ingested_at"}
            for d in database[settings.mongo.raw_profiles_collection].find()
        }
        letters = {
            d["_id"]: (d["reason"], d["job"]) for d in database[settings.mongo.dead_letters_collection].find()
        }
    return {"profiles": profiles, "batches": batches, "documents": documents, "dead_letters": letters}


def merged_view(settings: Settings) -> Any:
    """What serving shows of ``settings``' stores (a pipeline object only reads them)."""
    reader = Pipeline.__new__(Pipeline)
    reader.settings = settings
    return reader.merged()


def test_the_speed_layer_on_a_spark_cluster_stores_what_a_local_run_stores(
    spark: SparkSession, own_stores: Callable[..., Settings], tmp_path: Path
) -> None:
    local = own_stores("local", speed_layer={"max_offsets_per_trigger": 150})
    pipeline = Pipeline(local, spark)
    pipeline.produce_users_then_moves(SyntheticSource(53, now=BASE).next_batch(200), BASE, moved=30)
    pipeline.produce_bad(b'{"not": "a profile"}', key="not-a-uuid")
    pipeline.speed()  # local[2], in this process

    on_cluster = own_stores(
        "cluster",
        kafka={"profiles_topic": local.kafka.profiles_topic},
        speed_layer={"max_offsets_per_trigger": 150},
    )
    copy_subject_keys(local, on_cluster)
    with standalone_cluster(tmp_path / "spark") as master:
        environment = cli_environment(
            on_cluster,
            USERPULSE_SPARK__MASTER=master,
            USERPULSE_SPEED_LAYER__MAX_OFFSETS_PER_TRIGGER="150",
        )
        finished = subprocess.run(
            [sys.executable, "-m", "userpulse.cli", "speed", "--available-now"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
    assert finished.returncode == 0, finished.stderr[-3000:]

    on_local, on_cluster_stores = stored(local), stored(on_cluster)
    assert on_local["documents"] and on_local["dead_letters"]
    assert on_cluster_stores == on_local
    assert merged_view(on_cluster) == pipeline.merged() == pipeline.expected()
