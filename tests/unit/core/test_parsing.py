"""Schemas of the envelope and profile, and the parsing of Kafka records into envelopes or dead letters."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructType,
    TimestampType,
)

from core.parsing import (
    OUTPUT_COLUMNS,
    dead_letter_records,
    parse_kafka_records,
    valid_envelopes,
)
from core.profile import strip_credentials
from core.schema import ENVELOPE_READ_SCHEMA, ENVELOPE_SCHEMA, PROFILE_SCHEMA
from core.validation import RecordLimits
from tests.randomuser_server import FIXTURES_DIR

FIXTURES = FIXTURES_DIR
FETCHED_AT = datetime(2026, 11, 23, 12, 0, 0, 123000, tzinfo=UTC)
KAFKA_TIMESTAMP = datetime(2026, 11, 23, 12, 0, 1, tzinfo=UTC)
KAFKA_SCHEMA = ", ".join(
    ("key binary", "value binary", "topic string", "partition int", "offset long", "timestamp timestamp")
)

USERS: list[dict[str, Any]] = json.loads(
    (FIXTURES / "codeacademyuz__randomuser_me_project__randomusers.json").read_text()
)["results"]
AU, NL, IR, GB = (
    USERS[0],
    USERS[5],
    USERS[26],
    USERS[42],
)  # int postcode, "3315 DJ", Persian + null id, "B4 0JH"


def envelope_bytes(user: Any, strip: bool = True, **overrides: Any) -> bytes:
    """The value the producer publishes for ``user`` (credentials removed), with fields overridden."""
    envelope = {
        "schema_version": 1,
        "source": "randomuser",
        "fetched_at": FETCHED_AT.isoformat().replace("+00:00", "Z"),
        "user": strip_credentials(user) if strip else user,
    }
    envelope.update(overrides)
    return json.dumps(envelope, ensure_ascii=False).encode()


def uuid_of(user: dict[str, Any]) -> bytes:
    return user["login"]["uuid"].encode()


def with_change(user: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``user`` with the dotted ``path`` set to ``value`` (removed when value is ...)."""
    changed = copy.deepcopy(user)
    *parents, last = path.split(".")
    target = changed
    for part in parents:
        target = target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return changed


def kafka_frame(spark: SparkSession, records: list[tuple[bytes | None, bytes | None]]) -> DataFrame:
    """Rows shaped like the Kafka source's, one per (key, value), offsets 0, 1, 2..."""
    rows = [
        (key, value, "users.profiles", 1, offset, KAFKA_TIMESTAMP)
        for offset, (key, value) in enumerate(records)
    ]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


# (case, key, value, expected reason); offsets follow the list order.
CASES: list[tuple[str, bytes | None, bytes | None, str | None]] = [
    ("AU, int postcode", uuid_of(AU), envelope_bytes(AU), None),
    ("NL, string postcode", uuid_of(NL), envelope_bytes(NL), None),
    ("IR, Persian, id.value null", uuid_of(IR), envelope_bytes(IR), None),
    ("GB, still carrying credentials", uuid_of(GB), envelope_bytes(GB, strip=False), None),
    (
        "unknown extra fields",
        uuid_of(AU),
        envelope_bytes(with_change(AU, "extra", {"x": 1}), extra=[1]),
        None,
    ),
    ("not JSON", uuid_of(AU), b"not json {", "not JSON"),
    ("truncated JSON", uuid_of(AU), envelope_bytes(AU)[:-20], "not JSON"),
    (
        "JSON cut after a valid schema_version",  # from_json must not give a partial envelope
        uuid_of(AU),
        b'{"schema_version": 1, "fetched_at": "2026-11-23T10:00:00Z", "user": {"gender": "female"',
        "not JSON",
    ),
    (
        "JSON array",
        uuid_of(AU),
        b"[" + envelope_bytes(AU) + b"]",
        "not JSON: a JSON value that is not an object",
    ),
    ("JSON string", None, b'"hello"', "not JSON: a JSON value that is not an object"),
    ("empty bytes", uuid_of(AU), b"", "empty value"),
    ("null value", uuid_of(AU), None, "empty value"),
    (
        "no schema_version",
        uuid_of(AU),
        envelope_bytes(AU, schema_version=None),
        "missing or invalid schema_version",
    ),
    (
        "wrong schema_version",
        uuid_of(AU),
        envelope_bytes(AU, schema_version=3),
        "unsupported schema_version 3",
    ),
    ("missing uuid", None, envelope_bytes(with_change(AU, "login.uuid", ...)), "user.login.uuid: missing"),
    ("blank uuid", None, envelope_bytes(with_change(AU, "login.uuid", " ")), "user.login.uuid: missing"),
    ("user not an object", None, envelope_bytes("nobody"), "user: not an object; user.login.uuid: missing"),
    ("key mismatch", uuid_of(IR), envelope_bytes(AU), "the Kafka key is not the profile's login.uuid"),
    ("no key", None, envelope_bytes(AU), "no Kafka key: the key must be the profile's login.uuid"),
    (
        "dob last tuesday",
        uuid_of(AU),
        envelope_bytes(with_change(AU, "dob.date", "last tuesday")),
        "user.dob.date: not an ISO-8601 instant",
    ),
    ("missing nat", uuid_of(AU), envelope_bytes(with_change(AU, "nat", ...)), "user.nat: missing"),
    (
        "unknown nat",
        uuid_of(AU),
        envelope_bytes(with_change(AU, "nat", "XX")),
        "user.nat: not a nationality code of the API",
    ),
    (
        "gender",
        uuid_of(AU),
        envelope_bytes(with_change(AU, "gender", "robot")),
        "user.gender: not male or female",
    ),
    (
        "e-mail",
        uuid_of(AU),
        envelope_bytes(with_change(AU, "email", "leon")),
        "user.email: not an e-mail address",
    ),
    ("fetched_at", uuid_of(AU), envelope_bytes(AU, fetched_at="soon"), "fetched_at: not an ISO-8601 instant"),
    (
        "several fields",
        uuid_of(AU),
        envelope_bytes(with_change(with_change(AU, "gender", ...), "dob", {"date": 1})),
        "user.gender: missing; user.dob.date: not an ISO-8601 instant",
    ),
    (
        "optional fields missing (API 1.3 without registered, no name)",
        uuid_of(AU),
        envelope_bytes(with_change(with_change(AU, "name", {"first": ""}), "registered", ...)),
        None,
    ),
]


@pytest.fixture(scope="module")
def parsed(spark: SparkSession) -> DataFrame:
    return parse_kafka_records(
        kafka_frame(spark, [(key, value) for _, key, value, _ in CASES]), RecordLimits()
    )


@pytest.fixture(scope="module")
def parsed_rows(parsed: DataFrame) -> dict[int, Row]:
    """The parsed rows by offset (one Spark job for every case)."""
    return {row["offset"]: row for row in parsed.collect()}


def test_profile_schema_is_tolerant_where_the_api_varies() -> None:
    location = PROFILE_SCHEMA["location"].dataType
    assert isinstance(location, StructType)
    assert location["postcode"].dataType == StringType()
    assert location["street"].dataType["number"].dataType == LongType()
    assert location["coordinates"].dataType["latitude"].dataType == StringType()
    assert location["timezone"].dataType["offset"].dataType == StringType()
    assert PROFILE_SCHEMA["id"].dataType["value"].nullable
    # Instants are read as text and parsed by validation (Spark would take a number as epoch seconds).
    assert PROFILE_SCHEMA["dob"].dataType["date"].dataType == StringType()
    assert PROFILE_SCHEMA["registered"].dataType["date"].dataType == StringType()
    assert ENVELOPE_SCHEMA["fetched_at"].dataType == StringType()
    assert ENVELOPE_SCHEMA["schema_version"].dataType == IntegerType()
    assert ENVELOPE_SCHEMA["user"].dataType == PROFILE_SCHEMA


def test_profile_schema_has_no_credential_column() -> None:
    assert PROFILE_SCHEMA["login"].dataType.fieldNames() == ["uuid", "username"]


def test_output_columns_and_types(parsed: DataFrame) -> None:
    assert tuple(parsed.columns) == OUTPUT_COLUMNS
    types = {field.name: field.dataType for field in parsed.schema.fields}
    assert types["kafka_key"] == StringType()
    assert types["raw_value"] == BinaryType()
    assert types["partition"] == IntegerType()
    assert types["offset"] == LongType()
    assert types["kafka_timestamp"] == TimestampType()
    assert types["envelope"] == ENVELOPE_READ_SCHEMA
    assert types["dead_letter_reason"] == StringType()


@pytest.mark.parametrize(("offset", "case"), [(offset, case[0]) for offset, case in enumerate(CASES)])
def test_dead_letter_reason(parsed_rows: dict[int, Row], offset: int, case: str) -> None:
    _, key, value, reason = CASES[offset]
    row = parsed_rows[offset]
    assert row["dead_letter_reason"] == reason
    assert (row["envelope"] is None) == (reason is not None)  # an envelope exactly when valid
    assert row["raw_value"] == (None if value is None else bytearray(value))
    assert row["kafka_key"] == (None if key is None else key.decode())
    assert (row["topic"], row["partition"]) == ("users.profiles", 1)
    assert row["kafka_timestamp"].astimezone(UTC) == KAFKA_TIMESTAMP


def test_valid_envelope_fields(parsed_rows: dict[int, Row]) -> None:
    au, nl, ir, gb = (parsed_rows[offset]["envelope"] for offset in range(4))
    assert (au["schema_version"], au["source"]) == (1, "randomuser")
    assert au["fetched_at"] == "2026-11-23T12:00:00.123000Z"
    assert au["user"]["location"]["postcode"] == "2722"  # a JSON int keeps its text
    assert au["user"]["location"]["street"] == Row(number=1614, name="E Sandy Lake Rd")
    assert au["user"]["location"]["coordinates"] == Row(latitude="-86.3514", longitude="-12.4758")
    assert au["user"]["location"]["timezone"]["offset"] == "+1:00"
    assert au["user"]["dob"]["date"] == "1992-03-18T17:36:00.197Z"
    assert au["user"]["dob"]["age"] == 31
    assert au["user"]["login"] == Row(uuid="9a723211-0e87-41f1-b1e4-ed1a15226b80", username="tinyfish925")
    assert nl["user"]["location"]["postcode"] == "3315 DJ"
    assert gb["user"]["location"]["postcode"] == "B4 0JH"
    assert ir["user"]["name"] == Row(title="Ms", first="یسنا", last="کامروا")
    assert ir["user"]["location"]["city"] == "خوی"
    assert ir["user"]["id"] == Row(name="", value=None)
    assert ir["user"]["nat"] == "IR"


def test_credentials_never_reach_a_column(parsed: DataFrame) -> None:
    # Row 3 still carries GB's credentials in its raw value; the parsed envelope must not.
    envelope_json = parsed.where(F.col("offset") == 3).select(F.to_json("envelope")).first()[0]
    assert GB["login"]["uuid"] in envelope_json
    for field in ("password", "salt", "md5", "sha1", "sha256"):
        assert field not in envelope_json
        assert GB["login"][field] not in envelope_json


def test_valid_envelopes_and_dead_letter_records_split_the_records(parsed: DataFrame) -> None:
    valid = sorted(row["offset"] for row in valid_envelopes(parsed).select("offset").collect())
    dead = sorted(row["offset"] for row in dead_letter_records(parsed).select("offset").collect())
    assert valid == [offset for offset, case in enumerate(CASES) if case[3] is None]
    assert dead == [offset for offset, case in enumerate(CASES) if case[3] is not None]


def test_parsing_works_on_a_stream(spark: SparkSession) -> None:
    stream = spark.readStream.format("rate").load()
    assert parse_kafka_records(
        stream.select(
            F.lit(None).cast("binary").alias("key"),
            F.lit(envelope_bytes(AU)).alias("value"),
            F.lit("users.profiles").alias("topic"),
            F.lit(0).alias("partition"),
            F.col("value").alias("offset"),
            F.col("timestamp"),
        ),
        RecordLimits(),
    ).isStreaming
