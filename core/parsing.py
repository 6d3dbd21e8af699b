"""Kafka records of the profiles topic parsed into envelopes, each usable or with the reason it is not.

Both layers read the same topic (the speed layer as a stream, the batch layer as a batch), so both parse
it here, with the checks of ``core.validation`` (the producer runs the same checks in Python). Every
function is DataFrame -> DataFrame without actions: it works on streaming frames.

Why the parse looks the way it does (verified on Spark 4.1):

- ``from_json`` in PERMISSIVE mode never fails. Malformed text, a JSON array and a scalar all give a
  struct of nulls; a field of the wrong type (``"dob": {"age": "old"}``) is null while its neighbours
  are kept, and the corrupt-record field is set (``core.schema.ENVELOPE_READ_SCHEMA``). So "is it a
  JSON object" is asked of ``json_object_keys``, and which field had the wrong type of the JSON text,
  only for the records whose corrupt-record field is set.
- Jackson stops after the first complete value, so a text that goes on after the object is refused
  explicitly, as Python's ``json`` would.

Sealed envelopes (version 2, ``core.sealing``) are opened here, before validation, with the subject's
data key, which the caller gives as a column (``data_key``, by the Kafka key: the uuid) or as a frame
to join: a record whose key is gone belongs to an erased subject and is neither usable nor a dead
letter (it is skipped, and counted by the callers as input that is neither).
"""

from __future__ import annotations

import functools

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.schema import CORRUPT_FIELD, ENVELOPE_READ_SCHEMA, JSON_OPTIONS, SEALED_ENVELOPE_VERSION
from core.sealing import IDENTIFIERS_READ_SCHEMA, opened_identifiers_text, with_identifiers
from core.validation import (
    SEALED_ROOTS,
    RecordLimits,
    SparkRecord,
    field_problems_column,
    opened_root_column,
    record_reason_column,
    valid_instant,
)

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

DATA_KEY_COLUMN = "data_key"
"""The input column holding the subject's data key of each record (null when it has none)."""


def parse_kafka_records(
    kafka_rows: DataFrame,
    limits: RecordLimits,
    subject_keys: DataFrame | None = None,
    keep_identifiers_text: bool = False,
) -> DataFrame:
    """Kafka records of the profiles topic with their parsed (and unsealed) envelope, or the reason it is
    unusable.

    Input: the Kafka source's columns (``key``, ``value``, ``topic``, ``partition``, ``offset``,
    ``timestamp``; others are dropped) and the subjects' data keys: a ``data_key`` column, or a frame
    of (``uuid``, ``data_key``) to join by the record key (``stores.subject_keys.subject_keys_frame``).
    Without either, every sealed record counts as erased. Output: ``OUTPUT_COLUMNS``: ``envelope`` (a
    struct of ``ENVELOPE_READ_SCHEMA``, identifiers unsealed) is set for a usable record,
    ``dead_letter_reason`` for a bad one, and neither for an erased subject's. With
    ``keep_identifiers_text``, an ``identifiers_text`` column follows: the JSON text of the opened
    sealed identifiers (null for a plain envelope), for whoever rebuilds the user as received.
    """
    has_key_column = DATA_KEY_COLUMN in kafka_rows.columns
    records = kafka_rows.select(*_record_columns(has_key_column))
    if subject_keys is not None and not has_key_column:
        # Joined on the record key (the uuid, or the record is a dead letter) before parsing: the join
        # then carries the raw bytes, not the parsed envelope's wide struct (parse of 500k records:
        # 8.5 s -> 7.1 s measured).
        keys = subject_keys.select(F.col("uuid").alias("_key_uuid"), F.col("data_key").alias("_data_key"))
        records = records.drop("_data_key").join(keys, F.col("kafka_key") == F.col("_key_uuid"), "left")
        records = records.drop("_key_uuid")
    parsed = records
    for step in (_parsed_columns, _identifiers_columns, _opened_columns, _problem_columns, _reason_columns):
        parsed = parsed.select(*step(limits))
    return parsed.select(*_output_columns(keep_identifiers_text))


# The expressions of each step are built once per process (functools.cache) and reused on every frame:
# an unresolved Column is bound to no frame, and building these costs thousands of calls into the JVM
# (~0.6 s), which the speed layer would otherwise pay on every micro-batch.


@functools.cache
def _record_columns(has_key_column: bool) -> tuple[Column, ...]:
    data_key = F.col(DATA_KEY_COLUMN) if has_key_column else F.lit(None).cast("binary")
    return (
        F.col("key").cast("string").alias("kafka_key"),
        F.col("value").alias("raw_value"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        data_key.alias("_data_key"),
    )


@functools.cache
def _parsed_columns(_limits: RecordLimits) -> tuple[Column, ...]:
    text = F.col("raw_value").cast("string")
    parsed = F.from_json(text, ENVELOPE_READ_SCHEMA, JSON_OPTIONS)
    return (*_carried(), F.col("_data_key"), text.alias("_text"), parsed.alias("_parsed"))


@functools.cache
def _identifiers_columns(_limits: RecordLimits) -> tuple[Column, ...]:
    envelope = F.col("_parsed")
    is_sealed = envelope.getField("schema_version") == F.lit(SEALED_ENVELOPE_VERSION)
    uuid = envelope.getField("user").getField("login").getField("uuid")
    plaintext = F.when(
        is_sealed, opened_identifiers_text(envelope.getField("sealed"), F.col("_data_key"), uuid)
    )
    return (
        *_carried(),
        F.col("_data_key"),
        F.col("_text"),
        F.col("_parsed"),
        plaintext.alias("_identifiers_text"),
        F.from_json(plaintext, IDENTIFIERS_READ_SCHEMA, JSON_OPTIONS).alias("_identifiers"),
    )


def _record() -> SparkRecord:
    parsed, identifiers = F.col("_parsed"), F.col("_identifiers")
    return SparkRecord(
        parsed=parsed,
        opened={name: F.col(f"_opened_{name}") for name in SEALED_ROOTS},
        text=F.col("_text"),
        corrupt=parsed.getField(CORRUPT_FIELD),
        identifiers_text=F.col("_identifiers_text"),
        identifiers_corrupt=identifiers.getField(CORRUPT_FIELD),
        written_at=F.col("kafka_timestamp"),
    )


_STATE = ("_data_key", "_text", "_parsed", "_identifiers_text", "_identifiers")
"""The columns between the steps, besides the Kafka columns."""


@functools.cache
def _opened_columns(_limits: RecordLimits) -> tuple[Column, ...]:
    parsed, identifiers, text = F.col("_parsed"), F.col("_identifiers"), F.col("_identifiers_text")
    return (
        *_carried(),
        *(F.col(name) for name in _STATE),
        *(
            opened_root_column(name, parsed, identifiers, text).alias(f"_opened_{name}")
            for name in SEALED_ROOTS
        ),
    )


@functools.cache
def _problem_columns(limits: RecordLimits) -> tuple[Column, ...]:
    record = _record()
    return (
        *_carried(),
        *(F.col(name) for name in _STATE),
        *(F.col(f"_opened_{name}") for name in SEALED_ROOTS),
        field_problems_column(record, limits, identity=True).alias("_identity_problems"),
        field_problems_column(record, limits, identity=False).alias("_field_problems"),
    )


@functools.cache
def _reason_columns(limits: RecordLimits) -> tuple[Column, ...]:
    reason = record_reason_column(
        _record(),
        F.col("raw_value"),
        F.col("kafka_key"),
        F.col("_data_key"),
        limits,
        F.col("_identity_problems"),
        F.col("_field_problems"),
    )
    return (
        *_carried(),
        F.col("_data_key"),
        F.col("_parsed"),
        F.col("_identifiers"),
        F.col("_identifiers_text"),
        reason.alias("dead_letter_reason"),
    )


@functools.cache
def _output_columns(keep_identifiers_text: bool) -> tuple[Column, ...]:
    parsed = F.col("_parsed")
    # A plain envelope is kept as it is, without rebuilding its struct.
    opened = F.when(
        F.col("_identifiers_text").isNotNull(),
        parsed.withField("user", with_identifiers(parsed.getField("user"), F.col("_identifiers"))),
    ).otherwise(parsed)
    usable = F.col("dead_letter_reason").isNull() & ~_erased(parsed, F.col("_data_key"))
    extra = (
        (F.when(usable, F.col("_identifiers_text")).alias("identifiers_text"),)
        if keep_identifiers_text
        else ()
    )
    return (*_carried(), F.when(usable, opened).alias("envelope"), F.col("dead_letter_reason"), *extra)


def _erased(envelope: Column, data_key: Column) -> Column:
    """Whether a record without a reason is sealed for a subject whose key is gone (erased, or never
    seen)."""
    is_sealed = envelope.getField("schema_version") == F.lit(SEALED_ENVELOPE_VERSION)
    return F.coalesce(is_sealed & data_key.isNull(), F.lit(False))


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


def fetched_at_column(envelope: Column | None = None) -> Column:
    """The event time of a usable envelope (column ``envelope`` by default): its ``fetched_at``."""
    return valid_instant((F.col("envelope") if envelope is None else envelope).getField("fetched_at"))
