"""Whether a record of the profiles topic is usable, and why not: the same verdict in Python and in Spark.

The producer validates in Python before it publishes (``envelope_reason``); both layers validate in
Spark what they read from the topic (``core.parsing``, with the column expressions built here). Both
follow ``core.schema.FIELD_RULES`` and the order below, and give the same reason text, so a record is
dead-lettered for the same reason by whichever of them meets it first, and one valid for one of them
is valid for all (``tests/unit/core/test_validation.py`` feeds the same records to both and compares).

A record's reason is the first of:

1. ``empty value``; over ``max_record_bytes``; not UTF-8;
2. not JSON, not a JSON object, or content after the object;
3. no or an unsupported ``schema_version``;
4. its identity (``user``, ``user.login``, ``user.login.uuid``): missing or not a UUID;
5. its Kafka key: none (every copy of a profile must go to the partition of its uuid), or not its uuid;
6. a sealed envelope's identifiers: missing, not a text, or not opening with the subject's data key. A
   record whose subject has no data key any more is not a dead letter: its subject was erased;
7. every other field's problems, in rule order, joined by ``; ``: missing (required), of the wrong
   type, not among the allowed values, not matching the pattern, implausible (a birth before 1900 or
   after the fetch, a fetch time more than ``max_clock_skew_s`` after the record was written).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

from core.schema import (
    ASCII_WHITESPACE,
    CORRUPT_FIELD,
    FIELD_RULES,
    IDENTITY_PATHS,
    ISO_INSTANT_PATTERN,
    JSON_OPTIONS,
    RULES_BY_PATH,
    SEALED_ENVELOPE_VERSION,
    SUPPORTED_ENVELOPE_VERSIONS,
    FieldRule,
)
from core.sealing import open_token, put_back

EMPTY_VALUE = "empty value"
NOT_UTF8 = "not UTF-8"
NOT_JSON = "not JSON"
NOT_JSON_OBJECT = "not JSON: a JSON value that is not an object"
CONTENT_AFTER_OBJECT = "not JSON: content after the object"
MISSING_SCHEMA_VERSION = "missing or invalid schema_version"
UNSUPPORTED_SCHEMA_VERSION = "unsupported schema_version"
NO_KEY = "no Kafka key: the key must be the profile's login.uuid"
KEY_MISMATCH = "the Kafka key is not the profile's login.uuid"
MISSING_SEALED = "sealed: missing"
SEALED_NOT_TEXT = "sealed: not a text value"
CANNOT_UNSEAL = "sealed: does not open with the subject's data key"

MISSING = "missing"
NOT_TEXT = "not a text value"
NOT_INTEGER = "not an integer"
NOT_OBJECT = "not an object"
NOT_INSTANT = "not an ISO-8601 instant"
BEFORE_FETCH = "after fetched_at (in the future when fetched)"
AFTER_WRITE = "in the future (after the record was written)"

ENVELOPE_LEVEL_PATHS = frozenset({"schema_version", "sealed", *IDENTITY_PATHS})
"""Fields checked by the steps before the field rules (3, 4 and 6 above)."""

_JSON_WHITESPACE = " \t\n\r"
_INTEGER_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class RecordLimits:
    """The settings validation depends on (``core.settings.ProfileSettings``)."""

    max_record_bytes: int = 262_144
    max_clock_skew_s: int = 600


def _problem(rule: FieldRule, problem: str) -> str:
    return f"{rule.path}: {problem}"


def size_reason(size: int, limits: RecordLimits) -> str | None:
    """Why a record of ``size`` bytes is refused, if it is."""
    if size > limits.max_record_bytes:
        return f"record over the limit of {limits.max_record_bytes} bytes"
    return None


# --- Python ----------------------------------------------------------------------------------------


class _Absent:
    """A field that is not there (or JSON null)."""


ABSENT = _Absent()


def _value_at(record: Any, path: str) -> Any:
    """The value at ``path``; ``ABSENT`` when it or a parent is missing, null, or not an object."""
    node = record
    for part in path.split("."):
        if not isinstance(node, dict):
            return ABSENT
        node = node.get(part, ABSENT)
        if node is None:
            return ABSENT
    return node


def _text_of(value: Any) -> str | None:
    """The text Spark reads for a JSON scalar (None for an object or array, which is no text).

    Only what the checks look at must agree: whether it is blank (a number or boolean never is), its
    first character, its membership in a set of words and whether it matches a pattern (neither of
    which a number or boolean can).
    """
    if isinstance(value, str):
        return None if value[:1] in ("{", "[") else value
    if isinstance(value, dict | list):
        return None
    return json.dumps(value)


def _is_blank(text: str) -> bool:
    return text.strip(ASCII_WHITESPACE) == ""


@functools.cache
def _python_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def is_uuid(text: str) -> bool:
    """Whether a text is a profile uuid (``user.login.uuid``'s pattern)."""
    return _python_pattern(RULES_BY_PATH["user.login.uuid"].pattern).fullmatch(text) is not None


def parse_instant(text: str) -> datetime | None:
    """The instant an ISO-8601 text of ``ISO_INSTANT_PATTERN`` names, or None."""
    if _python_pattern(ISO_INSTANT_PATTERN).fullmatch(text) is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # a month 13, a 30 February, an hour 24
        return None


def _rule_problem(
    rule: FieldRule, envelope: Mapping[str, Any], written_at: datetime | None, limits: RecordLimits
) -> str | None:
    """The problem of one field of a parsed envelope, if it has one."""
    value = _value_at(envelope, rule.path)
    if value is ABSENT:
        return _problem(rule, MISSING) if rule.required else None
    if rule.kind == "object":
        return None if isinstance(value, dict) else _problem(rule, NOT_OBJECT)
    if rule.kind in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[rule.kind]
        valid = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if valid else _problem(rule, NOT_INTEGER)
    text = _text_of(value)
    if text is None:
        return _problem(rule, NOT_TEXT)
    if rule.required and _is_blank(text):
        return _problem(rule, MISSING)
    if rule.one_of and text not in rule.one_of:
        return _problem(rule, f"not {rule.meaning}")
    if rule.pattern and _python_pattern(rule.pattern).fullmatch(text) is None:
        return _problem(rule, f"not {rule.meaning}")
    if rule.kind == "instant":
        return _instant_problem(rule, text, envelope, written_at, limits)
    return None


def _instant_problem(
    rule: FieldRule, text: str, envelope: Mapping[str, Any], written_at: datetime | None, limits: RecordLimits
) -> str | None:
    instant = parse_instant(text)
    if instant is None:
        return _problem(rule, NOT_INSTANT)
    if rule.not_before and instant < parse_instant(rule.not_before):  # type: ignore[operator]
        return _problem(rule, f"before {rule.not_before[:4]}")
    if rule.not_after:
        other = _value_at(envelope, rule.not_after)
        other_instant = parse_instant(other) if isinstance(other, str) else None
        if other_instant is not None and instant > other_instant:
            return _problem(rule, BEFORE_FETCH)
    skew = timedelta(seconds=limits.max_clock_skew_s)
    if rule.not_after_written and written_at is not None and instant > written_at + skew:
        return _problem(rule, AFTER_WRITE)
    return None


def _field_problems(
    envelope: Mapping[str, Any],
    paths: Callable[[FieldRule], bool],
    written_at: datetime | None,
    limits: RecordLimits,
) -> str | None:
    problems = [
        problem
        for rule in FIELD_RULES
        if paths(rule) and (problem := _rule_problem(rule, envelope, written_at, limits)) is not None
    ]
    return "; ".join(problems) or None


def _version_reason(envelope: Mapping[str, Any]) -> str | None:
    version = envelope.get("schema_version")
    if version is None or _rule_problem(RULES_BY_PATH["schema_version"], envelope, None, RecordLimits()):
        return MISSING_SCHEMA_VERSION
    if version not in SUPPORTED_ENVELOPE_VERSIONS:
        return f"{UNSUPPORTED_SCHEMA_VERSION} {version}"
    return None


def _identity_and_key_reason(envelope: Mapping[str, Any], key: str | None) -> str | None:
    identity = _field_problems(envelope, lambda rule: rule.path in IDENTITY_PATHS, None, RecordLimits())
    if identity is not None:
        return identity
    if key is None:
        return NO_KEY
    if key != envelope["user"]["login"]["uuid"]:
        return KEY_MISMATCH
    return None


def envelope_reason(
    envelope: Mapping[str, Any], key: str | None, written_at: datetime | None, limits: RecordLimits
) -> str | None:
    """Why a parsed envelope with its identifiers in clear (``user`` complete) is not usable, if it is
    not: steps 3, 4, 5 and 7 (the producer checks its envelopes before sealing them)."""
    return (
        _version_reason(envelope)
        or _identity_and_key_reason(envelope, key)
        or _field_problems(envelope, lambda rule: rule.path not in ENVELOPE_LEVEL_PATHS, written_at, limits)
    )


@dataclass(frozen=True)
class Verdict:
    """What validation makes of one record of the topic."""

    reason: str | None
    """Why it is a dead letter; None when it is usable, or when its subject was erased."""
    envelope: dict[str, Any] | None = None
    """The envelope with its identifiers in clear, when it is usable."""

    @property
    def erased(self) -> bool:
        """A sealed record whose subject's data key is gone: neither usable nor a dead letter."""
        return self.reason is None and self.envelope is None


def _parse_json_object(text: str) -> tuple[Any, str | None]:
    """The first JSON value of ``text`` as Spark's JSON reader takes it, or the reason there is none."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    decoder = json.JSONDecoder(parse_constant=refuse_constant)
    stripped = text.lstrip(_JSON_WHITESPACE)
    try:
        value, end = decoder.raw_decode(stripped)
    except (ValueError, RecursionError):
        return None, NOT_JSON
    if not isinstance(value, dict):
        # Spark tells a JSON value from malformed text by parsing it whole: anything after is malformed.
        return None, NOT_JSON_OBJECT if stripped[end:].strip(_JSON_WHITESPACE) == "" else NOT_JSON
    # Spark reads the first JSON value and ignores what follows; both refuse a text that goes on.
    if not text.rstrip(_JSON_WHITESPACE).endswith("}"):
        return None, CONTENT_AFTER_OBJECT
    return value, None


def record_verdict(
    value: bytes | None,
    key: str | None,
    written_at: datetime | None,
    data_key_of: Callable[[str], bytes | None],
    limits: RecordLimits,
) -> Verdict:
    """The verdict on one Kafka record of the profiles topic (its value, key and timestamp), in Python."""
    if not value:
        return Verdict(EMPTY_VALUE)
    if reason := size_reason(len(value), limits):
        return Verdict(reason)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return Verdict(NOT_UTF8)
    envelope, reason = _parse_json_object(text)
    if reason is not None:
        return Verdict(reason)
    if reason := _version_reason(envelope) or _identity_and_key_reason(envelope, key):
        return Verdict(reason)
    if envelope["schema_version"] == SEALED_ENVELOPE_VERSION:
        token = envelope.get("sealed")
        token_text = _text_of(token) if token is not None else None
        if token is None or (token_text is not None and _is_blank(token_text)):
            return Verdict(MISSING_SEALED)
        if token_text is None:
            return Verdict(SEALED_NOT_TEXT)
        data_key = data_key_of(key)  # type: ignore[arg-type]
        if data_key is None:
            return Verdict(None)  # erased subject
        identifiers = open_token(token_text, data_key, key)  # type: ignore[arg-type]
        if identifiers is None:
            return Verdict(CANNOT_UNSEAL)
        envelope = {**envelope, "user": put_back(envelope["user"], identifiers)}
    reason = _field_problems(envelope, lambda rule: rule.path not in ENVELOPE_LEVEL_PATHS, written_at, limits)
    return Verdict(reason) if reason else Verdict(None, envelope)


# --- Spark -----------------------------------------------------------------------------------------


def java_pattern(pattern: str) -> str:
    """A full-match ``rlike`` pattern: Java's ``$`` also matches before a final line break, ``\\z`` not."""
    return f"^(?:{pattern})\\z"


def _first_char_opens_json(text: Column) -> Column:
    return F.substring(text, 1, 1).isin("{", "[")


def instant_column(text: Column) -> Column:
    """The timestamp of an ISO-8601 text of ``ISO_INSTANT_PATTERN`` (null for any other text)."""
    return F.when(text.rlike(java_pattern(ISO_INSTANT_PATTERN)), F.try_to_timestamp(text))


def valid_instant(text: Column) -> Column:
    """The timestamp of an instant field of a usable envelope (validation has checked its form)."""
    return F.try_to_timestamp(text)


SEALED_ROOTS: tuple[str, ...] = tuple(dict.fromkeys(rule.sealed_as for rule in FIELD_RULES if rule.sealed_as))
"""The fields a sealed envelope holds in its identifiers (``core.sealing.SEALED_FIELDS``' last parts)."""


def _sealed_root(rule: FieldRule) -> tuple[str, str, str]:
    """(path of the sealed root in the envelope, its parent's path, the rest of ``rule.path`` below it)."""
    parts = rule.path.split(".")
    root = parts.index(rule.sealed_as)
    return ".".join(parts[: root + 1]), ".".join(parts[:root]), ".".join(parts[root + 1 :])


def opened_root_column(name: str, parsed: Column, identifiers: Column, identifiers_text: Column) -> Column:
    """The sealed field ``name`` (``core.sealing.SEALED_FIELDS``' last parts) of the opened envelope:
    from the identifiers of a sealed envelope, put where ``core.sealing.with_identifiers`` puts them
    (not under a parent that is null), else from the envelope itself."""
    [rule] = [rule for rule in FIELD_RULES if rule.sealed_as == name and rule.name == name]
    root, parent, _ = _sealed_root(rule)
    sealed = F.when(_field(parsed, parent).isNotNull(), identifiers.getField(name))
    return F.when(identifiers_text.isNotNull(), sealed).otherwise(_field(parsed, root))


@dataclass(frozen=True)
class SparkRecord:
    """The columns validation reads of a parsed record."""

    parsed: Column
    """The parsed envelope (``ENVELOPE_READ_SCHEMA``), as read from the record's JSON."""
    opened: Mapping[str, Column]
    """The sealed fields of the opened envelope by name (``opened_root_column``). Columns of their own,
    not read from a rebuilt struct: Spark would paste the whole conditional struct into every
    expression that reads a field of it, and the generated code outgrew the JVM's 64 KB per method."""
    text: Column
    """The record's JSON text."""
    corrupt: Column
    """Spark's corrupt-record field of the envelope's parse: set when some field had the wrong type."""
    identifiers_text: Column
    """The opened identifiers' JSON text (null for a plain envelope, or one that does not open)."""
    identifiers_corrupt: Column
    """The corrupt-record field of the identifiers' parse."""
    written_at: Column
    """The Kafka record's timestamp."""

    def value(self, path: str) -> Column:
        """The field at ``path`` of the opened envelope."""
        rule = RULES_BY_PATH[path]
        if not rule.sealed_as:
            return _field(self.parsed, path)
        _, _, below = _sealed_root(rule)
        root = self.opened[rule.sealed_as]
        return _field(root, below) if below else root


def _json_path(path: str) -> str:
    return "$." + path


def _wrongly_typed(record: SparkRecord, rule: FieldRule, value: Column) -> Column:
    """Whether a non-text field is null because its JSON value had another type (an absent or null
    value is null too, and is no problem). Spark nulls the field and fills the corrupt-record field;
    which field it was is asked of the JSON text, only for such records."""
    in_plain = record.corrupt.isNotNull() & F.get_json_object(record.text, _json_path(rule.path)).isNotNull()
    if rule.sealed_as:
        # A sealed envelope holds the field in its identifiers' JSON, under its ``sealed_as`` key.
        parts = rule.path.split(".")
        sealed_path = _json_path(".".join(parts[parts.index(rule.sealed_as) :]))
        in_sealed = (
            record.identifiers_corrupt.isNotNull()
            & F.get_json_object(record.identifiers_text, sealed_path).isNotNull()
        )
        in_plain = F.when(record.identifiers_text.isNull(), in_plain).otherwise(in_sealed)
    return value.isNull() & in_plain


def _field(envelope: Column, path: str) -> Column:
    column = envelope
    for part in path.split("."):
        column = column.getField(part)
    return column


def _chain(checks: list[tuple[Column, str]]) -> Column:
    """The first problem whose condition holds (null when none does)."""
    condition, problem = checks[0]
    chained = F.when(condition, F.lit(problem))
    for condition, problem in checks[1:]:
        chained = chained.when(condition, F.lit(problem))
    return chained


def _spark_rule_problem(rule: FieldRule, record: SparkRecord, limits: RecordLimits) -> Column:
    """The problem of one field as a string column (null when there is none): ``_rule_problem`` in Spark."""
    value = record.value(rule.path)

    def says(problem: str) -> str:
        return _problem(rule, problem)

    if rule.kind == "object" or rule.kind in _INTEGER_RANGES:
        wrong = NOT_OBJECT if rule.kind == "object" else NOT_INTEGER
        checks = [(_wrongly_typed(record, rule, value), says(wrong))]
        if rule.required:
            checks.append((value.isNull(), says(MISSING)))
        return _chain(checks)
    # A text (or an instant's text): null only when absent; any other JSON value reads as its text.
    checks = [(value.isNull(), says(MISSING))] if rule.required else []
    checks.append((_first_char_opens_json(value), says(NOT_TEXT)))
    if rule.required:
        checks.append((~value.rlike(r"\S"), says(MISSING)))
    if rule.one_of:
        checks.append((~value.isin(*rule.one_of), says(f"not {rule.meaning}")))
    if rule.pattern:
        checks.append((~value.rlike(java_pattern(rule.pattern)), says(f"not {rule.meaning}")))
    if rule.kind == "instant":
        instant = instant_column(value)
        checks.append((instant.isNull(), says(NOT_INSTANT)))
        if rule.not_before:
            earliest = parse_instant(rule.not_before)
            checks.append((instant < F.lit(earliest), says(f"before {rule.not_before[:4]}")))
        if rule.not_after:
            checks.append((instant > instant_column(record.value(rule.not_after)), says(BEFORE_FETCH)))
        if rule.not_after_written:
            skew = F.expr(f"INTERVAL {limits.max_clock_skew_s} SECONDS")
            checks.append((instant > record.written_at + skew, says(AFTER_WRITE)))
    problem = _chain(checks)
    return problem if rule.required else F.when(value.isNotNull(), problem)


def field_problems_column(record: SparkRecord, limits: RecordLimits, identity: bool) -> Column:
    """The problems of the identity fields (``identity``) or of every other field, joined by ``; ``;
    null when there are none."""
    rules = [
        rule
        for rule in FIELD_RULES
        if (rule.path in IDENTITY_PATHS) == identity and (identity or rule.path not in ENVELOPE_LEVEL_PATHS)
    ]
    joined = F.concat_ws("; ", *(_spark_rule_problem(rule, record, limits) for rule in rules))
    return F.nullif(joined, F.lit(""))


def _is_json_object(text: Column) -> Column:
    """Whether a text starts with a JSON object, read as strictly as Python's ``json`` reads it
    (``json_object_keys`` and ``get_json_object`` take single quotes; a map schema fails the query on a
    duplicate key): Spark sets the corrupt-record field for malformed text and for other JSON values."""
    read = F.from_json(text, _CORRUPT_ONLY_SCHEMA, JSON_OPTIONS)
    return read.isNotNull() & read.getField(CORRUPT_FIELD).isNull()


def _is_json_value(text: Column) -> Column:
    """Whether a text is one JSON value, whole (strictly)."""
    wrapped = F.from_json(F.concat(F.lit('{"v":'), text, F.lit("}")), _WRAPPED_SCHEMA, JSON_OPTIONS)
    return wrapped.getField(CORRUPT_FIELD).isNull()


_WRAPPED_SCHEMA = f"v string, {CORRUPT_FIELD} string"
_CORRUPT_ONLY_SCHEMA = f"{CORRUPT_FIELD} string"


def record_reason_column(
    record: SparkRecord,
    value: Column,
    kafka_key: Column,
    data_key: Column,
    limits: RecordLimits,
    identity_problems: Column,
    field_problems: Column,
) -> Column:
    """``record_verdict``'s reason as a column: null when the record is usable or its subject erased.

    ``identity_problems`` and ``field_problems`` are ``field_problems_column``'s, which the caller puts
    in columns of their own (the generated code of one expression holding all of them is too big).
    """
    text = record.text
    version = record.value("schema_version")
    uuid = record.value("user.login.uuid")
    token = record.value("sealed")
    is_sealed = version == F.lit(SEALED_ENVELOPE_VERSION)
    return (
        F.when(value.isNull() | (F.octet_length(value) == 0), F.lit(EMPTY_VALUE))
        .when(
            F.octet_length(value) > F.lit(limits.max_record_bytes),
            F.lit(size_reason(limits.max_record_bytes + 1, limits)),
        )
        .when(~F.is_valid_utf8(text), F.lit(NOT_UTF8))
        .when(
            # Asked only when no schema_version was read or some field could not be: each reads the whole
            # text again. (A syntax error after fields were read can leave them read, schema_version too.)
            (version.isNull() | record.corrupt.isNotNull()) & ~_is_json_object(text),
            F.when(_is_json_value(text), F.lit(NOT_JSON_OBJECT)).otherwise(F.lit(NOT_JSON)),
        )
        .when(~text.rlike("\\}[ \\t\\n\\r]*\\z"), F.lit(CONTENT_AFTER_OBJECT))
        .when(version.isNull(), F.lit(MISSING_SCHEMA_VERSION))
        .when(
            ~version.isin(*SUPPORTED_ENVELOPE_VERSIONS),
            F.concat(F.lit(f"{UNSUPPORTED_SCHEMA_VERSION} "), version.cast("string")),
        )
        .when(identity_problems.isNotNull(), identity_problems)
        .when(kafka_key.isNull(), F.lit(NO_KEY))
        .when(kafka_key != uuid, F.lit(KEY_MISMATCH))
        .when(is_sealed & (token.isNull() | ~token.rlike(r"\S")), F.lit(MISSING_SEALED))
        .when(is_sealed & _first_char_opens_json(token), F.lit(SEALED_NOT_TEXT))
        .when(is_sealed & data_key.isNull(), F.lit(None).cast("string"))  # erased: not a dead letter
        .when(is_sealed & record.identifiers_text.isNull(), F.lit(CANNOT_UNSEAL))
        .otherwise(field_problems)
    )
