"""The randomuser.me 1.4 profile as a typed model, the Kafka envelope around it, and data minimization.

The model follows what the API really returns (``../shared/fixtures/randomuser/API-NOTES.md``):
``location.postcode`` is an int or a string, ``id.value`` may be null, coordinates and timezone offsets
are strings, names may be in any script. It validates; it does not reshape: what is published is the
API's own JSON minus the credentials, so that a field whose type varies keeps the type it arrived with.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from core.sealing import seal_identifiers

PLAIN_ENVELOPE_VERSION = 1
"""Envelope whose ``user`` holds every field in clear (written before crypto-shredding, still read)."""
SEALED_ENVELOPE_VERSION = 2
"""Envelope whose direct identifiers are in ``sealed`` under the subject's data key (``core.sealing``)."""
ENVELOPE_SCHEMA_VERSION = SEALED_ENVELOPE_VERSION
"""Version the producer writes; consumers reject versions they do not know."""
SUPPORTED_ENVELOPE_VERSIONS: tuple[int, ...] = (PLAIN_ENVELOPE_VERSION, SEALED_ENVELOPE_VERSION)
DEAD_LETTER_SCHEMA_VERSION = 1
"""Version of the dead-letter message layout."""

NATIONALITIES: tuple[str, ...] = (
    "AU", "BR", "CA", "CH", "DE", "DK", "ES", "FI", "FR", "GB", "IE",
    "IN", "IR", "MX", "NL", "NO", "NZ", "RS", "TR", "UA", "US",
)  # fmt: skip
"""The nationality codes randomuser.me 1.4 serves (an unknown code makes it ignore the whole filter)."""

CREDENTIAL_FIELDS: tuple[str, ...] = ("password", "salt", "md5", "sha1", "sha256")
"""``login`` fields that are credentials: removed before anything leaves the producer, never stored."""

Source = Literal["randomuser", "synthetic", "admin"]


class _ApiObject(BaseModel):
    # The API may add fields; they are ignored by validation and passed through untouched.
    model_config = ConfigDict(extra="allow", frozen=True)


class Name(_ApiObject):
    title: str
    first: str = Field(min_length=1)
    last: str = Field(min_length=1)


class Street(_ApiObject):
    number: int
    name: str


class Coordinates(_ApiObject):
    latitude: str = Field(pattern=r"^-?\d{1,3}(\.\d+)?$")
    longitude: str = Field(pattern=r"^-?\d{1,3}(\.\d+)?$")


class Timezone(_ApiObject):
    offset: str = Field(pattern=r"^[+-]?\d{1,2}:\d{2}$")
    """``+5:30``, ``-3:30``, ``0:00``: no sign for zero, no zero padding."""
    description: str


class Location(_ApiObject):
    street: Street
    city: str
    state: str
    country: str = Field(min_length=1)
    postcode: int | str
    """An int for most countries, a string for CA, GB, NL, NO (letters, spaces, leading zeros)."""
    coordinates: Coordinates
    timezone: Timezone


class Login(_ApiObject):
    uuid: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    """The profile's identity: the Kafka key and the document id in every store."""
    username: str


class DatedAge(_ApiObject):
    date: AwareDatetime
    age: int = Field(ge=0, le=150)


class Identifier(_ApiObject):
    name: str
    value: str | None
    """Null (with an empty name) for IR, NZ, TR and UA."""


class Picture(_ApiObject):
    large: str
    medium: str
    thumbnail: str


class RandomUserProfile(_ApiObject):
    """One user of a randomuser.me 1.4 response (``results[i]``)."""

    gender: Literal["male", "female"]
    name: Name
    location: Location
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    login: Login
    dob: DatedAge
    registered: DatedAge
    phone: str
    cell: str
    id: Identifier
    picture: Picture
    nat: Literal[NATIONALITIES]  # type: ignore[valid-type]


class ProfileEnvelope(BaseModel):
    """The value of a message on the profiles topic (its key is ``user.login.uuid``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = PLAIN_ENVELOPE_VERSION
    source: Source
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


class DeadLetter(BaseModel):
    """The value of a message on the dead-letter topic: what could not be published, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = DEAD_LETTER_SCHEMA_VERSION
    source: Source
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


def validation_reason(error: ValidationError) -> str:
    """A one-line reason from a validation error: ``field.path: message`` for each problem."""
    problems = (
        f"{'.'.join(str(part) for part in item['loc']) or '<record>'}: {item['msg']}"
        for item in error.errors()
    )
    return "; ".join(problems)


def check_profile(user: Any) -> str | None:
    """None when ``user`` is a valid 1.4 profile, otherwise the reason it is not."""
    try:
        RandomUserProfile.model_validate(user)
    except ValidationError as error:
        return validation_reason(error)
    return None


def profile_envelope(user: dict[str, Any], source: Source, fetched_at: datetime) -> ProfileEnvelope:
    """The envelope of a validated profile, credentials removed."""
    return ProfileEnvelope(source=source, fetched_at=fetched_at, user=strip_credentials(user))


def dead_letter(record: Any, reason: str, source: Source, fetched_at: datetime) -> DeadLetter:
    """The dead-letter message of a record that failed validation, credentials removed."""
    return DeadLetter(source=source, fetched_at=fetched_at, reason=reason, record=strip_credentials(record))
