"""What a profile record on the topic is: every field, its kind and its constraints, defined once.

``FIELD_RULES`` is the one definition. The Spark read schemas both layers parse with are derived from
it, and ``core.validation`` turns it into the checks the producer runs in Python and both layers run
in Spark, so a record valid for one is valid for all.

The kinds follow what Spark's JSON reader can tell apart, so that Python can give the same verdict:

- ``text``: any JSON scalar, read as its text (a postcode ``5440`` is ``"5440"``, as the API sends some
  postcodes as numbers and others as strings); an object or an array is not a text. Spark reads one
  into a string column as its JSON text, so a text that starts with ``{`` or ``[`` is refused on both
  sides;
- ``integer`` (32 bits) and ``long`` (64 bits): a JSON integer in range, nothing else;
- ``instant``: an ISO-8601 text with a zone (``ISO_INSTANT_PATTERN``), as the API and the producer
  write them. Read as text and parsed explicitly: Spark's own timestamp reading takes a number as
  seconds since the epoch and a date without a time, which Python does not;
- ``object``: a JSON object.

Every field is nullable; JSON ``null`` is the same as an absent field. Fields a record has but the
rules do not list are ignored (the API may add some). ``login`` lists only ``uuid`` and ``username``:
credentials are stripped by the producer, and listing them here would let a record that still carried
one put it into a column.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pyspark.sql.types import (
    DataType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

Kind = Literal["text", "integer", "long", "instant", "object"]

PLAIN_ENVELOPE_VERSION = 1
"""Envelope whose ``user`` holds every field in clear (written before crypto-shredding, still read)."""
SEALED_ENVELOPE_VERSION = 2
"""Envelope whose direct identifiers are in ``sealed`` under the subject's data key (``core.sealing``)."""
SUPPORTED_ENVELOPE_VERSIONS: tuple[int, ...] = (PLAIN_ENVELOPE_VERSION, SEALED_ENVELOPE_VERSION)

API_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2", "1.3", "1.4")
"""randomuser.me API versions whose profiles the platform takes (older ones lack fields it needs)."""

NATIONALITIES: tuple[str, ...] = (
    "AU", "BR", "CA", "CH", "DE", "DK", "ES", "FI", "FR", "GB", "IE",
    "IN", "IR", "MX", "NL", "NO", "NZ", "RS", "TR", "UA", "US",
)  # fmt: skip
"""The nationality codes randomuser.me serves (1.4; earlier versions serve a subset)."""

GENDERS: tuple[str, ...] = ("male", "female")
"""The values of ``gender`` the API serves."""

ASCII_WHITESPACE = " \t\n\x0b\f\r"
"""What Java's ``\\s`` matches, and so what every pattern below means by white space."""

UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
"""A lower-case UUID, as the API writes ``login.uuid``."""

EMAIL_PATTERN = "[^@ \\t\\n\\x0B\\f\\r]+@[^@ \\t\\n\\x0B\\f\\r]+\\.[^@ \\t\\n\\x0B\\f\\r]+"
"""Something, ``@``, a dotted domain: the shape ``email_domain`` needs (no white space anywhere)."""

ISO_INSTANT_PATTERN = (
    "[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?"
    "(Z|[+-](0[0-9]|1[0-7]):[0-5][0-9]|[+-]18:00)"
)
"""``2026-11-23T10:00:00.123Z`` or with an offset up to 18:00, years 1000-9999: the forms that Python's
``datetime.fromisoformat`` and Spark's ``try_to_timestamp`` both read, to the same instant."""

# Patterns use ASCII classes only: Python's ``\d`` and ``\s`` match Unicode digits and spaces, Java's do not.


@dataclass(frozen=True)
class FieldRule:
    """One field of the envelope: where it is, what kind of value it holds, what makes it invalid."""

    path: str
    """Dotted path from the envelope (``user.login.uuid``)."""
    kind: Kind
    required: bool = False
    """A profile without it cannot be keyed, counted or broken down (text: blank counts as missing)."""
    one_of: tuple[str, ...] = ()
    """Text: the values allowed, when they are a closed set."""
    pattern: str = ""
    """Text: a regular expression (ASCII classes only) the whole value must match."""
    meaning: str = ""
    """Text with ``one_of`` or ``pattern``: what a valid value is, as reasons say it (``a UUID``)."""
    not_before: str = ""
    """Instant: the earliest plausible value (an ISO instant)."""
    not_after: str = ""
    """Instant: the path of an instant this one cannot be after (a birth after the fetch)."""
    not_after_written: bool = False
    """Instant: it cannot be more than the allowed clock skew after the record was written."""
    sealed_as: str = ""
    """Set for a direct identifier of a sealed envelope: its field in the sealed JSON object."""

    @property
    def parent(self) -> str:
        return self.path.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]


def _rules() -> tuple[FieldRule, ...]:
    text, integer, long, instant, obj = "text", "integer", "long", "instant", "object"

    def rule(path: str, kind: Kind, **constraints: object) -> FieldRule:
        return FieldRule(path, kind, **constraints)  # type: ignore[arg-type]

    def sealed(path: str, kind: Kind, field: str) -> FieldRule:
        return FieldRule(path, kind, sealed_as=field)

    return (
        rule("schema_version", integer),
        rule("source", text, required=True),
        rule("api_version", text, one_of=API_VERSIONS, meaning="an API version from 1.0 to 1.4"),
        rule("fetched_at", instant, required=True, not_after_written=True),
        rule("user", obj, required=True),
        rule("user.gender", text, required=True, one_of=GENDERS, meaning="male or female"),
        sealed("user.name", obj, "name"),
        sealed("user.name.title", text, "name"),
        sealed("user.name.first", text, "name"),
        sealed("user.name.last", text, "name"),
        rule("user.location", obj),
        sealed("user.location.street", obj, "street"),
        sealed("user.location.street.number", long, "street"),
        sealed("user.location.street.name", text, "street"),
        rule("user.location.city", text),
        rule("user.location.state", text),
        rule("user.location.country", text, required=True),
        rule("user.location.postcode", text),
        rule("user.location.coordinates", obj),
        rule("user.location.coordinates.latitude", text),
        rule("user.location.coordinates.longitude", text),
        rule("user.location.timezone", obj),
        rule("user.location.timezone.offset", text),
        rule("user.location.timezone.description", text),
        FieldRule(
            "user.email",
            "text",
            required=True,
            pattern=EMAIL_PATTERN,
            meaning="an e-mail address",
            sealed_as="email",
        ),
        rule("user.login", obj),
        rule("user.login.uuid", text, required=True, pattern=UUID_PATTERN, meaning="a UUID"),
        sealed("user.login.username", text, "username"),
        rule("user.dob", obj),
        rule(
            "user.dob.date", instant, required=True, not_before="1900-01-01T00:00:00Z", not_after="fetched_at"
        ),
        rule("user.dob.age", integer),
        rule("user.registered", obj),
        rule("user.registered.date", instant),
        rule("user.registered.age", integer),
        sealed("user.phone", text, "phone"),
        sealed("user.cell", text, "cell"),
        sealed("user.id", obj, "id"),
        sealed("user.id.name", text, "id"),
        sealed("user.id.value", text, "id"),
        sealed("user.picture", obj, "picture"),
        sealed("user.picture.large", text, "picture"),
        sealed("user.picture.medium", text, "picture"),
        sealed("user.picture.thumbnail", text, "picture"),
        rule("user.nat", text, required=True, one_of=NATIONALITIES, meaning="a nationality code of the API"),
        rule("sealed", text),
    )


FIELD_RULES: tuple[FieldRule, ...] = _rules()
"""Every field of an envelope, parents before children, in the order reasons list problems."""

RULES_BY_PATH: dict[str, FieldRule] = {rule.path: rule for rule in FIELD_RULES}

IDENTITY_PATHS: tuple[str, ...] = ("user", "user.login", "user.login.uuid")
"""The fields that key a record: checked before anything else (a record without them names nobody)."""

CORRUPT_FIELD = "_corrupt_record"
"""Spark sets this field of a parsed record to its text when some field had the wrong JSON type."""

_SPARK_TYPES: dict[str, DataType] = {
    "text": StringType(),
    "integer": IntegerType(),
    "long": LongType(),
    "instant": StringType(),
}


def _children(parent: str, rules: Iterable[FieldRule]) -> list[FieldRule]:
    return [rule for rule in rules if rule.parent == parent]


def _struct_of(parent: str, rules: tuple[FieldRule, ...], prefix: str = "") -> StructType:
    """The Spark struct of the fields under ``parent`` (their paths relative to ``prefix``)."""
    fields = []
    for rule in _children(parent, rules):
        data_type = _struct_of(rule.path, rules) if rule.kind == "object" else _SPARK_TYPES[rule.kind]
        fields.append(StructField(rule.name, data_type, nullable=True))
    return StructType(fields)


PROFILE_SCHEMA: StructType = _struct_of("user", FIELD_RULES)
"""One user of a randomuser.me response, without credentials, as Spark reads it."""

ENVELOPE_SCHEMA: StructType = _struct_of("", FIELD_RULES)
"""The value of a message on the profiles topic (``core.profile.ProfileEnvelope``)."""

ENVELOPE_READ_SCHEMA: StructType = StructType(
    [*ENVELOPE_SCHEMA.fields, StructField(CORRUPT_FIELD, StringType(), nullable=True)]
)
"""``ENVELOPE_SCHEMA`` with Spark's corrupt-record field: how ``from_json`` tells that some field had
the wrong type (that field is null, its neighbours are kept, and this field holds the record's text)."""

JSON_OPTIONS: dict[str, str] = {"allowSingleQuotes": "false", "allowNonNumericNumbers": "false"}
"""Spark's JSON reader made as strict as Python's ``json``: both refuse single quotes and NaN."""
