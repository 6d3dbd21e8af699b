"""Re-drive: dead letters of the speed and batch layers validated again with today's code and settings,
and those that now pass published to the profiles topic once more.

A re-driven record is the dead letter's own Kafka value (sealed identifiers stay sealed), published
under its uuid with two headers that say where it came from (``userpulse-source: redrive`` and
``userpulse-redrive-of: topic:partition:offset``). Each layer then reads it like any profile.

Counted once, however often the command runs: a dead letter is marked with where its copy was
published and is not selected again; and if the command dies between publishing and marking, the copy
published twice has the same uuid and version, which both layers count once (a duplicate). A dead letter
of an erased subject is never re-driven (and is deleted, as its erasure did). Those that still fail keep
their (new) reason.

``redrive_plan`` is the pure part (letters and verdicts -> what to do with each); ``redrive_dead_letters``
does the I/O through the stores' own modules (MongoDB's dead letters, the subject-key store, Kafka).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from core.settings import Settings
from core.stores import mongo_client, mongo_database
from core.subject_keys import subject_key_store
from core.validation import RecordLimits, record_verdict
from ingestion.kafka_publisher import ProfilePublisher
from speed_layer.stores import MongoRawStore, mongo_raw_store

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


@dataclass
class RedriveReport:
    """What a re-drive did (or, in a dry run, would do)."""

    reason: str
    dry_run: bool
    selected: int = 0
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


def redrive_dead_letters(
    settings: Settings,
    reason: str,
    since: datetime | None = None,
    dry_run: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RedriveReport:
    """Validate again the dead letters of ``reason`` (stored since ``since``) not re-driven yet; publish
    those that pass to the profiles topic and mark them; give the others today's reason."""
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
    finally:
        client.close()
    logger.info(
        "re-drive of %r%s: %d selected, %d re-driven, %d still refused, %d of erased subjects",
        reason, " (dry run)" if dry_run else "", report.selected, report.redriven,
        sum(report.still_refused.values()), report.erased,
    )  # fmt: skip
    return report


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
    sent = {
        step.letter_id: publisher.publish_record(
            step.key or "", values[step.letter_id], redrive_headers(step.letter_id)
        )
        for step in steps
        if step.outcome == "redriven"
    }
    publisher.flush()
    for letter_id, delivery in sent.items():
        metadata = delivery.get(timeout=0)  # flushed: acknowledged, or raises the broker's error
        store.mark_redriven(letter_id, now, f"{metadata.topic}:{metadata.partition}:{metadata.offset}")
    for step in steps:
        if step.outcome == "still refused" and step.reason is not None:
            store.set_dead_letter_reason(step.letter_id, step.reason, now)
    # An erasure deletes a subject's dead letters; one left (stored again by a replay) goes now.
    store.delete_dead_letters([step.letter_id for step in steps if step.outcome == "erased"])
