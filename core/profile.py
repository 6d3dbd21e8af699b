"""The Kafka envelope around a randomuser.me profile, the dead letter, and data minimization.

What is published is the API's own JSON of the user minus the credentials: validated
(``core.validation``, the rules both layers apply to the topic), never reshaped, so that a field whose
type varies keeps the type it arrived with.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from core.schema import PLAIN_ENVELOPE_VERSION, SEALED_ENVELOPE_VERSION
from core.sealing import seal_identifiers
from core.validation import RecordLimits, envelope_reason

ENVELOPE_SCHEMA_VERSION = SEALED_ENVELOPE_VERSION
"""Version the producer writes; consumers reject versions they do not know."""
DEAD_LETTER_SCHEMA_VERSION = 1
"""Version of the dead-letter message layout."""

CREDENTIAL_FIELDS: tuple[str, ...] = ("password", "salt", "md5", "sha1", "sha256")
"""``login`` fields that are credentials: removed before anything leaves the producer, never stored."""

Source = Literal["randomuser", "synthetic", "admin"]


class ProfileEnvelope(BaseModel):
    """The value of a message on the profiles topic (its key is ``user.login.uuid``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = PLAIN_ENVELOPE_VERSION
    source: Source
    api_version: str | None = None
    """The randomuser.me API version the profile was fetched with (the synthetic source's: ``1.4``)."""
    fetched_at: AwareDatetime
    """When the producer received the profile: the event time both layers window on."""
    user: dict[str, Any]
    """The API's JSON of the user, credentials removed (and direct identifiers, once sealed)."""
    sealed: str | None = None
    """The direct identifiers sealed under the subject's data key (version 2), else None."""

    def sealed_with(self, data_key: bytes) -> ProfileEnvelope:
        """This envelope with its direct identifiers sealed under ``data_key`` (version 2)."""
        remaining, sealed = seal_identifiers(self.user, data_key)
        return self.model_copy(
            update={"schema_version": SEALED_ENVELOPE_VERSION, "user": remaining, "sealed": sealed}
        )

    @property
    def uuid(self) -> str:
        return str(self.user["login"]["uuid"])

    def value(self) -> bytes:
        """The message value: the envelope's JSON."""
        return self.model_dump_json().encode()


class DeadLetter(BaseModel):
    """The value of a message on the dead-letter topic: what could not be published, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = DEAD_LETTER_SCHEMA_VERSION
    source: Source
    api_version: str | None = None
    """The randomuser.me API version the record was fetched with."""
    fetched_at: AwareDatetime
    reason: str
    record: Any
    """The record as received (credentials removed when it has a ``login`` object; direct identifiers
    removed too, once sealed)."""
    sealed: str | None = None
    """The record's direct identifiers sealed under its subject's data key, when it has a uuid."""

    def sealed_with(self, data_key: bytes) -> DeadLetter:
        """This dead letter with the direct identifiers of its record (which has a uuid) sealed."""
        remaining, sealed = seal_identifiers(self.record, data_key)
        return self.model_copy(update={"record": remaining, "sealed": sealed})


def strip_credentials(user: Any) -> Any:
    """A copy of a user record without the ``login`` credential fields; other values are returned as is."""
    if not isinstance(user, dict) or not isinstance(user.get("login"), dict):
        return user
    minimized = copy.copy(user)
    minimized["login"] = {k: v for k, v in user["login"].items() if k not in CREDENTIAL_FIELDS}
    return minimized


def record_uuid(record: Any) -> str | None:
    """``login.uuid`` of a raw record when it has a text one (the key it is published under)."""
    if isinstance(record, dict) and isinstance(record.get("login"), dict):
        uuid = record["login"].get("uuid")
        return uuid if isinstance(uuid, str) else None
    return None


def envelope_fields(
    user: Any, source: Source, fetched_at: datetime, api_version: str | None
) -> dict[str, Any]:
    """The envelope of a user record as the layers will read it (credentials removed), for validation."""
    return {
        "schema_version": PLAIN_ENVELOPE_VERSION,
        "source": source,
        "api_version": api_version,
        "fetched_at": fetched_at.isoformat(),
        "user": strip_credentials(user),
    }


def profile_reason(
    user: Any,
    source: Source,
    fetched_at: datetime,
    limits: RecordLimits,
    api_version: str | None = None,
    written_at: datetime | None = None,
) -> str | None:
    """Why a user record cannot be published, with the reason both layers would give; None when it can.

    ``written_at`` is when it is published (``fetched_at`` by default): the layers refuse a
    ``fetched_at`` too far after the record's Kafka timestamp.
    """
    envelope = envelope_fields(user, source, fetched_at, api_version)
    return envelope_reason(envelope, record_uuid(user), written_at or fetched_at, limits)


def profile_envelope(
    user: dict[str, Any], source: Source, fetched_at: datetime, api_version: str | None = None
) -> ProfileEnvelope:
    """The envelope of a validated profile, credentials removed."""
    return ProfileEnvelope(
        source=source, api_version=api_version, fetched_at=fetched_at, user=strip_credentials(user)
    )


def dead_letter(
    record: Any, reason: str, source: Source, fetched_at: datetime, api_version: str | None = None
) -> DeadLetter:
    """The dead-letter message of a record that failed validation, credentials removed."""
    return DeadLetter(
        source=source,
        api_version=api_version,
        fetched_at=fetched_at,
        reason=reason,
        record=strip_credentials(record),
    )
