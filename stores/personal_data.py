"""What erasure and retention ask of every store that holds personal data: ``erase`` one subject and
``expire`` what is older than its retention. One interface, so that erasure and retention are loops over
the stores (``privacy/erasure.py``, ``privacy/retention.py``) and a new store is one more class that
implements it, not one more step in each.

The stores that implement it, in the order of the data flow: ``stores.topics.KafkaTopics``,
``stores.documents.MongoRawStore``, ``stores.subject_keys.SubjectKeyStore``,
``stores.speed_views.CassandraSpeedStore`` and ``stores.lake.DeltaLake``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from core.settings import RetentionSettings


@dataclass(frozen=True)
class StoreRetention:
    """What the retention did to one place of a store (a topic, a collection, a table)."""

    store: str
    kept_from: str
    """The cutoff: what is older than this was removed (an instant, a day, or a duration)."""
    removed: int
    """Documents, rows or topics changed, as ``unit`` says."""
    unit: str
    note: str = ""

    def describe(self) -> str:
        """One line for the command line and the job's log."""
        text = f"{self.store}: removed {self.removed:,} {self.unit} (keeping from {self.kept_from})"
        return f"{text}; {self.note}" if self.note else text


class PersonalDataStore(Protocol):
    """A store that holds personal data (directly, pseudonymized or sealed)."""

    def erase(self, uuid: str) -> dict[str, int]:
        """Remove the subject's data; what was removed, by place (``{"MongoDB raw_profiles": 1}``).
        Running it again removes nothing more and fails nothing."""
        ...

    def expire(self, retention: RetentionSettings, now: datetime) -> list[StoreRetention]:
        """Remove what is older than its retention at ``now`` (timezone-aware); one line per place."""
        ...


def cutoff_instant(now: datetime, days: int) -> datetime:
    """The instant before which data is older than ``days`` (UTC): what is older goes."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware: a naive instant is ambiguous")
    return now.astimezone(UTC) - timedelta(days=days)


def cutoff_day(now: datetime, days: int) -> date:
    """The first UTC day that is kept: a day partition goes once every instant in it is past the cutoff.

    Day ``d`` covers ``[d, d + 1 day)``; all of it is older than the cutoff ``c`` exactly when
    ``d + 1 day <= c``, that is when ``d < c.date()``. So a partition is dropped a day later than its
    oldest record would be, never earlier.
    """
    return cutoff_instant(now, days).date()
