"""What an operator looks at first: the pipeline's topics, and how far behind each layer is.

Offsets of a layer come from its Structured Streaming checkpoint (the offset log of its last committed
micro-batch: what it has processed for good), the topic's from Kafka; lag is their difference, per
partition. Nothing here starts Spark.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from core.retention import topic_retention_ms
from core.settings import Settings
from serving.profiles import DeadLetterRow, ProfileDocuments

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    earliest: int
    """The first offset the broker still holds (older records have expired)."""
    end: int
    """The offset the next record will get."""

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


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    end: int
    speed: int | None
    """Offset up to which the speed layer has committed (None: no committed micro-batch yet)."""
    archive: int | None
    """Offset up to which the archive has committed."""

    @property
    def speed_lag(self) -> int | None:
        return None if self.speed is None else self.end - self.speed

    @property
    def archive_lag(self) -> int | None:
        return None if self.archive is None else self.end - self.archive


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


def committed_offsets(checkpoint: Path, topic: str) -> dict[int, int] | None:
    """The offsets of ``topic`` up to which the query of ``checkpoint`` has committed: those of its last
    committed micro-batch (a batch in the offset log without a commit is under way, not done)."""
    commits = checkpoint / "commits"
    if not commits.is_dir():
        return None
    batch_ids = sorted(int(path.name) for path in commits.iterdir() if path.name.isdigit())
    if not batch_ids:
        return None
    offsets = checkpoint / "offsets" / str(batch_ids[-1])
    return source_offsets(offsets.read_text(), topic) if offsets.is_file() else None


def topic_overview(settings: Settings) -> list[TopicOverview]:
    """The profiles and dead-letter topics: partitions, offsets and retention."""
    names = [settings.kafka.profiles_topic, settings.kafka.dead_letter_topic]
    consumer = KafkaConsumer(**settings.kafka.client_options())
    admin = KafkaAdminClient(**settings.kafka.client_options(), client_id="userpulse-operations")
    try:
        existing = set(admin.list_topics())
        present = [name for name in names if name in existing]
        retention = topic_retention_ms(admin, present) if present else {}
        overviews = []
        for name in names:
            if name not in existing:
                overviews.append(TopicOverview(name, None, None))
                continue
            partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
            earliest = consumer.beginning_offsets(partitions)
            end = consumer.end_offsets(partitions)
            offsets = [PartitionOffsets(tp.partition, earliest[tp], end[tp]) for tp in partitions]
            overviews.append(TopicOverview(name, offsets, retention.get(name)))
        return overviews
    finally:
        admin.close()
        consumer.close()


def checkpoint_offsets(settings: Settings) -> tuple[dict[int, int] | None, dict[int, int] | None]:
    """The profiles topic's offsets the speed layer and the archive have committed (None: not yet)."""
    topic, checkpoints = settings.kafka.profiles_topic, settings.paths.checkpoints_dir
    return (
        committed_offsets(checkpoints / settings.speed_layer.job_name, topic),
        committed_offsets(checkpoints / settings.batch_layer.archive_job_name, topic),
    )


def layer_lag(settings: Settings) -> list[PartitionLag]:
    """Per partition of the profiles topic: its end offset, and where the speed layer and the archive
    have committed up to."""
    [overview] = [t for t in topic_overview(settings) if t.name == settings.kafka.profiles_topic]
    return lag_rows(overview.partitions or [], *checkpoint_offsets(settings))


def lag_rows(
    partitions: list[PartitionOffsets], speed: dict[int, int] | None, archive: dict[int, int] | None
) -> list[PartitionLag]:
    """Each partition's end offset beside the layers' committed offsets. A layer that has committed
    but not yet seen a partition is at its start (0 offsets consumed)."""
    return [
        PartitionLag(
            p.partition,
            p.end,
            None if speed is None else speed.get(p.partition, 0),
            None if archive is None else archive.get(p.partition, 0),
        )
        for p in partitions
    ]


@dataclass(frozen=True)
class OperationsSnapshot:
    """What one refresh of the operations page shows; a part whose source failed is None, with why."""

    topics: list[TopicOverview] | None
    lag: list[PartitionLag] | None
    reasons: list[tuple[str, str, int]] | None
    """(layer, reason, dead letters), the most frequent first."""
    letters: list[DeadLetterRow] | None
    errors: dict[str, str]


def operations_snapshot(
    settings: Settings, documents: ProfileDocuments, reason: str | None, letters_shown: int
) -> OperationsSnapshot:
    """Read the topics, each layer's progress and the dead letters; each source on its own, so one that
    fails leaves the others' parts."""
    errors: dict[str, str] = {}

    def attempt(part: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except Exception as error:  # shown in place on the page
            logger.warning("operations part %s failed: %s", part, error)
            errors[part] = f"{type(error).__name__}: {error}"
            return None

    topics = attempt("topics", lambda: topic_overview(settings))
    lag = None
    if topics is not None:
        profiles = next(t for t in topics if t.name == settings.kafka.profiles_topic)
        lag = attempt("lag", lambda: lag_rows(profiles.partitions or [], *checkpoint_offsets(settings)))
    reasons = attempt("dead letters", documents.dead_letter_counts)
    letters = attempt("dead letters", lambda: documents.latest_dead_letters(letters_shown, reason))
    return OperationsSnapshot(topics, lag, reasons, letters, errors)
