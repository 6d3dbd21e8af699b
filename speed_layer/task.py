"""One task of a micro-batch: the records of one Kafka partition applied to the stores, idempotently.

All copies of a uuid are in one Kafka partition (the record key is the uuid), so a task owns the state of
every uuid it sees: no other task of the batch reads or writes them. For each uuid the task reads its
stored state, folds in the batch's copies (``core.versions``), and writes:

- the new state, with the batch id and the state it started from (a replay of the batch after a crash
  starts from that same state, so it computes and writes the same rows again);
- the difference between the old and the new contribution as partial aggregates keyed by (batch id,
  task): a replay overwrites them;
- the raw document of the latest copy (MongoDB), and the dead letters (keyed by Kafka coordinates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.versions import Contribution, ProfileCopy, ProfileState, contribution, fold, partial_changes
from stores.documents import MongoRawStore
from stores.speed_views import CassandraSpeedStore, partial_row, state_row


@dataclass
class TaskOutcome:
    """What one task did: small figures the driver sums into the batch's metrics."""

    partition: int
    input_rows: int = 0
    end_offset: int = 0
    """The offset after the last record of the task (its Kafka partition's position after the batch)."""
    new_profiles: int = 0
    """uuids seen for the first time and counted."""
    later_copies: int = 0
    """Usable copies that were not the first copy of a uuid seen for the first time (re-fetches,
    duplicates, late copies)."""
    dead_lettered: int = 0
    under_age: int = 0
    """uuids seen for the first time whose latest copy is under the minimum age (not counted)."""
    erased: int = 0
    max_event_time: datetime | None = None
    windows: set[datetime] = field(default_factory=set)
    """The windows of the partials written."""

    def add(self, other: TaskOutcome) -> None:
        """Sum another task's figures into this one (the batch's totals)."""
        self.input_rows += other.input_rows
        self.new_profiles += other.new_profiles
        self.later_copies += other.later_copies
        self.dead_lettered += other.dead_lettered
        self.under_age += other.under_age
        self.erased += other.erased
        self.windows |= other.windows
        if other.max_event_time is not None and (
            self.max_event_time is None or other.max_event_time > self.max_event_time
        ):
            self.max_event_time = other.max_event_time


@dataclass(frozen=True)
class TaskContext:
    """What a task needs besides its records."""

    batch_id: int
    processed_at: datetime
    job_name: str
    minimum_age: int
    window_seconds: int
    cassandra: CassandraSpeedStore
    mongo: MongoRawStore
    document_of: Callable[[Mapping[str, Any]], dict[str, Any]]
    """The raw MongoDB document of a usable record."""
    dead_letter_of: Callable[[Mapping[str, Any]], dict[str, Any]]
    """The dead-letter document of a bad record."""


@dataclass(frozen=True)
class _Change:
    uuid: str
    before: ProfileState | None
    after: ProfileState | None
    stored: ProfileState | None
    latest_row: Mapping[str, Any] | None
    """The record of the new latest copy, when the batch brought it."""


def process_records(
    partition: int, records: Sequence[Mapping[str, Any]], context: TaskContext
) -> TaskOutcome:
    """Apply one Kafka partition's records of a batch (parsed and transformed rows) to the stores."""
    outcome = TaskOutcome(partition, input_rows=len(records))
    if not records:
        return outcome
    outcome.end_offset = max(record["offset"] for record in records) + 1
    letters = [record for record in records if record["dead_letter_reason"] is not None]
    usable = [record for record in records if record["usable"]]
    outcome.dead_lettered = len(letters)
    outcome.erased = len(records) - len(letters) - len(usable)
    outcome.max_event_time = max((record["fetched_at"] for record in usable), default=None)
    if letters:
        context.mongo.insert_dead_letters(
            [context.dead_letter_of(record) for record in letters], context.processed_at
        )
    changes = _changes(usable, context)
    _write(changes, context, outcome)
    # Counted against the state before the batch, not the stored one: a batch retried after a failure
    # or replayed after a crash finds its own earlier writes stored, and must report what it reported.
    for change in changes:
        if change.before is None and change.after is not None:
            if change.after.counted:
                outcome.new_profiles += 1
            else:
                outcome.under_age += 1
    outcome.later_copies = len(usable) - sum(1 for change in changes if change.before is None)
    return outcome


def _changes(usable: Sequence[Mapping[str, Any]], context: TaskContext) -> list[_Change]:
    """Each uuid's state before the batch (the one a replay starts from), after it, and as stored."""
    by_uuid: dict[str, list[Mapping[str, Any]]] = {}
    for record in usable:
        by_uuid.setdefault(record["uuid"], []).append(record)
    stored = context.cassandra.states(list(by_uuid))
    changes = []
    for uuid, uuid_records in by_uuid.items():
        stored_state = stored.get(uuid)
        before = stored_state.base_for(context.batch_id) if stored_state is not None else None
        copies = [ProfileCopy.from_row(record) for record in uuid_records]
        after = fold(before, copies, context.minimum_age)
        latest_row = next(
            (
                record
                for record, copy in zip(uuid_records, copies, strict=True)
                if after is not None and copy.sighting == after.latest
            ),
            None,
        )
        changes.append(_Change(uuid, before, after, stored_state.state if stored_state else None, latest_row))
    return changes


def _write(changes: Iterable[_Change], context: TaskContext, outcome: TaskOutcome) -> None:
    changes = list(changes)
    contributions: list[tuple[Contribution | None, Contribution | None]] = [
        (
            contribution(change.before, context.window_seconds),
            contribution(change.after, context.window_seconds),
        )
        for change in changes
    ]
    partials = partial_changes(contributions)
    rows = [
        partial_row(key, ages, context.batch_id, outcome.partition, context.window_seconds)
        for key, ages in sorted(partials.items())
    ]
    context.cassandra.write_partials(rows)
    outcome.windows = {window for _, window, _ in partials}
    # States that differ from what is stored (a replay finds most already written).
    context.cassandra.write_states(
        [
            state_row(change.uuid, change.after, context.batch_id, change.before)
            for change in changes
            if change.after is not None and change.after != change.stored
        ]
    )
    new_documents, replaced_documents, gone = [], [], []
    for change in changes:
        if change.after is None:
            continue
        if not change.after.counted:
            if change.stored is not None and change.stored.counted:
                gone.append(change.uuid)
        elif change.latest_row is not None:
            document = context.document_of(change.latest_row)
            (new_documents if change.stored is None else replaced_documents).append(document)
    context.mongo.insert_profiles(new_documents)
    context.mongo.replace_profiles(replaced_documents)
    context.mongo.delete_profiles(gone)
