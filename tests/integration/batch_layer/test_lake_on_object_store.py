"""The lake and the checkpoints on an S3-compatible object store, by settings alone: SeaweedFS (the stack's
object store) in a folder of the test, ``USERPULSE_PATHS__LAKE_DIR=s3a://...`` and
``USERPULSE_PATHS__CHECKPOINTS_DIR=s3a://...``, and ``userpulse batch archive`` then ``recompute`` run as
a user runs them. The batch views must equal those of a run over the same topic with the lake on local
disk; the archive's checkpoint, read the way the operations page reads it, must have committed the
topic's end. ``userpulse speed --available-now``, its checkpoint in the bucket too, must store what a
speed run with a local checkpoint stores.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyarrow import fs
from pydantic import SecretStr
from pyspark.sql import SparkSession

from batch_layer.archive import topic_end_offsets
from core.settings import ObjectStoreSettings, Settings
from infra.stack import LocalStack, SeaweedFSService
from ingestion.synthetic import SyntheticSource
from stores.checkpoints import committed_offsets
from stores.object_store import s3_options
from tests.integration.support.batch_views import stored_views
from tests.integration.support.pipeline import Pipeline
from tests.integration.support.processes import cli_environment, free_port, run_cli
from tests.integration.support.stored_state import copy_subject_keys, speed_layer_output

pytestmark = pytest.mark.integration

BASE = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
BUCKET = "userpulse-lake"


@pytest.fixture
def object_store(own_stores: Callable[..., Settings], tmp_path: Path) -> Iterator[ObjectStoreSettings]:
    """SeaweedFS on free ports under the test's folder, every request signed with the test's keys."""
    store = ObjectStoreSettings(
        endpoint=f"http://127.0.0.1:{free_port()}",
        access_key="userpulse",
        secret_key=SecretStr("lake-s3cret"),
    )
    settings = own_stores(
        "seaweedfs",
        object_store=store.model_dump(),
        local_stack={"seaweedfs_ports_from": free_port()},
        paths={"stack_dir": tmp_path / "object-store", "lake_dir": f"s3a://{BUCKET}/lake"},
    )
    stack = LocalStack(settings, [SeaweedFSService(settings)])
    stack.up()
    try:
        yield settings.object_store
    finally:
        stack.down()


def test_both_layers_on_an_object_store_compute_what_they_compute_on_local_disk(
    spark: SparkSession, own_stores: Callable[..., Settings], object_store: ObjectStoreSettings
) -> None:
    same_micro_batches = {"max_offsets_per_trigger": 100}  # so the two runs' batch records compare
    local = own_stores("lake_local", speed_layer=same_micro_batches)
    pipeline = Pipeline(local, spark)
    users = SyntheticSource(59, now=BASE).next_batch(150)
    pipeline.produce_users_then_moves(users, BASE, moved=20)
    pipeline.speed()
    pipeline.archive()
    pipeline.recompute()

    on_s3 = own_stores(
        "lake_s3",
        kafka={"profiles_topic": local.kafka.profiles_topic},
        speed_layer=same_micro_batches,
        object_store=object_store.model_dump(),
        paths={"lake_dir": f"s3a://{BUCKET}/lake", "checkpoints_dir": f"s3a://{BUCKET}/checkpoints"},
    )
    copy_subject_keys(local, on_s3)
    run_cli(on_s3, "speed", "--available-now", USERPULSE_SPEED_LAYER__MAX_OFFSETS_PER_TRIGGER="100")
    run_cli(on_s3, "batch", "archive")
    run_cli(on_s3, "batch", "recompute")

    assert speed_layer_output(on_s3) == speed_layer_output(local)
    # Every figure of every window and of all time is the same; only the views' version differs.
    assert stored_views(on_s3)[1:] == stored_views(local)[1:]
    # The tables and the checkpoint are objects of the bucket.
    bucket = fs.S3FileSystem(**s3_options(object_store))
    for table in ("archive", "silver_profiles"):
        log = bucket.get_file_info(fs.FileSelector(f"{BUCKET}/lake/{table}/_delta_log"))
        assert any(info.base_name.endswith(".json") for info in log), table
    topic = on_s3.kafka.profiles_topic
    for job in (on_s3.speed_layer.job_name, on_s3.batch_layer.archive_job_name):
        checkpoint = on_s3.paths.checkpoint(job)
        assert checkpoint.startswith(f"s3a://{BUCKET}/checkpoints/")
        assert committed_offsets(checkpoint, topic, object_store) == topic_end_offsets(on_s3), job

    # Erasure reaches the lake in the bucket (Delta's DELETE, REORG and VACUUM through S3A): both
    # archived versions of a moved user go, and the archive no longer has a version of them.
    moved_uuid = users[0]["login"]["uuid"]
    assert len(json.loads(run_cli(on_s3, "profile", "history", moved_uuid, "--json"))) == 2
    erased = run_cli(on_s3, "profile", "delete", moved_uuid)
    assert re.search(r"Delta archive\D+2\b", erased), erased
    history = subprocess.run(
        [sys.executable, "-m", "userpulse.cli", "profile", "history", moved_uuid],
        env=cli_environment(on_s3), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert history.returncode != 0 and "no version" in history.stderr, history.stderr[-2000:]
