"""Re-drive: dead letters validated again with today's code and settings, and those that now pass
published to the profiles topic once more. Dead letters come from two places: the speed and batch
layers' (in MongoDB, each with the Kafka value it was refused for) and the producer's (in its own topic,
each a ``DeadLetter`` message with the API's record, its identifiers sealed).

A re-driven record of the layers is the dead letter's own Kafka value (sealed identifiers stay sealed);
one of the producer is the envelope the producer would publish today, sealed under the subject's key.
Both are published under their uuid with two headers that say where they came from
(``userpulse-source: redrive`` and ``userpulse-redrive-of: topic:partition:offset``). Each layer then
reads them like any profile.

Counted once, however often the command runs: a dead letter is marked with where its copy was
published (a producer's letter, which its topic cannot hold, by a document of the dead-letter store
with its coordinates and the mark) and is not selected again; and if the command dies between
publishing and marking, the copy published twice has the same uuid and version, which both layers
count once (a duplicate). A dead letter of an erased subject is never re-driven (and a layer's is
deleted, as its erasure did; a producer's stays sealed under a key that is gone). Those of the layers
that still fail keep their (new) reason.

``redrive_plan`` and ``producer_redrive_plan`` are the pure part (letters and verdicts -> what to do
with each); ``redrive_dead_letters`` does the I/O through the stores' own modules (MongoDB's dead
letters, the subject-key store, Kafka).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from core.profile import DeadLetter, profile_envelope, profile_reason, record_uuid
from core.sealing import unseal_identifiers
from core.settings import Settings
from core.validation import RecordLimits, record_verdict, size_reason
from ingestion.kafka_publisher import ProfilePublisher
from stores.connections import mongo_client, mongo_database
from stores.documents import MongoRawStore, mongo_raw_store
from stores.subject_keys import SubjectKeyStore, subject_key_store

logger = logging.getLogger(__name__)

REDRIVE_SOURCE = "redrive"
"""The ``userpulse-source`` header of a re-driven record."""
CHUNK = 500
"""Dead letters validated, published and marked at a time."""

Outcome = Literal["redriven", "still refused", "erased"]


@dataclass(frozen=True)
class RedriveStep:
    """What re-drive does with one dead letter."""

    letter_id: str
    """The dead letter's Kafka coordinates (``topic:partition:offset``)."""
    key: str | None
    outcome: Outcome
    reason: str | None = None
    """Today's reason, when it still fails."""
    value: bytes | None = None
    """What is published when it is not the dead letter's own value (a producer's letter becomes the
    envelope the producer would publish today)."""


@dataclass
class RedriveReport:
    """What a re-drive did (or, in a dry run, would do)."""

    reason: str
    dry_run: bool
    selected: int = 0
    from_producer: int = 0
    """Of ``selected``, those read from the producer's dead-letter topic."""
    redriven: int = 0
    erased: int = 0
    still_refused: Counter[str] = field(default_factory=Counter)
    """Dead letters that still fail, by today's reason."""

    def add(self, steps: Sequence[RedriveStep]) -> None:
        self.selected += len(steps)
        for step in steps:
            if step.outcome == "redriven":
                self.redriven += 1
            elif step.outcome == "erased":
                self.erased += 1
            else:
                self.still_refused[step.reason or ""] += 1


def redrive_plan(
    letters: Sequence[Mapping[str, Any]],
    data_keys: Mapping[str, bytes],
    erased: set[str],
    now: datetime,
    limits: RecordLimits,
) -> list[RedriveStep]:
    """The outcome of each dead letter validated again as if written ``now`` (``data_keys``: the
    subjects' keys, to open sealed identifiers; ``erased``: the uuids whose subject was erased)."""
    steps = []
    for letter in letters:
        key = letter.get("key")
        if key is not None and key in erased:
            steps.append(RedriveStep(letter["_id"], key, "erased"))
            continue
        verdict = record_verdict(letter.get("raw_value"), key, now, data_keys.get, limits)
        if verdict.erased:  # sealed, and its subject's key is gone
            steps.append(RedriveStep(letter["_id"], key, "erased"))
        elif verdict.reason is not None:
            steps.append(RedriveStep(letter["_id"], key, "still refused", verdict.reason))
        else:
            steps.append(RedriveStep(letter["_id"], key, "redriven"))
    return steps


@dataclass(frozen=True)
class ProducerLetter:
    """A record of the producer's dead-letter topic."""

    letter_id: str
    """Its Kafka coordinates (``topic:partition:offset``)."""
    key: str | None
    letter: DeadLetter


UNSEALABLE = "sealed identifiers do not open with the subject's key"


def producer_redrive_plan(
    letters: Sequence[ProducerLetter],
    data_keys: Mapping[str, bytes],
    erased: set[str],
    now: datetime,
    limits: RecordLimits,
) -> list[RedriveStep]:
    """The outcome of each of the producer's dead letters validated again as if published ``now``; one
    that passes carries the envelope to publish, sealed under its subject's key."""
    steps = []
    for item in letters:
        key, letter = item.key, item.letter
        if (key is not None and key in erased) or (letter.sealed is not None and key not in data_keys):
            steps.append(RedriveStep(item.letter_id, key, "erased"))
            continue
        record = letter.record
        if letter.sealed is not None and key is not None:
            try:
                record = unseal_identifiers(record, letter.sealed, data_keys[key])
            except (InvalidTag, KeyError, TypeError):
                steps.append(RedriveStep(item.letter_id, key, "still refused", UNSEALABLE))
                continue
        reason = profile_reason(record, letter.source, letter.fetched_at, limits, letter.api_version, now)
        if reason is not None:
            steps.append(RedriveStep(item.letter_id, key, "still refused", reason))
            continue
        uuid = str(record_uuid(record))  # a valid record has one
        if uuid not in data_keys:  # its subject's key is gone
            steps.append(RedriveStep(item.letter_id, uuid, "erased"))
            continue
        envelope = profile_envelope(record, letter.source, letter.fetched_at, letter.api_version)
        value = envelope.sealed_with(data_keys[uuid]).value()
        too_large = size_reason(len(value), limits)
        if too_large is not None:
            steps.append(RedriveStep(item.letter_id, uuid, "still refused", too_large))
        else:
            steps.append(RedriveStep(item.letter_id, uuid, "redriven", value=value))
    return steps


def redrive_headers(letter_id: str) -> list[tuple[str, bytes]]:
    """The Kafka headers of a re-driven record: where it comes from."""
    return [("userpulse-source", REDRIVE_SOURCE.encode()), ("userpulse-redrive-of", letter_id.encode())]


def _chunks(letters: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for letter in letters:
        chunk.append(letter)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read_producer_dead_letters(
    settings: Settings, reason: str, since: datetime | None = None, idle_s: float = 30.0
) -> list[ProducerLetter]:
    """The producer's dead letters of ``reason`` (appended since ``since``), read from its topic up to
    the end it has now. A record that is no producer's dead letter is skipped (nothing to re-drive);
    a topic that stops answering for ``idle_s`` raises ``TimeoutError``."""
    topic = settings.kafka.dead_letter_topic
    consumer = KafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        end = consumer.end_offsets(partitions)
        if since is None:
            consumer.seek_to_beginning(*partitions)
        else:
            starts = consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
            for tp in partitions:
                consumer.seek(tp, end[tp] if starts[tp] is None else starts[tp].offset)
        letters: list[ProducerLetter] = []
        waiting = {tp for tp in partitions if consumer.position(tp) < end[tp]}
        idle_since = time.monotonic()
        while waiting:
            batches = consumer.poll(timeout_ms=500)
            if batches:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_s:
                unread = len(waiting)
                raise TimeoutError(f"{topic}: no record within {idle_s:.0f} s, {unread} partitions unread")
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= end[tp]:
                        continue
                    try:
                        letter = DeadLetter.model_validate_json(record.value)
                    except ValidationError:
                        continue
                    if letter.reason == reason:
                        key = record.key.decode() if record.key else None
                        letters.append(ProducerLetter(f"{topic}:{tp.partition}:{record.offset}", key, letter))
            waiting = {tp for tp in waiting if consumer.position(tp) < end[tp]}
        return letters
    finally:
        consumer.close()


def redrive_dead_letters(
    settings: Settings,
    reason: str,
    since: datetime | None = None,
    dry_run: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RedriveReport:
    """Validate again the dead letters of ``reason`` (stored, or appended to the producer's topic, since
    ``since``) not re-driven yet; publish those that pass to the profiles topic and mark them; give the
    layers' others today's reason."""
    report = RedriveReport(reason, dry_run)
    client = mongo_client(settings)
    try:
        store = mongo_raw_store(mongo_database(client, settings), settings)
        kafka = settings.kafka
        with (
            subject_key_store(settings, enabled=True) as keys,
            ProfilePublisher(settings, kafka.profiles_topic, kafka.dead_letter_topic) as publisher,
        ):
            assert keys is not None
            # Selected up front: the letters this run changes must not move under its own cursor.
            selected = list(store.dead_letters_to_redrive(reason, since))
            for letters in _chunks(iter(selected), CHUNK):
                uuids = sorted({letter["key"] for letter in letters if isinstance(letter.get("key"), str)})
                steps = redrive_plan(
                    letters, keys.keys_for(uuids), keys.erased(uuids), clock(), settings.profiles.limits
                )
                report.add(steps)
                if not dry_run:
                    _apply(store, publisher, letters, steps, clock())
            _redrive_producer_letters(settings, store, keys, publisher, report, since, clock)
    finally:
        client.close()
    logger.info(
        "re-drive of %r%s: %d selected, %d re-driven, %d still refused, %d of erased subjects",
        reason, " (dry run)" if dry_run else "", report.selected, report.redriven,
        sum(report.still_refused.values()), report.erased,
    )  # fmt: skip
    return report


def _redrive_producer_letters(
    settings: Settings,
    store: MongoRawStore,
    keys: SubjectKeyStore,
    publisher: ProfilePublisher,
    report: RedriveReport,
    since: datetime | None,
    clock: Callable[[], datetime],
) -> None:
    """The producer's dead letters of the report's reason not re-driven yet: validated again, those that
    pass published and marked."""
    letters = read_producer_dead_letters(settings, report.reason, since)
    done = store.redriven_among([item.letter_id for item in letters])
    pending = [item for item in letters if item.letter_id not in done]
    report.from_producer = len(pending)
    for start in range(0, len(pending), CHUNK):
        chunk = pending[start : start + CHUNK]
        uuids = sorted({item.key for item in chunk if item.key is not None})
        steps = producer_redrive_plan(
            chunk, keys.keys_for(uuids), keys.erased(uuids), clock(), settings.profiles.limits
        )
        report.add(steps)
        if report.dry_run:
            continue
        now = clock()
        for step, published_as in _publish(publisher, steps, lambda step: step.value or b""):
            store.mark_producer_redriven(step.letter_id, step.key, report.reason, now, published_as)


def _publish(
    publisher: ProfilePublisher, steps: Sequence[RedriveStep], value_of: Callable[[RedriveStep], bytes]
) -> list[tuple[RedriveStep, str]]:
    """Publish the value of each step to re-drive; each with where the broker stored it
    (``topic:partition:offset``), once it has acknowledged it (or the broker's error is raised)."""
    sent = [
        (step, publisher.publish_record(step.key or "", value_of(step), redrive_headers(step.letter_id)))
        for step in steps
        if step.outcome == "redriven"
    ]
    publisher.flush()
    published = []
    for step, delivery in sent:
        metadata = delivery.get(timeout=0)  # flushed: acknowledged, or raises the broker's error
        published.append((step, f"{metadata.topic}:{metadata.partition}:{metadata.offset}"))
    return published


def _apply(
    store: MongoRawStore,
    publisher: ProfilePublisher,
    letters: Sequence[Mapping[str, Any]],
    steps: Sequence[RedriveStep],
    now: datetime,
) -> None:
    """Publish the letters that pass, then mark them with where their copy went (only once the broker
    has acknowledged it); record today's reason on those that still fail."""
    values = {letter["_id"]: letter["raw_value"] for letter in letters}
    for step, published_as in _publish(publisher, steps, lambda step: values[step.letter_id]):
        store.mark_redriven(step.letter_id, now, published_as)
    for step in steps:
        if step.outcome == "still refused" and step.reason is not None:
            store.set_dead_letter_reason(step.letter_id, step.reason, now)
    # An erasure deletes a subject's dead letters; one left (stored again by a replay) goes now.
    store.delete_dead_letters([step.letter_id for step in steps if step.outcome == "erased"])
