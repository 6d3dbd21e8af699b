"""Structured Streaming checkpoints, read without Spark: which offsets of a topic a job has committed.

Spark writes each job's checkpoint (``paths.checkpoint(job)``); the operations page and ``userpulse
lag`` read it here through Arrow's file systems, so the same code reads a local folder, HDFS or an
object store. An ``s3a://`` location (Hadoop's name for S3) is opened as S3 with the same
``object_store`` settings Spark is given.
"""

from __future__ import annotations

import json

from pyarrow import fs

from core.settings import ObjectStoreSettings, child_location
from stores.object_store import file_system


def source_offsets(offset_log: str, topic: str) -> dict[int, int] | None:
    """A topic's end offsets in a Structured Streaming offset-log file: a version line (``v1``), the
    batch's metadata, then one JSON line per source (``{"topic": {"0": 42, ...}}``)."""
    for line in offset_log.splitlines()[2:]:
        try:
            source = json.loads(line)
        except ValueError:
            continue  # "-": a source with no offsets in that batch
        if isinstance(source, dict) and topic in source:
            return {int(partition): int(offset) for partition, offset in source[topic].items()}
    return None


def committed_offsets(
    checkpoint: str, topic: str, store: ObjectStoreSettings | None = None
) -> dict[int, int] | None:
    """The offsets of ``topic`` up to which the query of ``checkpoint`` has committed: those of its last
    committed micro-batch (a batch in the offset log without a commit is under way, not done)."""
    files, root = file_system(checkpoint, store or ObjectStoreSettings())
    commits = files.get_file_info(fs.FileSelector(child_location(root, "commits"), allow_not_found=True))
    batch_ids = sorted(int(info.base_name) for info in commits if info.base_name.isdigit())
    if not batch_ids:
        return None
    offsets = child_location(root, "offsets", str(batch_ids[-1]))
    if files.get_file_info(offsets).type != fs.FileType.File:
        return None
    with files.open_input_stream(offsets) as stream:
        return source_offsets(stream.read().decode(), topic)
