"""Both layers on a Spark standalone cluster: a master and one worker started from the pyspark package
(bound to 127.0.0.1), ``userpulse speed --available-now`` then ``userpulse batch archive`` and
``recompute`` run with ``USERPULSE_SPARK__MASTER=spark://...``. Their executors are other processes
than the driver: they look up the subjects' keys and write the stores and the lake themselves. The
stores and the batch views must hold exactly what a ``local[2]`` run over the same topic gives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
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
from tests.integration.support.batch_views import stored_views
from tests.integration.support.pipeline import Pipeline
from tests.integration.support.processes import free_port, run_cli
from tests.integration.support.stored_state import copy_subject_keys, speed_layer_output

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


def merged_view(settings: Settings) -> Any:
    """What serving shows of ``settings``' stores (a pipeline object only reads them)."""
    reader = Pipeline.__new__(Pipeline)
    reader.settings = settings
    return reader.merged()


def test_both_layers_on_a_spark_cluster_store_what_a_local_run_stores(
    spark: SparkSession, own_stores: Callable[..., Settings], tmp_path: Path
) -> None:
    local = own_stores("local", speed_layer={"max_offsets_per_trigger": 150})
    pipeline = Pipeline(local, spark)
    pipeline.produce_users_then_moves(SyntheticSource(53, now=BASE).next_batch(200), BASE, moved=30)
    pipeline.produce_bad(b'{"not": "a profile"}', key="not-a-uuid")
    pipeline.speed()  # local[2], in this process
    pipeline.archive()
    pipeline.recompute()

    on_cluster = own_stores(
        "cluster",
        kafka={"profiles_topic": local.kafka.profiles_topic},
        speed_layer={"max_offsets_per_trigger": 150},
    )
    copy_subject_keys(local, on_cluster)
    with standalone_cluster(tmp_path / "spark") as master:
        on_the_cluster = {
            "USERPULSE_SPARK__MASTER": master,
            "USERPULSE_SPEED_LAYER__MAX_OFFSETS_PER_TRIGGER": "150",  # the local run's micro-batches
        }
        run_cli(on_cluster, "speed", "--available-now", **on_the_cluster)
        run_cli(on_cluster, "batch", "archive", **on_the_cluster)
        run_cli(on_cluster, "batch", "recompute", **on_the_cluster)

    on_local, on_cluster_stores = speed_layer_output(local), speed_layer_output(on_cluster)
    assert on_local["documents"] and on_local["dead_letters"]
    assert on_cluster_stores == on_local
    # Every figure of the batch views, of every window and of all time; only their version differs.
    assert stored_views(on_cluster)[1:] == stored_views(local)[1:]
    assert merged_view(on_cluster) == pipeline.merged() == pipeline.expected()
