"""The parts of a micro-batch that run in Spark's executors, in their Python workers.

Two Arrow functions (``mapInArrow``) wrap the JVM's work in the one Spark pass of a micro-batch:

- ``with_data_keys``: each partition's Kafka records get their subject's data key (one ``IN`` lookup
  per chunk of uuids), so the JVM opens the sealed identifiers (``try_aes_decrypt``) in the parse;
- ``apply_records``: each partition's parsed and transformed records are applied to the stores
  (``speed_layer.task``: states, partials, raw documents, dead letters), and one small summary row per
  Kafka partition goes back to the driver.

No record reaches the driver. The Kafka source gives each Kafka partition its own Spark partition, and
every step between the two functions is narrow, so a task holds whole Kafka partitions: all copies of a
uuid (the record key) meet in one task, which owns their state (see ``speed_layer.task``).

The stores' connections live in the worker process (``spark.python.worker.reuse``, on by default):
opened by the first task that needs them and reused by every later task and batch of that process. On
a cluster each executor opens its own, from the settings shipped with the function.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from pyspark.sql import Row

from core.aggregates import window_seconds_of
from core.settings import Settings
from core.spark import as_utc
from speed_layer.task import TaskContext, TaskOutcome, process_records
from stores.connections import cassandra_session, mongo_client, mongo_database
from stores.documents import MongoRawStore, dead_letter_document, mongo_raw_store, raw_document
from stores.outages import ride_out
from stores.speed_views import CassandraSpeedStore
from stores.subject_keys import SubjectKeyStore

SUMMARY_SCHEMA = (
    "partition int, input_rows long, end_offset long, new_profiles long, later_copies long, "
    "dead_lettered long, under_age long, erased long, max_event_time timestamp, windows array<timestamp>"
)
"""What ``apply_records`` returns per Kafka partition of a task (a ``TaskOutcome``)."""

SUMMARY_ARROW_SCHEMA = pa.schema(
    [
        ("partition", pa.int32()),
        ("input_rows", pa.int64()),
        ("end_offset", pa.int64()),
        ("new_profiles", pa.int64()),
        ("later_copies", pa.int64()),
        ("dead_lettered", pa.int64()),
        ("under_age", pa.int64()),
        ("erased", pa.int64()),
        ("max_event_time", pa.timestamp("us", tz="UTC")),
        ("windows", pa.list_(pa.timestamp("us", tz="UTC"))),
    ]
)


@dataclass(frozen=True)
class WorkerStores:
    """The connections of one worker process to the stores of one configuration."""

    cassandra: CassandraSpeedStore
    mongo: MongoRawStore
    subject_keys: SubjectKeyStore


@dataclass(frozen=True)
class _Connections:
    stores: WorkerStores
    cluster: Any
    client: Any

    def close(self) -> None:
        self.client.close()
        self.cluster.shutdown()


_connections: OrderedDict[str, _Connections] = OrderedDict()
_lock = threading.Lock()

KEPT_CONFIGURATIONS = 2
"""Store configurations whose connections a worker keeps open: a job uses one; more appear only when a
process runs several jobs (the tests), whose oldest connections are then closed."""


def worker_stores(settings: Settings) -> WorkerStores:
    """The stores of ``settings`` in this worker process, connected on first use and then reused."""
    key = settings.model_dump_json()
    with _lock:
        if key in _connections:
            _connections.move_to_end(key)
            return _connections[key].stores
        cluster, session = cassandra_session(settings)
        client = mongo_client(settings)
        cassandra = settings.cassandra
        key_bytes = settings.secrets.pseudonymization_key_bytes()
        stores = WorkerStores(
            CassandraSpeedStore(session, cassandra.keyspace, cassandra.concurrency, cassandra.rows_per_batch),
            mongo_raw_store(mongo_database(client, settings), settings),
            SubjectKeyStore(session, cassandra.keyspace, key_bytes, cassandra.concurrency),
        )
        _connections[key] = _Connections(stores, cluster, client)
        while len(_connections) > KEPT_CONFIGURATIONS:
            _connections.popitem(last=False)[1].close()
        return stores


@atexit.register
def _close_all() -> None:
    for connections in _connections.values():
        connections.close()


def with_data_keys(settings: Settings, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The Kafka records of a partition with a ``data_key`` column: their subject's data key (by the
    record key, the uuid), null for a subject that has none (erased, or never sealed)."""
    keys = worker_stores(settings).subject_keys
    for batch in batches:
        uuids = [key.decode("utf-8", "replace") if key else None for key in batch.column("key").to_pylist()]
        wanted = [uuid for uuid in uuids if uuid]
        found = (
            ride_out(
                functools.partial(keys.keys_for, wanted), "reading subject keys", "the task fails", settings
            )
            if wanted
            else {}
        )
        data_keys = pa.array([found.get(uuid) if uuid else None for uuid in uuids], pa.binary())
        yield batch.append_column("data_key", data_keys)


@dataclass(frozen=True)
class BatchContext:
    """What every task of one micro-batch shares (shipped to the executors with the function)."""

    settings: Settings
    batch_id: int
    processed_at: datetime
    job_name: str
    checkpoint: str


def apply_records(context: BatchContext, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Apply a task's records to the stores, each Kafka partition on its own; one summary row each.

    A store that does not answer fails the partition's work, which is run again whole (it is idempotent
    for a batch id and partition) for up to the outage tolerance; then the task, and the batch, fail
    with the store's one line.
    """
    settings = context.settings
    stores = worker_stores(settings)
    task_context = TaskContext(
        batch_id=context.batch_id,
        processed_at=context.processed_at,
        job_name=context.job_name,
        minimum_age=settings.profiles.minimum_age,
        window_seconds=window_seconds_of(settings.profiles.window_duration),
        cassandra=stores.cassandra,
        mongo=stores.mongo,
        document_of=functools.partial(raw_document, ingested_at=context.processed_at),
        dead_letter_of=functools.partial(dead_letter_document, job=context.job_name),
    )
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for batch in batches:
        for record in batch.to_pylist():
            by_partition.setdefault(record["partition"], []).append(record)
    outcomes = [
        ride_out(
            functools.partial(process_records, partition, records, task_context),
            f"speed batch {context.batch_id} (Kafka partition {partition})",
            f"the job resumes from checkpoint {context.checkpoint} at that batch",
            settings,
        )
        for partition, records in sorted(by_partition.items())
    ]
    yield pa.RecordBatch.from_pylist(
        [summary_row(outcome) for outcome in outcomes], schema=SUMMARY_ARROW_SCHEMA
    )


def summary_row(outcome: TaskOutcome) -> dict[str, Any]:
    """A task's outcome as a row of ``SUMMARY_ARROW_SCHEMA`` (its fields, by name)."""
    return {**dataclasses.asdict(outcome), "windows": sorted(outcome.windows)}


def outcome_of(row: Row) -> TaskOutcome:
    """A summary row collected on the driver, as a ``TaskOutcome`` (collected timestamps are naive)."""
    values = row.asDict()
    return TaskOutcome(
        **{
            **values,
            "max_event_time": as_utc(values["max_event_time"]),
            "windows": {as_utc(window) for window in values["windows"] or ()},
        }
    )
