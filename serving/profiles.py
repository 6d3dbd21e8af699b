"""The latest profiles and the dead letters from MongoDB, direct identifiers masked.

The raw documents hold the profile as received (that is their purpose: a faithful copy for
investigation). What the dashboard shows is masked here, in one place: an e-mail keeps its first letter
and domain, a phone number its last two digits, a street its name's first letter.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.settings import Settings
from serving.views import ALL_TIME, TimeRange
from stores.connections import Database
from stores.documents import MongoRawStore, latest_profiles_filter, mongo_raw_store

MASK = "***"


def mask_email(email: str | None) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com``; anything without an ``@`` is masked whole."""
    if not email or "@" not in email:
        return MASK
    local, domain = email.rsplit("@", 1)
    return f"{local[:1]}{MASK}@{domain}"


def mask_phone(phone: str | None) -> str:
    """``(555) 123-4567`` -> ``***67``: the last two digits only."""
    digits = re.sub(r"\D", "", phone or "")
    return f"{MASK}{digits[-2:]}" if len(digits) >= 2 else MASK


def mask_name(first: str | None, last: str | None) -> str:
    """``Jane Doe`` -> ``J. D.``: initials, enough to tell rows apart."""
    initials = [f"{part.strip()[0]}." for part in (first, last) if part and part.strip()]
    return " ".join(initials) or MASK


DIRECT_IDENTIFIER_KEYS = frozenset({"name", "email", "phone", "cell", "street", "id", "login", "picture"})
"""Keys of a randomuser record whose values identify a person: masked whole in a dead letter's value."""
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE_LIKE = re.compile(r"(?<![\w-])\+?\d[\d ()./-]{5,}\d(?![\w-])")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
RAW_VALUE_SHOWN = 400
"""Characters of a dead letter's value shown (the rest is cut, marked with an ellipsis)."""


def _masked_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: MASK if k in DIRECT_IDENTIFIER_KEYS else _masked_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked_tree(item) for item in value]
    return value


def mask_raw_value(raw: bytes | None) -> str:
    """A dead letter's raw value as text a person may read: in a JSON record the values of direct
    identifiers (``DIRECT_IDENTIFIER_KEYS``) are masked whole; in any text, e-mail addresses and
    phone-like digit runs are masked as in the table. Sealed identifiers stay sealed (ciphertext)."""
    if raw is None:
        return ""
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict | list):
        text = json.dumps(_masked_tree(parsed), ensure_ascii=False)
    text = _EMAIL.sub(lambda match: mask_email(match.group()), text)
    text = _PHONE_LIKE.sub(
        lambda match: match.group() if _ISO_DATE.match(match.group()) else mask_phone(match.group()), text
    )
    return text if len(text) <= RAW_VALUE_SHOWN else text[:RAW_VALUE_SHOWN] + "…"


@dataclass(frozen=True)
class DeadLetterRow:
    """A stored dead letter as an operator sees it: where it came from, why, and its value masked."""

    job: str
    """The layer that met it first (``speed`` or ``batch``)."""
    reason: str
    topic: str
    partition: int
    offset: int
    kafka_timestamp: datetime | None
    stored_at: datetime | None
    value: str
    redriven_as: str | None = None
    """Where its re-driven copy was published (``topic:partition:offset``), when it was."""


@dataclass(frozen=True)
class DeadLetterTally:
    """How many dead letters of one layer and reason were stored within one hour."""

    job: str
    reason: str
    hour: datetime | None
    """The hour's start (UTC); None for letters stored before the hour was recorded."""
    count: int


def counts_by_reason(tallies: list[DeadLetterTally]) -> list[tuple[str, str, int]]:
    """(layer, reason, dead letters) over every hour, the most frequent first."""
    counts: Counter[tuple[str, str]] = Counter()
    for tally in tallies:
        counts[tally.job, tally.reason] += tally.count
    rows = [(job, reason, count) for (job, reason), count in counts.items()]
    return sorted(rows, key=lambda c: (-c[2], c[0], c[1]))


def dead_letter_row(document: dict[str, Any]) -> DeadLetterRow:
    return DeadLetterRow(
        job=document.get("job", ""),
        reason=document.get("reason", ""),
        topic=document.get("topic", ""),
        partition=int(document.get("partition", -1)),
        offset=int(document.get("offset", -1)),
        kafka_timestamp=document.get("kafka_timestamp"),
        stored_at=document.get("stored_at"),
        value=mask_raw_value(document.get("raw_value")),
        redriven_as=(document.get("redriven") or {}).get("published_as"),
    )


@dataclass(frozen=True)
class ProfileRow:
    """One row of the latest-profiles table: nothing here identifies a person directly."""

    uuid: str
    fetched_at: datetime
    name: str
    gender: str | None
    age: int | None
    country: str | None
    nationality: str | None
    email: str
    phone: str
    source: str | None


def profile_row(document: dict[str, Any]) -> ProfileRow:
    """A raw MongoDB document (see ``stores.documents.raw_document``) -> its masked table row."""
    user = document.get("user") or {}
    name = user.get("name") or {}
    location = user.get("location") or {}
    dob = user.get("dob") or {}
    return ProfileRow(
        uuid=document["_id"],
        fetched_at=document["fetched_at"],
        name=mask_name(name.get("first"), name.get("last")),
        gender=user.get("gender"),
        age=dob.get("age"),
        country=location.get("country"),
        nationality=user.get("nat"),
        email=mask_email(user.get("email")),
        phone=mask_phone(user.get("phone")),
        source=document.get("source"),
    )


# Only what the table shows is read: the rest of the document never leaves the database.
PROJECTION = {
    "fetched_at": 1,
    "source": 1,
    "user.name.first": 1,
    "user.name.last": 1,
    "user.gender": 1,
    "user.dob.age": 1,
    "user.location.country": 1,
    "user.nat": 1,
    "user.email": 1,
    "user.phone": 1,
}


def latest_profiles_query(
    country: str | None = None, gender: str | None = None, time_range: TimeRange = ALL_TIME
) -> dict[str, Any]:
    """The latest-profiles filter of the dashboard's choices."""
    return latest_profiles_filter(country, gender, time_range.start, time_range.end)


class ProfileDocuments:
    """Read side of the raw documents and dead letters the speed layer writes to MongoDB.

    The latest profiles come from the small copy of the newest documents the speed layer keeps
    (``stores.documents.MongoRawStore``): sorting the full collection is a scan on FerretDB. Filters
    therefore narrow those newest documents (a rare country may show fewer rows than asked).
    """

    def __init__(self, store: MongoRawStore) -> None:
        self.store = store

    def latest(
        self,
        limit: int,
        country: str | None = None,
        gender: str | None = None,
        time_range: TimeRange = ALL_TIME,
    ) -> list[ProfileRow]:
        """The ``limit`` most recently fetched profiles matching the filters, newest first, masked."""
        documents = self.store.newest_profiles(
            latest_profiles_query(country, gender, time_range), PROJECTION, limit
        )
        return [profile_row(document) for document in documents]

    def dead_lettered(self) -> int:
        """Records the layers could not use and no re-drive has published again (from their tallies: no
        letter is read)."""
        return sum(tally.count for tally in self.dead_letter_tallies())

    def dead_letter_tallies(self) -> list[DeadLetterTally]:
        """The dead letters not re-driven (``ingestion.redrive``), counted by layer, reason and the hour
        they were stored: both the counts by reason and the counts over time."""
        return [DeadLetterTally(*group) for group in self.store.outstanding_dead_letter_groups()]

    def dead_letter_counts(self) -> list[tuple[str, str, int]]:
        """(layer, reason, dead letters) for every layer and reason, the most frequent first."""
        return counts_by_reason(self.dead_letter_tallies())

    def latest_dead_letters(self, limit: int, reason: str | None = None) -> list[DeadLetterRow]:
        """The ``limit`` most recently stored dead letters (of one ``reason``) not re-driven, values
        masked."""
        return [dead_letter_row(document) for document in self.store.newest_dead_letters(limit, reason)]

    def dead_letter(self, letter_id: str) -> DeadLetterRow | None:
        """One dead letter by its Kafka coordinates (``topic:partition:offset``), value masked."""
        document = self.store.find_dead_letter(letter_id)
        return None if document is None else dead_letter_row(document)


def profile_documents(database: Database, settings: Settings) -> ProfileDocuments:
    """The read side of the configured collections."""
    return ProfileDocuments(mongo_raw_store(database, settings))
