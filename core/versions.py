"""Which copy of a profile counts, and where: the rule of both layers and serving (docs/architecture.md).

A profile (a uuid) may arrive many times: re-fetched with changed attributes, published again unchanged,
or late (a copy fetched before one already seen). The rule:

    a uuid is counted once, in the event-time window of its FIRST copy, with the attributes of its
    LATEST copy, and only if that latest copy is at least the minimum age;

where copies are ordered by ``(fetched_at, partition, offset)``: event time first, then the position in
Kafka (all copies of a uuid are in one partition, since the record key is the uuid). The order depends
on the copies only, not on when or in which batches they were seen, so the speed layer (incrementally,
batch by batch) and the batch layer (from the whole archive) reach the same state.

A copy that changes the state changes the counts: the speed layer writes the difference between the old
and the new contribution (-1 profile where it was counted, +1 where it now is) as partial aggregates.
Every partial carries the ages it adds and removes (``AgeCounts``), so that the minimum and maximum age of
a value stay exact when a profile leaves it.

Pure Python: the speed layer runs it per Kafka partition of a micro-batch; tests use it as the recount.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from core.aggregates import DIMENSIONS, window_floor

CopyKey = tuple[datetime, int, int]
"""``(fetched_at, partition, offset)``: the order of a uuid's copies."""

ATTRIBUTES: tuple[str, ...] = (
    "source", "gender", "country", "nationality", "email_domain", "age", "age_band", "registration_date",
    "email_pseudonym", "phone_pseudonym", "cell_pseudonym", "address_pseudonym",
)  # fmt: skip
"""The transformed profile's fields a state keeps of its latest copy (``core.transformations``)."""


@dataclass(frozen=True)
class Sighting:
    """Where and when one copy was seen."""

    fetched_at: datetime
    partition: int
    offset: int

    @property
    def key(self) -> CopyKey:
        return (self.fetched_at, self.partition, self.offset)


@dataclass(frozen=True)
class ProfileState:
    """What the layers know of one uuid after all its copies so far."""

    first: Sighting
    latest: Sighting
    attributes: Mapping[str, Any]
    """The latest copy's ``ATTRIBUTES``; empty when it is under the minimum age (nothing of a minor is
    kept)."""
    counted: bool
    """Whether the latest copy is old enough."""

    def to_json(self) -> str:
        """The state as text (how the speed layer keeps the state a batch started from)."""
        document = asdict(self)
        return json.dumps(document, default=_json_default, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ProfileState:
        document = json.loads(text)
        attributes = dict(document["attributes"])
        if attributes.get("registration_date"):
            attributes["registration_date"] = datetime.fromisoformat(attributes["registration_date"]).date()
        return cls(
            first=_sighting(document["first"]),
            latest=_sighting(document["latest"]),
            attributes=attributes,
            counted=document["counted"],
        )


def _json_default(value: Any) -> str:
    return value.isoformat()


def _sighting(document: Mapping[str, Any]) -> Sighting:
    return Sighting(datetime.fromisoformat(document["fetched_at"]), document["partition"], document["offset"])


@dataclass(frozen=True)
class Contribution:
    """What a counted profile adds to the aggregates: one profile of ``age`` in ``window_start``, with
    one value per dimension."""

    window_start: datetime
    values: Mapping[str, str]
    age: int


@dataclass(frozen=True)
class ProfileCopy:
    """One valid copy of a profile, transformed (``core.transformations.transform_profiles``)."""

    uuid: str
    sighting: Sighting
    attributes: Mapping[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ProfileCopy:
        """A copy from a transformed profile row (``uuid``, ``fetched_at``, ``partition``, ``offset`` and
        the ``ATTRIBUTES``)."""
        fetched_at = row["fetched_at"]
        if fetched_at.tzinfo is None:
            fetched_at = fetched_at.replace(tzinfo=UTC)
        return cls(
            row["uuid"],
            Sighting(fetched_at, row["partition"], row["offset"]),
            {name: row[name] for name in ATTRIBUTES},
        )


def fold(state: ProfileState | None, copies: Iterable[ProfileCopy], minimum_age: int) -> ProfileState | None:
    """The state after ``copies`` (of one uuid) are added to ``state``; in any order, the same result."""
    for copy in copies:
        if state is None:
            state = _state_of(copy, copy.sighting, minimum_age)
            continue
        first = min(state.first, copy.sighting, key=lambda sighting: sighting.key)
        if copy.sighting.key > state.latest.key:
            state = _state_of(copy, first, minimum_age)
        elif first != state.first:
            state = replace(state, first=first)
    return state


def _state_of(latest: ProfileCopy, first: Sighting, minimum_age: int) -> ProfileState:
    age = latest.attributes.get("age")
    counted = age is not None and age >= minimum_age
    return ProfileState(first, latest.sighting, dict(latest.attributes) if counted else {}, counted)


def contribution(state: ProfileState | None, window_seconds: int) -> Contribution | None:
    """What a state adds to the aggregates (None when it is not counted)."""
    if state is None or not state.counted:
        return None
    values = {
        name: str(state.attributes[name]) for name in DIMENSIONS if state.attributes.get(name) is not None
    }
    return Contribution(window_floor(state.first.fetched_at, window_seconds), values, state.attributes["age"])


AgeCounts = Counter
"""Profiles per age (negative for ages removed): what a partial aggregate carries."""

PartialKey = tuple[str, datetime, str]
"""``(dimension, window_start, value)``."""


def add_contribution(
    partials: dict[PartialKey, Counter[int]], change: Contribution | None, sign: int
) -> None:
    """Add (``sign`` 1) or remove (-1) one contribution to per-(dimension, window, value) age counts."""
    if change is None:
        return
    for dimension, value in change.values.items():
        partials.setdefault((dimension, change.window_start, value), Counter())[change.age] += sign


def partial_changes(
    changes: Iterable[tuple[Contribution | None, Contribution | None]],
) -> dict[PartialKey, Counter[int]]:
    """The net age counts per (dimension, window, value) of a set of (before, after) contributions; keys
    whose changes cancel out are left out."""
    partials: dict[PartialKey, Counter[int]] = {}
    for before, after in changes:
        if before == after:
            continue
        add_contribution(partials, before, -1)
        add_contribution(partials, after, 1)
    return {key: counts for key, counts in partials.items() if any(counts.values())}


def recount(
    copies: Iterable[ProfileCopy], minimum_age: int, window_seconds: int
) -> dict[PartialKey, Counter[int]]:
    """The age counts per (dimension, window, value) of every uuid's final state: the rule applied to all
    of ``copies`` at once (what the merged view must equal)."""
    by_uuid: dict[str, list[ProfileCopy]] = {}
    for copy in copies:
        by_uuid.setdefault(copy.uuid, []).append(copy)
    totals: dict[PartialKey, Counter[int]] = {}
    for uuid_copies in by_uuid.values():
        add_contribution(totals, contribution(fold(None, uuid_copies, minimum_age), window_seconds), 1)
    return totals


@dataclass(frozen=True)
class AgeFigures:
    """Count, age sum, minimum and maximum of a set of age counts."""

    profiles: int
    age_sum: int
    age_min: int | None
    age_max: int | None

    @classmethod
    def of(cls, counts: Mapping[int, int]) -> AgeFigures:
        present = [age for age, count in counts.items() if count > 0]
        return cls(
            sum(counts.values()),
            sum(age * count for age, count in counts.items()),
            min(present, default=None),
            max(present, default=None),
        )
