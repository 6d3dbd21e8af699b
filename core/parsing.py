"""Kafka records of the profiles topic parsed into envelopes, each valid or with the reason it is not.

Both layers read the same topic (the speed layer as a stream, the batch layer as a batch), so both parse
it here. Everything is a DataFrame -> DataFrame function without actions: it works on streaming frames.

Why the checks look the way they do (verified on Spark 4.1):

- ``from_json`` in PERMISSIVE mode never fails and never tells why: malformed text, a JSON array and a
  scalar all give a struct of nulls (null only for an empty string), and a field of the wrong type
  (``"dob": {"date": "last tuesday"}``) is null while its neighbours are kept. So "is it a JSON object"
  is asked of ``json_object_keys`` (null for anything but a JSON object, ``[]`` for ``{}``), and a
  required field that is null after parsing is reported as "missing or invalid".
- A JSON number read into a string field keeps its text (postcode ``5440`` -> ``"5440"``).
- Jackson stops after the first complete value, so trailing bytes after the object are ignored.

Sealed envelopes (version 2, ``core.sealing``) are opened here, before validation, by joining each record
(by its Kafka key, the subject's uuid) to its subject's data key: a record whose key is gone belongs to
an erased subject and is neither valid nor a dead letter (it is skipped, and counted by the callers as
input that is neither). A sealed record without a Kafka key names no subject: a dead letter.
"""

from __future__ import annotations

import functools

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.profile import NATIONALITIES, SEALED_ENVELOPE_VERSION, SUPPORTED_ENVELOPE_VERSIONS
from core.pseudonymization import blank_column
from core.schema import ENVELOPE_SCHEMA
from core.sealing import unsealed_identifiers_column, with_identifiers

REQUIRED_FIELDS: tuple[str, ...] = (
    "fetched_at",
    "user.gender",
    "user.name.first",
    "user.name.last",
    "user.email",
    "user.dob.date",
    "user.registered.date",
    "user.location.country",
    "user.nat",
)
"""Envelope fields without which a profile cannot be transformed or counted, in the order reported."""

STRING_REQUIRED_FIELDS: frozenset[str] = frozenset(
    {"user.gender", "user.name.first", "user.name.last", "user.email", "user.location.country", "user.nat"}
)
"""Required fields read as strings: blank counts as missing (the producer's model asks for min_length 1)."""

GENDERS: tuple[str, ...] = ("male", "female")
"""The values of ``gender`` the 1.4 API serves (as ``core.profile.RandomUserProfile``)."""

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
"""Shape of a usable e-mail address, the one the producer's model validates."""

EMPTY_VALUE = "empty value"
NOT_JSON = "not JSON"
NOT_JSON_OBJECT = "not JSON: a JSON value that is not an object"
MISSING_SCHEMA_VERSION = "missing or invalid schema_version"
UNSUPPORTED_SCHEMA_VERSION = "unsupported schema_version"
MISSING_UUID = "missing login.uuid"
KEY_MISMATCH = "key does not match login.uuid"
SEALED_WITHOUT_KEY = "sealed record without a key (the key names the subject whose data key opens it)"
MISSING_SEALED = "missing sealed identifiers"
CANNOT_UNSEAL = "sealed identifiers do not open with the subject's key"
MISSING_OR_INVALID = "missing or invalid"

OUTPUT_COLUMNS: tuple[str, ...] = (
    "kafka_key",
    "raw_value",
    "topic",
    "partition",
    "offset",
    "kafka_timestamp",
    "envelope",
    "dead_letter_reason",
)
"""Columns of ``parse_kafka_records``, in order."""


def _field(envelope: Column, path: str) -> Column:
    """The nested field ``path`` (dot-separated) of a struct column."""
    column = envelope
    for part in path.split("."):
        column = column.getField(part)
    return column


def _field_invalid(envelope: Column, path: str) -> Column:
    """Whether the required field ``path`` is missing, of the wrong type, blank or out of its domain."""
    value = _field(envelope, path)
    invalid = blank_column(value) if path in STRING_REQUIRED_FIELDS else value.isNull()
    if path == "user.gender":
        invalid = invalid | ~value.isin(*GENDERS)
    elif path == "user.nat":
        invalid = invalid | ~value.isin(*NATIONALITIES)
    elif path == "user.email":
        invalid = invalid | ~value.rlike(EMAIL_PATTERN)
    return invalid


def _missing_fields_reason(envelope: Column) -> Column:
    """``missing or invalid <path>`` for each invalid required field, joined by ``; ``, or null if none."""
    reasons = [
        F.when(_field_invalid(envelope, path), F.lit(f"{MISSING_OR_INVALID} {path}"))
        for path in REQUIRED_FIELDS
    ]
    joined = F.concat_ws("; ", *reasons)  # skips the nulls of the valid fields
    return F.when(joined != F.lit(""), joined)


def _dead_letter_reason(
    value: Column, text: Column, kafka_key: Column, envelope: Column, data_key: Column, identifiers: Column
) -> Column:
    """Why a record cannot be used, the first problem in order of severity; null when it is valid (or
    when it belongs to an erased subject: see ``_erased``)."""
    version = envelope.getField("schema_version")
    uuid = _field(envelope, "user.login.uuid")
    sealed = envelope.getField("sealed")
    is_sealed_version = version == F.lit(SEALED_ENVELOPE_VERSION)
    return (
        F.when(value.isNull() | (F.length(value) == 0), F.lit(EMPTY_VALUE))
        .when(
            # Asked only when from_json found no schema_version (a record it read one from is a
            # well-formed JSON object): json_object_keys reads the whole text again.
            version.isNull() & F.json_object_keys(text).isNull(),
            # get_json_object returns the text of any well-formed JSON value, null for malformed text.
            F.when(F.get_json_object(text, "$").isNull(), F.lit(NOT_JSON)).otherwise(F.lit(NOT_JSON_OBJECT)),
        )
        .when(version.isNull(), F.lit(MISSING_SCHEMA_VERSION))
        .when(
            ~version.isin(*SUPPORTED_ENVELOPE_VERSIONS),
            F.concat(F.lit(f"{UNSUPPORTED_SCHEMA_VERSION} "), version.cast("string")),
        )
        .when(blank_column(uuid), F.lit(MISSING_UUID))
        .when(kafka_key.isNotNull() & (kafka_key != uuid), F.lit(KEY_MISMATCH))
        .when(is_sealed_version & kafka_key.isNull(), F.lit(SEALED_WITHOUT_KEY))
        .when(is_sealed_version & blank_column(sealed), F.lit(MISSING_SEALED))
        .when(is_sealed_version & data_key.isNull(), F.lit(None).cast("string"))  # erased: not a letter
        .when(is_sealed_version & identifiers.isNull(), F.lit(CANNOT_UNSEAL))
        .otherwise(_missing_fields_reason(envelope))
    )


def _erased(envelope: Column, data_key: Column) -> Column:
    """Whether a parsed record is sealed for a subject whose key is gone (erased, or never seen)."""
    is_sealed = (envelope.getField("schema_version") == F.lit(SEALED_ENVELOPE_VERSION)) & ~blank_column(
        envelope.getField("sealed")
    )
    return F.coalesce(is_sealed & data_key.isNull(), F.lit(False))


def _identifiers(envelope: Column, data_key: Column) -> Column:
    """The opened identifiers of a sealed envelope (null when they do not open, or it is not sealed)."""
    is_sealed = envelope.getField("schema_version") == F.lit(SEALED_ENVELOPE_VERSION)
    opened = unsealed_identifiers_column(
        envelope.getField("sealed"), data_key, _field(envelope, "user.login.uuid")
    )
    return F.when(is_sealed, opened)


def _unsealed(envelope: Column, identifiers: Column) -> Column:
    """The parsed envelope with its opened ``identifiers`` put back into ``user``; a plain envelope (no
    identifiers) is returned as it is, without rebuilding its struct."""
    return F.when(
        identifiers.isNotNull(),
        envelope.withField("user", with_identifiers(envelope.getField("user"), identifiers)),
    ).otherwise(envelope)


def parse_kafka_records(kafka_rows: DataFrame, subject_keys: DataFrame | None = None) -> DataFrame:
    """Kafka records of the profiles topic with their parsed (and unsealed) envelope, or the reason it is
    unusable.

    Input: the Kafka source's columns (``key``, ``value``, ``topic``, ``partition``, ``offset``,
    ``timestamp``; others are dropped), and the data keys (``core.subject_keys.subject_keys_frame``) of
    at least the subjects of sealed records; without them every sealed record counts as erased. Output:
    ``OUTPUT_COLUMNS``: ``envelope`` (a struct of ``ENVELOPE_SCHEMA``, identifiers unsealed) is set
    for a usable record, ``dead_letter_reason`` for a bad one, and neither for an erased subject's.
    """
    records = kafka_rows.select(*_record_columns())
    if subject_keys is None:
        with_keys = records.withColumn("_data_key", F.lit(None).cast("binary"))
    else:
        # Joined on the record key (the uuid, or the record is a dead letter) before parsing: the join
        # then carries the raw bytes, not the parsed envelope's wide struct (parse of 500k records:
        # 8.5 s -> 7.1 s measured).
        keys = subject_keys.select(F.col("uuid").alias("_key_uuid"), F.col("data_key").alias("_data_key"))
        with_keys = records.join(keys, F.col("kafka_key") == F.col("_key_uuid"), "left").drop("_key_uuid")
    steps = (_parsed_columns, _identified_columns, _opened_columns, _reason_columns, _output_columns)
    parsed = with_keys
    for step in steps:
        parsed = parsed.select(*step())
    return parsed


# The expressions of each step are built once per process (functools.cache) and reused on every frame:
# an unresolved Column is bound to no frame, and building these costs thousands of calls into the JVM
# (~0.6 s), which the speed layer would otherwise pay on every micro-batch.


@functools.cache
def _record_columns() -> tuple[Column, ...]:
    return (
        F.col("key").cast("string").alias("kafka_key"),
        F.col("value").alias("raw_value"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
    )


@functools.cache
def _parsed_columns() -> tuple[Column, ...]:
    text = F.col("raw_value").cast("string")
    return (
        *_carried(),
        F.col("_data_key"),
        text.alias("_text"),
        F.from_json(text, ENVELOPE_SCHEMA).alias("_parsed"),
    )


@functools.cache
def _identified_columns() -> tuple[Column, ...]:
    identifiers = _identifiers(F.col("_parsed"), F.col("_data_key"))
    return (
        *_carried(),
        F.col("_data_key"),
        F.col("_text"),
        F.col("_parsed"),
        identifiers.alias("_identifiers"),
    )


@functools.cache
def _opened_columns() -> tuple[Column, ...]:
    opened = _unsealed(F.col("_parsed"), F.col("_identifiers"))
    return (*_carried(), F.col("_data_key"), F.col("_text"), F.col("_identifiers"), opened.alias("_parsed"))


@functools.cache
def _reason_columns() -> tuple[Column, ...]:
    reason = _dead_letter_reason(
        F.col("raw_value"),
        F.col("_text"),
        F.col("kafka_key"),
        F.col("_parsed"),
        F.col("_data_key"),
        F.col("_identifiers"),
    )
    return (*_carried(), F.col("_data_key"), F.col("_parsed"), reason.alias("dead_letter_reason"))


@functools.cache
def _output_columns() -> tuple[Column, ...]:
    usable = F.col("dead_letter_reason").isNull() & ~_erased(F.col("_parsed"), F.col("_data_key"))
    return (*_carried(), F.when(usable, F.col("_parsed")).alias("envelope"), F.col("dead_letter_reason"))


def _carried() -> tuple[Column, ...]:
    """The Kafka columns every step passes on unchanged."""
    return tuple(F.col(name) for name in OUTPUT_COLUMNS[:-2])


def valid_envelopes(parsed: DataFrame) -> DataFrame:
    """The records of ``parse_kafka_records`` whose envelope is usable."""
    return parsed.where(F.col("envelope").isNotNull())


def erased_records(parsed: DataFrame) -> DataFrame:
    """The records of ``parse_kafka_records`` of erased subjects: neither usable nor dead letters."""
    return parsed.where(F.col("envelope").isNull() & F.col("dead_letter_reason").isNull())


def dead_letter_records(parsed: DataFrame) -> DataFrame:
    """The records of ``parse_kafka_records`` that cannot be used, each with its reason."""
    return parsed.where(F.col("dead_letter_reason").isNotNull())
