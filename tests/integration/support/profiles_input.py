"""A known input for the layers' integration tests, and an independent recount in plain Python.

Recorded real profiles, synthetic ones, duplicates (re-fetched later), under-age profiles and a dozen
kinds of bad records, produced to a topic in a known order.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from kafka import KafkaProducer

from core.profile import strip_credentials
from core.settings import Settings
from ingestion.synthetic import SyntheticSource
from tests.randomuser_server import fixture_users

RECORDED = "codeacademyuz__randomuser_me_project__randomusers.json"
EVENT_BASE = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
DIMENSIONS = ("country", "gender", "nationality", "email_domain", "age_band")


def exact_age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def age_when_fetched(envelope: dict[str, Any]) -> int:
    """The profile's age on the UTC date it was fetched (the date the layers take ages at)."""
    born = datetime.fromisoformat(envelope["user"]["dob"]["date"]).date()
    return exact_age(born, datetime.fromisoformat(envelope["fetched_at"]).astimezone(UTC).date())


def band(age: int) -> str:
    for upper, name in (
        (17, "<18"),
        (24, "18-24"),
        (34, "25-34"),
        (44, "35-44"),
        (54, "45-54"),
        (64, "55-64"),
    ):
        if age <= upper:
            return name
    return "65+"


def dimension_values(user: dict[str, Any], age: int) -> dict[str, str]:
    """The value of each aggregate dimension for a user, computed independently of ``core``."""
    return {
        "country": str(user["location"]["country"]).strip(),
        "gender": user["gender"],
        "nationality": user["nat"],
        "email_domain": user["email"].strip().rsplit("@", 1)[1].lower(),
        "age_band": band(age),
    }


def add(totals: dict[Any, list[int]], key: Any, age: int) -> None:
    """Count one profile of ``age`` into ``totals[key]`` = [profiles, age sum, age min, age max]."""
    total = totals.setdefault(key, [0, 0, age, age])
    total[0] += 1
    total[1] += age
    total[2] = min(total[2], age)
    total[3] = max(total[3], age)


@dataclass(frozen=True)
class Copy:
    """One valid record of a profile as it is on the topic: its envelope and Kafka coordinates."""

    envelope: dict[str, Any]
    partition: int
    offset: int

    @property
    def uuid(self) -> str:
        return self.envelope["user"]["login"]["uuid"]

    @property
    def order(self) -> tuple[datetime, int, int]:
        return (datetime.fromisoformat(self.envelope["fetched_at"]), self.partition, self.offset)


AgeCounts = dict[tuple[str, datetime, str], Counter[int]]
"""(dimension, window start, value) -> profiles per age."""


def first_and_latest(copies: list[Copy]) -> dict[str, tuple[Copy, Copy]]:
    """Each uuid's first and latest copy: by fetch time, then Kafka coordinates."""
    by_uuid: dict[str, list[Copy]] = {}
    for item in copies:
        by_uuid.setdefault(item.uuid, []).append(item)
    return {
        uuid: (min(items, key=lambda c: c.order), max(items, key=lambda c: c.order))
        for uuid, items in by_uuid.items()
    }


def counted(copies: list[Copy], minimum_age: int = 18) -> dict[str, tuple[Copy, Copy]]:
    """The uuids the rule counts (latest copy old enough), with their first and latest copy."""
    return {
        uuid: pair
        for uuid, pair in first_and_latest(copies).items()
        if age_when_fetched(pair[1].envelope) >= minimum_age
    }


def recount(copies: list[Copy], minimum_age: int = 18) -> AgeCounts:
    """The rule, counted independently of ``core``: each uuid once, in the window of its first copy,
    with the values and age of its latest copy, if that copy is old enough."""
    totals: AgeCounts = {}
    for first, latest in counted(copies, minimum_age).values():
        age = age_when_fetched(latest.envelope)
        window = datetime.fromisoformat(first.envelope["fetched_at"]).replace(second=0, microsecond=0)
        for dimension, value in dimension_values(latest.envelope["user"], age).items():
            totals.setdefault((dimension, window.astimezone(UTC), value), Counter())[age] += 1
    return totals


def all_time(counts: AgeCounts) -> dict[tuple[str, str], Counter[int]]:
    """Per-window age counts summed over the windows."""
    totals: dict[tuple[str, str], Counter[int]] = {}
    for (dimension, _, value), ages in counts.items():
        totals.setdefault((dimension, value), Counter()).update(ages)
    return totals


@dataclass
class ProducedInput:
    """What was produced, in order, with the coordinates Kafka gave each record."""

    copies: list[Copy] = field(default_factory=list)
    """Every good record, in production order."""
    bad: dict[tuple[int, int], str] = field(default_factory=dict)
    """(partition, offset) -> what is wrong with the record."""

    @property
    def first_copies(self) -> dict[str, dict[str, Any]]:
        """uuid -> envelope of its first copy (in production order)."""
        first: dict[str, dict[str, Any]] = {}
        for item in self.copies:
            first.setdefault(item.uuid, item.envelope)
        return first

    @property
    def duplicates(self) -> int:
        """Copies of a uuid produced after its first one."""
        return len(self.copies) - len(self.first_copies)


def envelope(user: dict[str, Any], fetched_at: datetime, source: str = "randomuser") -> dict[str, Any]:
    return {
        "schema_version": 1,
        "source": source,
        "fetched_at": fetched_at.isoformat().replace("+00:00", "Z"),
        "user": strip_credentials(user),
    }


def known_input() -> tuple[
    list[tuple[str | None, bytes]], list[dict[str, Any]], list[tuple[str | None, bytes, str]]
]:
    """Good envelopes (with duplicates and under-age ones) and bad records, as (key, value) pairs."""
    recorded = fixture_users(RECORDED)
    synthetic = SyntheticSource(11, now=EVENT_BASE).next_batch(300)
    users = recorded + synthetic
    for user in synthetic[:5]:  # under age: counted, never stored
        user["dob"] = {"date": "2015-06-01T08:00:00.000Z", "age": 11}
    envelopes = [
        envelope(
            user, EVENT_BASE + timedelta(seconds=7 * index), "randomuser" if index < 111 else "synthetic"
        )
        for index, user in enumerate(users)
    ]
    # Re-fetched profiles: same uuid, a later fetch time, and for some another country. The profile is
    # counted once, in the window of its first copy, with its latest copy's country.
    duplicates = []
    for index in range(0, 250, 10):
        refetched = copy.deepcopy(envelopes[index])
        refetched["fetched_at"] = (EVENT_BASE + timedelta(minutes=50)).isoformat()
        if index % 20 == 0:
            refetched["user"]["location"]["country"] = "Atlantis"
        duplicates.append(refetched)
    good = [(e["user"]["login"]["uuid"], json.dumps(e).encode()) for e in envelopes + duplicates]

    sample = envelopes[42]
    uuid = sample["user"]["login"]["uuid"]

    def variant(change: Callable[[dict[str, Any]], None]) -> bytes:
        changed = copy.deepcopy(sample)
        change(changed)
        return json.dumps(changed).encode()

    bad: list[tuple[str | None, bytes, str]] = [
        (None, b"not json at all", "not JSON"),
        (None, b"[1, 2, 3]", "JSON array"),
        (None, b"", "empty value"),
        (None, b"null", "JSON null"),
        (None, json.dumps(sample).encode()[:-25], "truncated JSON"),
        (None, variant(lambda e: e["user"]["login"].pop("uuid")), "no login.uuid"),
        (uuid, variant(lambda e: e.update(schema_version=99)), "unknown schema version"),
        (uuid, variant(lambda e: e["user"]["dob"].update(date="last tuesday")), "dob not a date"),
        (uuid, variant(lambda e: e["user"].pop("nat")), "no nationality"),
        ("not-" + uuid, variant(lambda e: None), "key differs from login.uuid"),
        (uuid, variant(lambda e: e.update(user="a string")), "user not an object"),
        (uuid, variant(lambda e: e.pop("fetched_at")), "no fetched_at"),
        (uuid, variant(lambda e: e["user"].pop("gender")), "no gender"),
        (uuid, b'{"schema_version": 1, "source": "\xff\xfe"}', "invalid UTF-8"),
        (uuid, variant(lambda e: e["user"].update(padding="x" * 2_000_000)), "2 MB"),
        ("not-a-uuid", variant(lambda e: e["user"]["login"].update(uuid="not-a-uuid")), "uuid not a UUID"),
        (
            uuid,
            variant(lambda e: e["user"]["dob"].update(date="2099-01-01T00:00:00.000Z")),
            "birth in the future",
        ),
        (uuid, variant(lambda e: e["user"]["location"].update(postcode={"code": 75001})), "postcode object"),
        (uuid, variant(lambda e: e["user"].update(dob=None, location={"country": None})), "nested nulls"),
        (uuid, variant(lambda e: e["user"]["dob"].update(age="old")), "wrong types"),
        (None, b"{}", "empty object"),
    ]
    return good, envelopes + duplicates, bad


def produce_known_input(settings: Settings, topic: str) -> ProducedInput:
    good, _, bad = known_input()
    # gzip and a large request size: the 2 MB record reaches the topic, as it could from any client.
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        acks="all",
        linger_ms=5,
        compression_type="gzip",
        max_request_size=4_000_000,
    )
    produced = ProducedInput()
    bad_every = len(good) // len(bad)
    try:
        for index, (key, value) in enumerate(good):
            metadata = producer.send(topic, key=key.encode() if key else None, value=value).get(timeout=30)
            produced.copies.append(Copy(json.loads(value), metadata.partition, metadata.offset))
            if index % bad_every == 0 and index // bad_every < len(bad):
                bad_key, bad_value, what = bad[index // bad_every]
                metadata = producer.send(
                    topic, key=bad_key.encode() if bad_key else None, value=bad_value
                ).get(timeout=30)
                produced.bad[(metadata.partition, metadata.offset)] = what
    finally:
        producer.close()
    assert len(produced.bad) == len(bad)
    return produced
