"""The latest profiles from MongoDB, direct identifiers masked, and the dead-letter count.

The raw documents hold the profile as received (that is their purpose: a faithful copy for
investigation). What the dashboard shows is masked here, in one place: an e-mail keeps its first letter
and domain, a phone number its last two digits, a street its name's first letter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from core.settings import Settings
from serving.views import ALL_TIME, TimeRange

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
    """A raw MongoDB document (see ``speed_layer.stores.raw_document``) -> its masked table row."""
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


def latest_profiles_filter(
    country: str | None = None, gender: str | None = None, time_range: TimeRange = ALL_TIME
) -> dict[str, Any]:
    """The MongoDB filter of the latest-profiles query (the ``by_country`` index serves a country)."""
    query: dict[str, Any] = {}
    if country:
        query["user.location.country"] = country
    if gender:
        query["user.gender"] = gender
    fetched_at: dict[str, datetime] = {}
    if time_range.start is not None:
        fetched_at["$gte"] = time_range.start
    if time_range.end is not None:
        fetched_at["$lt"] = time_range.end
    if fetched_at:
        query["fetched_at"] = fetched_at
    return query


class ProfileDocuments:
    """Read side of the raw documents and dead letters the speed layer writes to MongoDB.

    The latest profiles come from the small copy of the newest documents the speed layer keeps
    (``speed_layer.stores.MongoRawStore``): sorting the full collection is a scan on FerretDB. Filters
    therefore narrow those newest documents (a rare country may show fewer rows than asked).
    """

    def __init__(self, latest_profiles: Collection, dead_letters: Collection) -> None:
        self.latest_profiles = latest_profiles
        self.dead_letters = dead_letters

    def latest(
        self,
        limit: int,
        country: str | None = None,
        gender: str | None = None,
        time_range: TimeRange = ALL_TIME,
    ) -> list[ProfileRow]:
        """The ``limit`` most recently fetched profiles matching the filters, newest first, masked."""
        cursor = (
            self.latest_profiles.find(latest_profiles_filter(country, gender, time_range), PROJECTION)
            .sort("fetched_at", DESCENDING)
            .limit(limit)
        )
        return [profile_row(document) for document in cursor]

    def dead_lettered(self) -> int:
        """Records the streaming jobs could not use (from the collection's metadata: no scan)."""
        return self.dead_letters.estimated_document_count()


def profile_documents(database: Database, settings: Settings) -> ProfileDocuments:
    """The read side of the configured collections."""
    return ProfileDocuments(
        database[settings.mongo.latest_profiles_collection], database[settings.mongo.dead_letters_collection]
    )
