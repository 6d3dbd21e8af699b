"""The producer loop: fetch a batch from a source, validate and minimize it, publish it, pace, repeat.

``split_batch`` is the pure part (records -> envelopes and dead letters); ``ProfileProducer`` wires a
source to a publisher, paces to a target rate, stops cleanly on request and reports progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from core.profile import (
    DeadLetter,
    ProfileEnvelope,
    Source,
    dead_letter,
    profile_envelope,
    profile_reason,
    record_uuid,
)
from core.settings import Settings
from core.validation import RecordLimits, size_reason
from ingestion.kafka_publisher import DeliveryCounts
from ingestion.sources import ProfileSource, SourceUnavailableError
from stores.outages import ride_out

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitBatch:
    """A fetched batch, split into what is published and what is dead-lettered."""

    envelopes: list[ProfileEnvelope]
    dead_letters: list[tuple[str | None, DeadLetter]]
    """Each with its key: the record's uuid when it has one."""


def split_batch(
    records: list[Any],
    source: Source,
    fetched_at: datetime,
    limits: RecordLimits,
    api_version: str | None = None,
) -> SplitBatch:
    """Validate each record with the rules both layers apply (``core.validation``): valid ones become
    envelopes, the others dead letters with the reason the layers would give.

    Both kinds lose their credentials here, before anything leaves the producer.
    """
    envelopes: list[ProfileEnvelope] = []
    dead_letters: list[tuple[str | None, DeadLetter]] = []
    for record in records:
        reason = profile_reason(record, source, fetched_at, limits, api_version)
        if reason is None:
            envelopes.append(profile_envelope(record, source, fetched_at, api_version))
        else:
            letter = dead_letter(record, reason, source, fetched_at, api_version)
            dead_letters.append((record_uuid(record), letter))
    return SplitBatch(envelopes, dead_letters)


def within_size_limit(
    envelopes: list[ProfileEnvelope], limits: RecordLimits
) -> tuple[list[tuple[ProfileEnvelope, bytes]], list[tuple[str | None, DeadLetter]]]:
    """Each envelope with its message value, and those over ``max_record_bytes`` as dead letters (their
    identifiers still sealed, when they are): the size the layers check is the published value's."""
    publishable: list[tuple[ProfileEnvelope, bytes]] = []
    too_large: list[tuple[str | None, DeadLetter]] = []
    for envelope in envelopes:
        value = envelope.value()
        reason = size_reason(len(value), limits)
        if reason is None:
            publishable.append((envelope, value))
        else:
            letter = DeadLetter(
                source=envelope.source,
                api_version=envelope.api_version,
                fetched_at=envelope.fetched_at,
                reason=reason,
                record=envelope.user,
                sealed=envelope.sealed,
            )
            too_large.append((envelope.uuid, letter))
    return publishable, too_large


def seal_envelopes(
    envelopes: list[ProfileEnvelope], data_keys: Mapping[str, bytes]
) -> tuple[list[ProfileEnvelope], list[str]]:
    """Each envelope sealed under its subject's data key, and the uuids that have none (erased subjects:
    nothing of theirs is published again)."""
    sealed: list[ProfileEnvelope] = []
    without_key: list[str] = []
    for envelope in envelopes:
        uuid = envelope.user["login"]["uuid"]
        if uuid in data_keys:
            sealed.append(envelope.sealed_with(data_keys[uuid]))
        else:
            without_key.append(uuid)
    return sealed, without_key


def seal_dead_letters(
    letters: list[tuple[str | None, DeadLetter]], data_keys: Mapping[str, bytes]
) -> tuple[list[tuple[str | None, DeadLetter]], list[str]]:
    """Dead letters whose record has a uuid sealed like a profile (so an erasure reaches the dead-letter
    topic too), those without a uuid as they are (nobody to erase); and the uuids without a key, whose
    letters are held back (erased subjects)."""
    kept: list[tuple[str | None, DeadLetter]] = []
    without_key: list[str] = []
    for key, letter in letters:
        if key is None:
            kept.append((key, letter))
        elif key in data_keys:
            kept.append((key, letter.sealed_with(data_keys[key])))
        else:
            without_key.append(key)
    return kept, without_key


class SubjectKeys(Protocol):
    """What the producer needs from the key store (``stores.subject_keys.SubjectKeyStore``)."""

    def keys_creating_missing(self, uuids: Sequence[str]) -> dict[str, bytes]: ...


@dataclass(frozen=True)
class PatientSubjectKeys:
    """Subject keys that wait out a key-store outage: a batch is sealed only once its keys are read, so
    nothing is published unsealed; while Cassandra does not answer, the producer backs off (up to the
    outage tolerance), then stops with one line and nothing of that batch published."""

    keys: SubjectKeys
    settings: Settings

    def keys_creating_missing(self, uuids: Sequence[str]) -> dict[str, bytes]:
        return ride_out(
            lambda: self.keys.keys_creating_missing(uuids),
            f"sealing a batch of {len(uuids)} profiles",
            "nothing of that batch was published",
            self.settings,
        )


class Publisher(Protocol):
    """What the producer needs from the Kafka side (``ingestion.kafka_publisher.ProfilePublisher``)."""

    def publish(self, envelope: ProfileEnvelope, value: bytes | None = None) -> None: ...
    def publish_dead_letter(self, letter: DeadLetter, key: str | None) -> None: ...
    def counts(self) -> DeliveryCounts: ...
    def flush(self) -> None: ...


class AutoSource:
    """The randomuser.me API while it answers; synthetic profiles from the first time it does not.

    The switch is announced once, loudly, with the reason, and is final for this run: flapping
    between sources would mix two populations in one stream.
    """

    def __init__(self, primary: ProfileSource, fallback: ProfileSource) -> None:
        self._primary = primary
        self._fallback = fallback
        self.name: Source = primary.name
        self.api_version = primary.api_version
        self.switched_because: str | None = None

    def next_batch(self, count: int, nationalities: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        if self.switched_because is None:
            try:
                return self._primary.next_batch(count, nationalities)
            except SourceUnavailableError as error:
                self.switched_because = str(error)
                self.name = self._fallback.name
                self.api_version = self._fallback.api_version
                logger.warning(
                    "%s is unreachable (%s): producing %s profiles from now on",
                    self._primary.name,
                    error,
                    self._fallback.name,
                )
        return self._fallback.next_batch(count, nationalities)


@dataclass(frozen=True)
class Progress:
    """Where a producer run stands."""

    fetched: int
    sent: int
    failed: int
    dead_lettered: int
    bytes_sent: int
    elapsed_s: float
    source: Source
    refused_erased: int = 0
    """Records (profiles, dead letters) of erased subjects the source served again: not published."""

    @property
    def profiles_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


class ProfileProducer:
    """Moves profiles from a source to Kafka in batches, at a target rate or as fast as possible."""

    def __init__(
        self,
        source: ProfileSource,
        publisher: Publisher,
        batch_size: int,
        nationalities: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        subject_keys: SubjectKeys | None = None,
        limits: RecordLimits | None = None,
    ) -> None:
        """With ``subject_keys``, direct identifiers are sealed per subject before publishing (crypto-
        shredding); without, envelopes are published in clear (version 1)."""
        self.source = source
        self.publisher = publisher
        self.limits = limits or RecordLimits()
        self.subject_keys = subject_keys
        self._refused_erased = 0
        self.batch_size = batch_size
        self.nationalities = nationalities
        self.stop_requested = threading.Event()
        self._clock = clock
        self._fetched = 0
        self._started_at = clock()

    def progress(self) -> Progress:
        counts = self.publisher.counts()
        return Progress(
            fetched=self._fetched,
            sent=counts.sent,
            failed=counts.failed,
            dead_lettered=counts.dead_lettered,
            bytes_sent=counts.bytes_sent,
            elapsed_s=self._clock() - self._started_at,
            source=self.source.name,
            refused_erased=self._refused_erased,
        )

    def run(
        self,
        count: int | None = None,
        rate_per_s: float | None = None,
        on_batch: Callable[[Progress], None] | None = None,
    ) -> Progress:
        """Produce ``count`` profiles (forever when None), at most ``rate_per_s`` per second.

        Returns after ``stop_requested`` is set (e.g. by SIGINT) at the next batch boundary; either way
        every queued record is flushed before it returns, so nothing buffered is lost.
        """
        self._started_at = self._clock()
        try:
            while not self.stop_requested.is_set() and (count is None or self._fetched < count):
                wanted = self.batch_size if count is None else min(self.batch_size, count - self._fetched)
                if rate_per_s:
                    wanted = max(1, min(wanted, int(rate_per_s)))
                self._produce_batch(wanted)
                if on_batch:
                    on_batch(self.progress())
                if rate_per_s:
                    self._pace(rate_per_s)
        finally:
            self.publisher.flush()
        return self.progress()

    def _produce_batch(self, wanted: int) -> None:
        records = self.source.next_batch(wanted, self.nationalities)
        fetched_at = datetime.now(UTC)
        split = split_batch(records, self.source.name, fetched_at, self.limits, self.source.api_version)
        envelopes, dead_letters = split.envelopes, split.dead_letters
        if self.subject_keys is not None and records:
            uuids = [envelope.user["login"]["uuid"] for envelope in envelopes]
            uuids += [key for key, _ in dead_letters if key is not None]
            data_keys = self.subject_keys.keys_creating_missing(uuids)
            envelopes, erased = seal_envelopes(envelopes, data_keys)
            dead_letters, erased_letters = seal_dead_letters(dead_letters, data_keys)
            if erased or erased_letters:
                logger.info("not publishing %d records of erased subjects", len(erased) + len(erased_letters))
                self._refused_erased += len(erased) + len(erased_letters)
        publishable, too_large = within_size_limit(envelopes, self.limits)
        for envelope, value in publishable:
            self.publisher.publish(envelope, value)
        for key, letter in dead_letters + too_large:
            logger.warning("dead-lettered a %s record (uuid %s): %s", letter.source, key, letter.reason)
            self.publisher.publish_dead_letter(letter, key)
        self._fetched += len(records)

    def _pace(self, rate_per_s: float) -> None:
        """Sleep until the profiles fetched so far fit the target rate (interruptible by a stop)."""
        due_at = self._started_at + self._fetched / rate_per_s
        delay = due_at - self._clock()
        if delay > 0:
            self.stop_requested.wait(delay)
