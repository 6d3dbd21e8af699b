"""What an operator looks at first: the pipeline's topics, and how far behind each layer is.

Offsets of a layer come from its Structured Streaming checkpoint (the offset log of its last committed
micro-batch: what it has processed for good), the topic's from Kafka; lag is their difference, per
partition. Nothing here starts Spark.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from rich.filesize import decimal

from core.settings import Settings
from orchestration.runs import BatchRun, RunHistory
from serving.profiles import (
    DeadLetterRow,
    DeadLetterTally,
    ProfileDocuments,
    counts_by_reason,
    mask_raw_value,
)
from serving.views import ServingViews
from stores.checkpoints import committed_offsets
from stores.documents import PRODUCER_JOB
from stores.speed_views import StreamBatch
from stores.topics import topic_retention_ms

logger = logging.getLogger(__name__)
T = TypeVar("T")

RATE_WINDOW_S = 300
"""The window of a topic's rate: records appended in the last five minutes."""
LAG_HISTORY_BATCHES = 120
"""Micro-batches read per refresh: the lag chart's history (the table shows the newest of them)."""
PRODUCER = PRODUCER_JOB
"""The layer name of the producer's dead letters (kept in their topic, not in the dead-letter store)."""
DEAD_LETTER_SOURCES = (PRODUCER, "speed", "batch")
"""Where dead letters come from: the producer's topic, and the layers' dead-letter store."""
DEAD_LETTER_HOURS = 24
"""The hours of the dead letters over time (the current one included)."""


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    earliest: int
    """The first offset the broker still holds (older records have expired)."""
    end: int
    """The offset the next record will get."""
    recent: int = 0
    """Records appended in the last ``RATE_WINDOW_S`` (by their Kafka timestamps)."""
    size_bytes: int | None = None
    """The partition's log on disk, over all its replicas; None when no broker reported it."""

    @property
    def records(self) -> int:
        return self.end - self.earliest


@dataclass(frozen=True)
class TopicOverview:
    name: str
    partitions: list[PartitionOffsets] | None
    """None when the topic does not exist."""
    retention_ms: int | None
    """The topic's own ``retention.ms``; None when the broker's default applies."""

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions or ())

    @property
    def rate_per_s(self) -> float:
        """Records appended per second over the last ``RATE_WINDOW_S``."""
        return sum(p.recent for p in self.partitions or ()) / RATE_WINDOW_S

    @property
    def size_bytes(self) -> int | None:
        sizes = [p.size_bytes for p in self.partitions or () if p.size_bytes is not None]
        return sum(sizes) if sizes else None


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    end: int
    speed: int | None
    """Offset up to which the speed layer has committed (None: no committed micro-batch yet)."""
    archive: int | None
    """Offset up to which the archive has committed."""
    speed_lag_s: float | None = None
    """How long the oldest record the speed layer has not committed has waited (0: none waits; None:
    unknown)."""
    archive_lag_s: float | None = None

    @property
    def speed_lag(self) -> int | None:
        return None if self.speed is None else self.end - self.speed

    @property
    def archive_lag(self) -> int | None:
        return None if self.archive is None else self.end - self.archive


@dataclass(frozen=True)
class TopicMessage:
    """One record of a topic as an operator sees it: its coordinates, key and value masked."""

    partition: int
    offset: int
    timestamp: datetime
    key: str | None
    value: str
    """Decoded, direct identifiers masked (``serving.profiles.mask_raw_value``); sealed ones stay sealed."""
    headers: dict[str, str]


def topic_message(record: Any) -> TopicMessage:
    """A consumed Kafka record -> what the operator is shown of it."""
    return TopicMessage(
        record.partition,
        record.offset,
        datetime.fromtimestamp(record.timestamp / 1000, UTC),
        record.key.decode("utf-8", errors="replace") if record.key is not None else None,
        mask_raw_value(record.value),
        {name: value.decode("utf-8", errors="replace") for name, value in record.headers or []},
    )


class TopicReader:
    """The Kafka reads of the operations views, on one consumer and one admin client kept open between
    refreshes: opening them (connections, metadata) costs more than the reads themselves. One read at a
    time (the clients are not thread-safe); clients that failed are closed and opened again next time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._consumer: KafkaConsumer | None = None
        self._admin: KafkaAdminClient | None = None

    def _clients(self) -> tuple[KafkaConsumer, KafkaAdminClient]:
        options = self.settings.kafka.client_options()
        if self._consumer is None:
            self._consumer = KafkaConsumer(**options, enable_auto_commit=False, fetch_max_wait_ms=100)
        if self._admin is None:
            self._admin = KafkaAdminClient(**options, client_id="userpulse-operations")
        return self._consumer, self._admin

    def _reset(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._consumer = self._admin = None

    def overview(self) -> list[TopicOverview]:
        """The profiles and dead-letter topics: partitions, offsets, recent records, size on disk and
        retention."""
        kafka = self.settings.kafka
        names = [kafka.profiles_topic, kafka.dead_letter_topic]
        with self._lock:
            try:
                consumer, admin = self._clients()
                existing = set(admin.list_topics())
                present = [name for name in names if name in existing]
                retention = topic_retention_ms(admin, present) if present else {}
                sizes = partition_sizes(admin.describe_log_dirs(present)) if present else {}
                since_ms = int((time.time() - RATE_WINDOW_S) * 1000)
                overviews = []
                for name in names:
                    if name not in existing:
                        overviews.append(TopicOverview(name, None, None))
                        continue
                    numbers = consumer.partitions_for_topic(name) or set()
                    partitions = [TopicPartition(name, p) for p in sorted(numbers)]
                    earliest = consumer.beginning_offsets(partitions)
                    end = consumer.end_offsets(partitions)
                    # The first offset at or after the window's start (None: nothing appended since).
                    window_start = consumer.offsets_for_times({tp: since_ms for tp in partitions})
                    offsets = [
                        PartitionOffsets(
                            tp.partition,
                            earliest[tp],
                            end[tp],
                            recent=0 if window_start[tp] is None else end[tp] - window_start[tp].offset,
                            size_bytes=sizes.get((name, tp.partition)),
                        )
                        for tp in partitions
                    ]
                    overviews.append(TopicOverview(name, offsets, retention.get(name)))
                return overviews
            except Exception:
                self._reset()
                raise

    def record_timestamps(self, positions: dict[int, int]) -> dict[int, datetime]:
        """The Kafka timestamp of the record at each (partition -> offset) of the profiles topic, found
        without reading a record (``timestamps_by_bisection`` on the broker's time index: a few
        ``offsets_for_times`` calls, each for every partition at once, whatever the size of the record
        batches). A partition whose offset the broker does not hold (expired, or not written yet) is
        left out."""
        topic = self.settings.kafka.profiles_topic
        with self._lock:
            try:
                consumer, _ = self._clients()

                def first_offsets_at(moments: dict[int, int]) -> dict[int, int | None]:
                    asked = {TopicPartition(topic, p): ms for p, ms in moments.items()}
                    found = consumer.offsets_for_times(asked)
                    return {tp.partition: None if at is None else at.offset for tp, at in found.items()}

                ends = consumer.end_offsets([TopicPartition(topic, p) for p in positions])
                held = {p: at for p, at in positions.items() if at < ends[TopicPartition(topic, p)]}
                stamps = timestamps_by_bisection(held, first_offsets_at, int(time.time() * 1000))
                return {p: datetime.fromtimestamp(ms / 1000, UTC) for p, ms in stamps.items()}
            except Exception:
                self._reset()
                raise

    def appended_per_hour(self, topic: str, starts: list[datetime]) -> dict[datetime, int]:
        """Records appended to ``topic`` within each hour of ``starts`` (consecutive hour starts, the
        last one's hour runs until now), from the offsets at each hour's start: no record is read.
        Empty when the topic does not exist."""
        with self._lock:
            try:
                consumer, _ = self._clients()
                numbers = consumer.partitions_for_topic(topic) or set()
                partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
                if not partitions:
                    return {}
                end = consumer.end_offsets(partitions)
                boundaries = []
                for start in starts:
                    # The first offset at or after the hour's start; None: nothing appended since.
                    start_ms = int(start.timestamp() * 1000)
                    found = consumer.offsets_for_times({tp: start_ms for tp in partitions})
                    boundaries.append(
                        {tp.partition: end[tp] if found[tp] is None else min(found[tp].offset, end[tp])
                         for tp in partitions}
                    )  # fmt: skip
                boundaries.append({tp.partition: end[tp] for tp in partitions})
                return dict(zip(starts, records_between(boundaries), strict=True))
            except Exception:
                self._reset()
                raise

    def last_messages(
        self, topic: str, partition: int, count: int, timeout_s: float = 2.0
    ) -> list[TopicMessage]:
        """The last ``count`` records of a partition (fewer if it holds fewer), newest first."""
        with self._lock:
            try:
                consumer, _ = self._clients()
                tp = TopicPartition(topic, partition)
                if partition not in (consumer.partitions_for_topic(topic) or set()):
                    return []
                earliest, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
                start = max(earliest, end - count)
                consumer.assign([tp])
                consumer.seek(tp, start)
                records: list[Any] = []
                deadline = time.monotonic() + timeout_s
                while start + len(records) < end and time.monotonic() < deadline:
                    for batch in consumer.poll(timeout_ms=100).values():
                        records.extend(r for r in batch if r.offset < end)
                consumer.unsubscribe()
                return [topic_message(record) for record in sorted(records, key=lambda r: -r.offset)[:count]]
            except Exception:
                self._reset()
                raise

    def close(self) -> None:
        with self._lock:
            self._reset()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def partition_sizes(log_dirs: list[dict[str, Any]]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> bytes on disk over all replicas, from the admin client's
    ``describe_log_dirs`` answer (one entry per broker; a log directory that failed is left out, as is
    a replica being moved to another directory, which would count its bytes twice)."""
    sizes: dict[tuple[str, int], int] = {}
    for broker in log_dirs:
        for log_dir in broker["log_dirs"]:
            if log_dir["error_code"]:
                continue
            for topic in log_dir["topics"]:
                for partition in topic["partitions"]:
                    if partition["is_future_key"]:
                        continue
                    key = (topic["name"], partition["partition_index"])
                    sizes[key] = sizes.get(key, 0) + partition["partition_size"]
    return sizes


def timestamps_by_bisection(
    offsets: dict[int, int],
    first_offsets_at: Callable[[dict[int, int]], dict[int, int | None]],
    now_ms: int,
    resolution_ms: int = 1_000,
) -> dict[int, int]:
    """The timestamp (ms) of the record at each (partition -> offset), from ``first_offsets_at``
    (partition -> moment => the first offset stamped at or after it, None when none is): the latest
    moment whose first offset is at or before the record's. Searched back from ``now_ms`` by doubling
    steps, then bisected to ``resolution_ms`` or 1% of the record's age, whichever is coarser: about
    ``log2(age / resolution) + 7`` calls, each for every partition at once. A record stamped after
    ``now_ms`` (a clock ahead) is given ``now_ms``; an offset before the partition's first record is
    left out."""
    low: dict[int, int] = {}
    high: dict[int, int] = {}
    pending = dict.fromkeys(offsets, now_ms)
    step = resolution_ms
    while pending:  # doubling: a moment at or before the record's timestamp
        found = first_offsets_at(pending)
        for partition, moment in list(pending.items()):
            first = found.get(partition)
            if first is not None and first <= offsets[partition]:
                low[partition] = moment
                del pending[partition]
            elif moment == 0:
                del pending[partition]  # the broker no longer holds it
            else:
                high[partition] = moment
                pending[partition] = max(0, now_ms - step)
        step *= 2

    def coarse_enough(partition: int) -> bool:
        gap = high[partition] - low[partition]
        return gap <= max(resolution_ms, (now_ms - high[partition]) // 100)

    bisecting = {p for p in low if p in high and not coarse_enough(p)}
    while bisecting:
        middle = {p: (low[p] + high[p]) // 2 for p in bisecting}
        found = first_offsets_at(middle)
        for partition, moment in middle.items():
            first = found.get(partition)
            if first is not None and first <= offsets[partition]:
                low[partition] = moment
            else:
                high[partition] = moment
        bisecting = {p for p in bisecting if not coarse_enough(p)}
    return low


def records_between(boundaries: list[dict[int, int]]) -> list[int]:
    """Records appended between consecutive boundaries, each given as partition -> offset."""
    return [
        sum(later[partition] - earlier[partition] for partition in later)
        for earlier, later in itertools.pairwise(boundaries)
    ]


def hour_starts(now: datetime, hours: int) -> list[datetime]:
    """The starts of the last ``hours`` hours, oldest first; the last is the current hour's."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=back) for back in range(hours - 1, -1, -1)]


@dataclass(frozen=True)
class DeadLetterHour:
    """The dead letters of one hour, by source (``DEAD_LETTER_SOURCES``)."""

    hour: datetime
    by_source: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_source.values())


def dead_letters_by_hour(
    tallies: list[DeadLetterTally], producer_per_hour: dict[datetime, int], starts: list[datetime]
) -> list[DeadLetterHour]:
    """The hours of ``starts`` that have dead letters, newest first: the layers' stored letters not
    re-driven (by the hour they were stored) and the producer's (by the hour they were appended)."""
    counts: dict[datetime, Counter[str]] = {start: Counter() for start in starts}
    for tally in tallies:
        if tally.hour in counts:
            counts[tally.hour][tally.job] += tally.count
    for start, appended in producer_per_hour.items():
        if start in counts:
            counts[start][PRODUCER] += appended
    return [
        DeadLetterHour(start, {source: counts[start][source] for source in DEAD_LETTER_SOURCES})
        for start in reversed(starts)
        if counts[start].total()
    ]


def size_on_disk(size_bytes: int | None) -> str:
    """A size for people ("12.3 MB"); "—" when the broker did not report it."""
    return "—" if size_bytes is None else decimal(size_bytes)


def topic_overview(settings: Settings) -> list[TopicOverview]:
    """The profiles and dead-letter topics: partitions, offsets and retention (clients opened for it)."""
    with TopicReader(settings) as reader:
        return reader.overview()


def checkpoint_offsets(settings: Settings) -> tuple[dict[int, int] | None, dict[int, int] | None]:
    """The profiles topic's offsets the speed layer and the archive have committed (None: not yet)."""
    topic, paths, store = settings.kafka.profiles_topic, settings.paths, settings.object_store
    return (
        committed_offsets(paths.checkpoint(settings.speed_layer.job_name), topic, store),
        committed_offsets(paths.checkpoint(settings.batch_layer.archive_job_name), topic, store),
    )


def layer_lag(settings: Settings) -> list[PartitionLag]:
    """Per partition of the profiles topic: its end offset, where the speed layer and the archive have
    committed up to, and how long the oldest record each has not committed has waited."""
    with TopicReader(settings) as reader:
        [overview] = [t for t in reader.overview() if t.name == settings.kafka.profiles_topic]
        return lag_rows(overview.partitions or [], *checkpoint_offsets(settings), reader.record_timestamps)


def lag_rows(
    partitions: list[PartitionOffsets],
    speed: dict[int, int] | None,
    archive: dict[int, int] | None,
    waiting_since: Callable[[dict[int, int]], dict[int, datetime]] | None = None,
    now: datetime | None = None,
) -> list[PartitionLag]:
    """Each partition's end offset beside the layers' committed offsets. A layer that has committed
    but not yet seen a partition is at its start (0 offsets consumed).

    With ``waiting_since`` (partition -> first offset not committed => that record's Kafka timestamp),
    each lag is also given in seconds: how long the oldest record a layer has not committed has waited.
    """
    now = now or datetime.now(UTC)

    def at(committed: dict[int, int] | None) -> dict[int, int] | None:
        if committed is None:
            return None
        return {p.partition: max(committed.get(p.partition, 0), p.earliest) for p in partitions}

    def seconds(positions: dict[int, int] | None) -> dict[int, float]:
        if positions is None or waiting_since is None:
            return {}
        behind = {p.partition: positions[p.partition] for p in partitions if positions[p.partition] < p.end}
        waited = waiting_since(behind) if behind else {}
        caught_up = {p.partition: 0.0 for p in partitions if p.partition not in behind}
        return caught_up | {part: max(0.0, (now - ts).total_seconds()) for part, ts in waited.items()}

    speed_at, archive_at = at(speed), at(archive)
    speed_s, archive_s = seconds(speed_at), seconds(archive_at)
    return [
        PartitionLag(
            p.partition,
            p.end,
            None if speed is None else speed.get(p.partition, 0),
            None if archive is None else archive.get(p.partition, 0),
            speed_s.get(p.partition),
            archive_s.get(p.partition),
        )
        for p in partitions
    ]


@dataclass(frozen=True)
class OperationsSnapshot:
    """What one periodic refresh of the operations page shows; a part whose source failed is None, with
    why in ``errors``."""

    topics: list[TopicOverview] | None
    lag: list[PartitionLag] | None
    batches: list[StreamBatch] | None
    """The speed layer's latest micro-batches (``LAG_HISTORY_BATCHES``), newest first."""
    runs: list[BatchRun] | None
    """The batch layer's latest runs, newest first."""
    messages: list[TopicMessage] | None
    """The last records of the partition asked, newest first."""
    errors: dict[str, str]


@dataclass(frozen=True)
class DeadLettersSnapshot:
    """The dead-letter parts of the operations page, read on their own cadence."""

    reasons: list[tuple[str, str, int]] | None
    """(layer, reason, dead letters), the most frequent first; the producer's in one row."""
    hourly: list[DeadLetterHour] | None
    """The dead letters of the last ``DEAD_LETTER_HOURS`` hours by source, newest first."""
    letters: list[DeadLetterRow] | None
    """The latest (of the reason asked), newest first."""
    errors: dict[str, str]


class _Parts:
    """Reads each part on its own, so a source that fails leaves the others' parts; its error is kept
    (by part) to be shown in place."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def read(self, part: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except Exception as error:  # shown in place on the page
            logger.warning("operations part %s failed: %s", part, error)
            self.errors[part] = f"{type(error).__name__}: {error}"
            return None


def producer_dead_letters(topics: list[TopicOverview], settings: Settings) -> tuple[str, str, int] | None:
    """The producer's dead letters as a row of the counts by reason: they are kept in their own topic,
    each with its reason inside (counted from the offsets: reading them all is no refresh's work)."""
    dead_letter_topic = next((t for t in topics if t.name == settings.kafka.dead_letter_topic), None)
    if dead_letter_topic is None or not dead_letter_topic.records:
        return None
    return (PRODUCER, f"any (in the topic {dead_letter_topic.name})", dead_letter_topic.records)


@dataclass(frozen=True)
class OperationsSources:
    """What the operations views read, each opened once by the server and shared by its sessions."""

    reader: TopicReader
    documents: ProfileDocuments
    views: ServingViews
    history: RunHistory


def operations_snapshot(
    settings: Settings,
    sources: OperationsSources,
    runs_shown: int = 10,
    messages_of: tuple[str, int] | None = None,
    messages_shown: int = 10,
) -> OperationsSnapshot:
    """Read the topics, each layer's progress, the latest micro-batches and batch runs, and the last
    records of a partition (with ``messages_of``: topic, partition)."""
    parts = _Parts()
    topics = parts.read("topics", sources.reader.overview)
    lag = None
    if topics is not None:
        profiles = next(t for t in topics if t.name == settings.kafka.profiles_topic)
        lag = parts.read(
            "lag",
            lambda: lag_rows(
                profiles.partitions or [], *checkpoint_offsets(settings), sources.reader.record_timestamps
            ),
        )
    batches = parts.read("micro-batches", lambda: sources.views.recent_speed_batches(LAG_HISTORY_BATCHES))
    runs = parts.read("batch runs", lambda: sources.history.recent(runs_shown))
    messages = None
    if messages_of is not None:
        topic, partition = messages_of
        messages = parts.read(
            "messages", lambda: sources.reader.last_messages(topic, partition, messages_shown)
        )
    return OperationsSnapshot(topics, lag, batches, runs, messages, parts.errors)


def dead_letters_snapshot(
    settings: Settings, sources: OperationsSources, reason: str | None, letters_shown: int
) -> DeadLettersSnapshot:
    """Read the dead letters: counts by reason and per hour (the layers' tallies, offsets of the
    producer's topic) and the latest ``letters_shown`` (of ``reason``)."""
    parts = _Parts()
    tallies = parts.read("dead letters", sources.documents.dead_letter_tallies)
    topics = parts.read("dead letters over time", sources.reader.overview)
    starts = hour_starts(datetime.now(UTC), DEAD_LETTER_HOURS)
    producer_hours = parts.read(
        "dead letters over time",
        lambda: sources.reader.appended_per_hour(settings.kafka.dead_letter_topic, starts),
    )
    reasons = hourly = None
    if tallies is not None:
        reasons = counts_by_reason(tallies)
        if topics is not None and (producer := producer_dead_letters(topics, settings)):
            reasons = sorted([*reasons, producer], key=lambda c: (-c[2], c[0], c[1]))
        if producer_hours is not None:
            hourly = dead_letters_by_hour(tallies, producer_hours, starts)
    letters = parts.read("dead letters", lambda: sources.documents.latest_dead_letters(letters_shown, reason))
    return DeadLettersSnapshot(reasons, hourly, letters, parts.errors)
