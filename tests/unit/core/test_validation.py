"""One validation, two implementations: the same records give the same verdict and reason in Python
(the producer) and in Spark (both layers).

Hand-picked records cover each rule and the edges where Python's ``json``/``re``/``datetime`` and
Spark's JSON reader, regular expressions and timestamp parsing differ; hypothesis then mutates real
profiles at every field of ``core.schema.FIELD_RULES`` (other JSON types, nulls, blanks, removed
fields, odd texts and instants, sealed or not) and compares the two verdicts on each.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession

from core.parsing import parse_kafka_records
from core.profile import strip_credentials
from core.schema import FIELD_RULES, NATIONALITIES
from core.sealing import new_data_key, seal_identifiers
from core.validation import RecordLimits, record_verdict
from tests.randomuser_server import FIXTURES_DIR, fixture_users

LIMITS = RecordLimits(max_record_bytes=20_000, max_clock_skew_s=600)
WRITTEN_AT = datetime(2026, 11, 23, 12, 0, 1, tzinfo=UTC)
FETCHED_AT = "2026-11-23T12:00:00.123Z"
USERS = fixture_users("codeacademyuz__randomuser_me_project__randomusers.json")
SEALING_KEY = new_data_key()


@dataclass(frozen=True)
class Record:
    """A Kafka record to validate, and whether its subject has a data key."""

    value: bytes | None
    key: str | None
    has_data_key: bool = True
    written_at: datetime = WRITTEN_AT


def envelope_of(user: Any, **overrides: Any) -> dict[str, Any]:
    envelope = {
        "schema_version": 1,
        "source": "randomuser",
        "api_version": "1.4",
        "fetched_at": FETCHED_AT,
        "user": strip_credentials(user),
    }
    envelope.update(overrides)
    return envelope


def sealed_envelope(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope as the producer publishes it (version 2), identifiers sealed under ``SEALING_KEY``."""
    remaining, token = seal_identifiers(envelope["user"], SEALING_KEY)
    return {**envelope, "schema_version": 2, "user": remaining, "sealed": token}


def record(envelope: Any, key: str | None = "", **kwargs: Any) -> Record:
    """A record of ``envelope`` keyed by its uuid (or by ``key`` when given)."""
    if key == "":
        try:
            key = envelope["user"]["login"]["uuid"]
        except (KeyError, TypeError):
            key = None
        key = key if isinstance(key, str) else None
    return Record(json.dumps(envelope, ensure_ascii=False).encode(), key, **kwargs)


def changed(envelope: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``envelope`` with ``path`` set to ``value`` (removed for ``...``), parents created."""
    result = copy.deepcopy(envelope)
    *parents, last = path.split(".")
    node = result
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return result


def python_verdicts(records: Sequence[Record]) -> list[tuple[str | None, bool]]:
    verdicts = []
    for item in records:
        verdict = record_verdict(
            item.value,
            item.key,
            item.written_at,
            lambda _uuid, item=item: SEALING_KEY if item.has_data_key else None,
            LIMITS,
        )
        verdicts.append((verdict.reason, verdict.envelope is not None))
    return verdicts


def spark_verdicts(spark: SparkSession, records: Sequence[Record]) -> list[tuple[str | None, bool]]:
    rows = [
        (
            item.key.encode() if item.key is not None else None,
            item.value,
            "profiles",
            0,
            offset,
            item.written_at,
            SEALING_KEY if item.has_data_key else None,
        )
        for offset, item in enumerate(records)
    ]
    frame = spark.createDataFrame(
        rows,
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
        "data_key binary",
    )
    parsed = parse_kafka_records(frame, LIMITS).select("offset", "dead_letter_reason", frame_usable())
    by_offset = {row.offset: (row.dead_letter_reason, row.usable) for row in parsed.collect()}
    return [by_offset[offset] for offset in range(len(records))]


def frame_usable() -> Any:
    from pyspark.sql import functions as F

    return F.col("envelope").isNotNull().alias("usable")


def assert_same_verdicts(spark: SparkSession, records: Sequence[Record]) -> None:
    python, spark_side = python_verdicts(records), spark_verdicts(spark, records)
    differing = [
        (item.value[:300] if item.value else item.value, item.key, p, s)
        for item, p, s in zip(records, python, spark_side, strict=True)
        if p != s
    ]
    assert not differing, "\n".join(
        f"{value!r} key={key}: python {p}, spark {s}" for value, key, p, s in differing
    )


# -- hand-picked records ------------------------------------------------------------------------------

BASE = envelope_of(USERS[0])
UUID = BASE["user"]["login"]["uuid"]


def hand_picked() -> list[tuple[str, Record, str | None]]:
    """(what, record, expected reason); expected None means usable."""
    over_size = envelope_of(USERS[1], padding="x" * 25_000)
    cases: list[tuple[str, Record, str | None]] = [
        ("valid", record(BASE), None),
        ("valid, sealed", record(sealed_envelope(BASE)), None),
        ("every recorded profile", record(envelope_of(USERS[26])), None),
        ("empty value", Record(b"", None), "empty value"),
        ("no value", Record(None, None), "empty value"),
        ("over the size limit", record(over_size), "record over the limit of 20000 bytes"),
        ("not UTF-8", Record(b'{"a": "\xff\xfe"}', UUID), "not UTF-8"),
        ("UTF-8 surrogate", Record(b'{"a": "\xed\xa0\x80"}', UUID), "not UTF-8"),
        ("not JSON", Record(b"not json at all", None), "not JSON"),
        ("single quotes", Record(b"{'schema_version': 1}", UUID), "not JSON"),
        ("NaN", Record(b'{"schema_version": NaN}', UUID), "not JSON"),
        ("JSON array", Record(b"[1, 2, 3]", None), "not JSON: a JSON value that is not an object"),
        ("JSON null", Record(b"null", None), "not JSON: a JSON value that is not an object"),
        (
            "content after",
            Record(json.dumps(BASE).encode() + b" trailing", UUID),
            "not JSON: content after the object",
        ),
        ("truncated", Record(json.dumps(BASE).encode()[:-25], UUID), "not JSON"),
        ("empty object", Record(b"{}", None), "missing or invalid schema_version"),
        (
            "version text",
            record(envelope_of(USERS[0], schema_version="1")),
            "missing or invalid schema_version",
        ),
        ("version 99", record(envelope_of(USERS[0], schema_version=99)), "unsupported schema_version 99"),
        ("no uuid", record(changed(BASE, "user.login.uuid", ...)), "user.login.uuid: missing"),
        (
            "uuid not a UUID",
            record(changed(BASE, "user.login.uuid", "not-a-uuid")),
            "user.login.uuid: not a UUID",
        ),
        (
            "uuid upper case",
            record(changed(BASE, "user.login.uuid", UUID.upper())),
            "user.login.uuid: not a UUID",
        ),
        (
            "uuid with a line break",
            record(changed(BASE, "user.login.uuid", UUID + "\n")),
            "user.login.uuid: not a UUID",
        ),
        ("user a string", record(envelope_of("a string")), "user: not an object; user.login.uuid: missing"),
        ("no key", record(BASE, key=None), "no Kafka key: the key must be the profile's login.uuid"),
        ("other key", record(BASE, key="not-" + UUID), "the Kafka key is not the profile's login.uuid"),
        ("sealed, no token", record({**sealed_envelope(BASE), "sealed": None}), "sealed: missing"),
        (
            "sealed, token object",
            record({**sealed_envelope(BASE), "sealed": {"a": 1}}),
            "sealed: not a text value",
        ),
        (
            "sealed, wrong token",
            record({**sealed_envelope(BASE), "sealed": "AAAA" * 12}),
            "sealed: does not open with the subject's data key",
        ),
        ("sealed, erased", record(sealed_envelope(BASE), has_data_key=False), None),
        (
            "birth in the future",
            record(changed(BASE, "user.dob.date", "2099-01-01T00:00:00.000Z")),
            "user.dob.date: after fetched_at (in the future when fetched)",
        ),
        (
            "birth before 1900",
            record(changed(BASE, "user.dob.date", "1850-01-01T00:00:00Z")),
            "user.dob.date: before 1900",
        ),
        (
            "birth unparsable",
            record(changed(BASE, "user.dob.date", "last tuesday")),
            "user.dob.date: not an ISO-8601 instant",
        ),
        (
            "birth a number",
            record(changed(BASE, "user.dob.date", 12345)),
            "user.dob.date: not an ISO-8601 instant",
        ),
        (
            "birth 30 February",
            record(changed(BASE, "user.dob.date", "1990-02-30T00:00:00Z")),
            "user.dob.date: not an ISO-8601 instant",
        ),
        (
            "birth without zone",
            record(changed(BASE, "user.dob.date", "1990-02-03T00:00:00")),
            "user.dob.date: not an ISO-8601 instant",
        ),
        (
            "birth, offset +19:00",
            record(changed(BASE, "user.dob.date", "1990-02-03T00:00:00+19:00")),
            "user.dob.date: not an ISO-8601 instant",
        ),
        (
            "birth, offset +05:30",
            record(changed(BASE, "user.dob.date", "1990-02-03T00:00:00.1234567+05:30")),
            None,
        ),
        (
            "fetched far ahead",
            record(envelope_of(USERS[0], fetched_at="2026-11-23T12:30:00Z")),
            "fetched_at: in the future (after the record was written)",
        ),
        (
            "postcode object",
            record(changed(BASE, "user.location.postcode", {"code": 1})),
            "user.location.postcode: not a text value",
        ),
        ("postcode number", record(changed(BASE, "user.location.postcode", 5440)), None),
        (
            "postcode text like an object",
            record(changed(BASE, "user.location.postcode", "{5440")),
            "user.location.postcode: not a text value",
        ),
        (
            "nested nulls",
            record(changed(changed(BASE, "user.dob", None), "user.location.country", None)),
            "user.location.country: missing; user.dob.date: missing",
        ),
        (
            "wrong types",
            record(changed(changed(BASE, "user.dob.age", "old"), "user.location.street.number", 1.5)),
            "user.location.street.number: not an integer; user.dob.age: not an integer",
        ),
        ("age out of range", record(changed(BASE, "user.dob.age", 2**31)), "user.dob.age: not an integer"),
        ("age true", record(changed(BASE, "user.dob.age", True)), "user.dob.age: not an integer"),
        (
            "street a string",
            record(changed(BASE, "user.location.street", "8929 Valwood Pkwy")),
            "user.location.street: not an object",
        ),
        (
            "name a string, sealed",
            record(sealed_envelope(changed(BASE, "user.name", "Jo"))),
            "user.name: not an object",
        ),
        (
            "street number text, sealed",
            record(sealed_envelope(changed(BASE, "user.location.street.number", "12"))),
            "user.location.street.number: not an integer",
        ),
        ("gender other", record(changed(BASE, "user.gender", "other")), "user.gender: not male or female"),
        ("gender number", record(changed(BASE, "user.gender", 1)), "user.gender: not male or female"),
        (
            "blank country",
            record(changed(BASE, "user.location.country", " \t")),
            "user.location.country: missing",
        ),
        ("country a number", record(changed(BASE, "user.location.country", 44)), None),
        (
            "nat lower case",
            record(changed(BASE, "user.nat", "us")),
            "user.nat: not a nationality code of the API",
        ),
        (
            "e-mail without domain",
            record(changed(BASE, "user.email", "jane@example")),
            "user.email: not an e-mail address",
        ),
        (
            "e-mail with a no-break space",
            record(changed(BASE, "user.email", "ja ne@example.com".replace(" ", "\u00a0"))),
            None,
        ),
        (
            "e-mail object",
            record(changed(BASE, "user.email", {"a": "b@c.de"})),
            "user.email: not a text value",
        ),
        ("API version 1.3", record(envelope_of(USERS[0], api_version="1.3")), None),
        (
            "API version 2.0",
            record(envelope_of(USERS[0], api_version="2.0")),
            "api_version: not an API version from 1.0 to 1.4",
        ),
        ("no registered (1.3)", record(changed(BASE, "user.registered", ...)), None),
        ("no name, no picture", record(changed(changed(BASE, "user.name", ...), "user.picture", ...)), None),
        ("no source", record(changed(BASE, "source", ...)), "source: missing"),
        ("no fetched_at", record(changed(BASE, "fetched_at", ...)), "fetched_at: missing"),
        (
            "duplicate keys, last wins",
            Record(json.dumps(BASE).encode()[:-1] + b', "source": ""}', UUID),
            "source: missing",
        ),
    ]
    return cases


@pytest.mark.parametrize("what", [what for what, _, _ in hand_picked()])
def test_python_gives_the_expected_reason(what: str) -> None:
    [(_, item, expected)] = [case for case in hand_picked() if case[0] == what]
    reason, usable = python_verdicts([item])[0]
    assert reason == expected
    assert usable == (expected is None and what != "sealed, erased")


def test_spark_gives_the_same_verdicts_as_python_on_hand_picked_records(spark: SparkSession) -> None:
    assert_same_verdicts(spark, [item for _, item, _ in hand_picked()])


def test_every_recorded_profile_is_valid_in_both(spark: SparkSession) -> None:
    records = [record(envelope_of(user)) for user in USERS]
    assert python_verdicts(records) == [(None, True)] * len(USERS)
    assert_same_verdicts(spark, records)


# -- generated records -----------------------------------------------------------------------------

TEXTS = st.sampled_from(
    ["", " ", "\t\n", "x", "{x", "[1", "male", "female", "US", "us", UUID, UUID.upper(), "a@b.co",
     "a @b.co", "a@b", "Ünïcödé", "ایران", "12", "-3", "1990-02-03T00:00:00Z", "1990-02-03T00:00:00",
     "0990-02-03T00:00:00Z", "2026-11-23T12:09:59.999Z", "2026-11-23T12:10:02Z", "1899-12-31T23:59:59Z",
     "1990-13-03T00:00:00Z", "1990-02-03T24:00:00Z", "1990-02-03T10:00:00-18:00", "1.4", "1.0", "2.0",
     "x\n"]
)  # fmt: skip
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXTS,
    st.text(max_size=5),
    st.just({}),
    st.just({"a": 1}),
    st.just([]),
    st.just([1, "x"]),
)
PATHS = st.sampled_from([rule.path for rule in FIELD_RULES if rule.path not in ("schema_version", "sealed")])


@st.composite
def mutated_records(draw: st.DrawFn) -> Record:
    envelope = envelope_of(copy.deepcopy(draw(st.sampled_from(USERS))))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        path = draw(PATHS)
        envelope = changed(envelope, path, draw(st.one_of(st.just(...), JSON_VALUES)))
    sealed = draw(st.booleans()) and isinstance(envelope.get("user"), dict)
    if (
        sealed
        and isinstance(envelope["user"].get("login"), dict)
        and isinstance(envelope["user"]["login"].get("uuid"), str)
    ):
        envelope = sealed_envelope(envelope)
    key_choice = draw(st.sampled_from(["uuid", "uuid", "uuid", "none", "other"]))
    item = record(envelope, key=None if key_choice == "none" else ("other" if key_choice == "other" else ""))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        cut = draw(st.integers(min_value=0, max_value=len(item.value or b"")))
        item = Record(
            (item.value or b"")[:cut] + draw(st.sampled_from([b"", b" ", b"}", b"\xff", b" x"])), item.key
        )
    return Record(item.value, item.key, has_data_key=draw(st.booleans()) or not sealed)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(records=st.lists(mutated_records(), min_size=40, max_size=60))
def test_spark_gives_the_same_verdicts_as_python_on_mutated_profiles(
    spark: SparkSession, records: list[Record]
) -> None:
    assert_same_verdicts(spark, records)


def test_nationalities_of_the_rules_are_those_of_the_api() -> None:
    assert "US" in NATIONALITIES and len(NATIONALITIES) == 21


def recorded_responses() -> dict[str, list[dict[str, Any]]]:
    """Every recorded response's users by API version (1.0 to 1.4)."""
    by_version: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(FIXTURES_DIR.glob("*.json")):
        body = json.loads(path.read_bytes())
        if "results" in body:
            by_version.setdefault(body["info"]["version"], []).extend(body["results"])
    return by_version


def test_profiles_of_every_api_version_are_taken_when_they_have_what_the_platform_needs(
    spark: SparkSession,
) -> None:
    by_version = recorded_responses()
    assert sorted(by_version) == ["1.0", "1.1", "1.2", "1.3", "1.4"]
    records = [
        record(envelope_of(user, api_version=version))
        for version in sorted(by_version)
        for user in by_version[version]
    ]
    verdicts = python_verdicts(records)
    reasons: dict[str, set[str | None]] = {}
    for version, (reason, _) in zip(
        [v for v in sorted(by_version) for _ in by_version[v]], verdicts, strict=True
    ):
        reasons.setdefault(version, set()).add(reason)
    # 1.3 and 1.4 have every field the platform needs; older versions lack the uuid (1.0, 1.1) or the
    # country (1.0 to 1.2), and the reason says which.
    assert reasons["1.4"] == {None} and reasons["1.3"] == {None}
    assert all(reason and "user.location.country: missing" in reason for reason in reasons["1.2"])
    assert all(reason and reason.startswith("user.login.uuid: missing") for reason in reasons["1.1"])
    assert all(reason and reason.startswith("user.login.uuid: missing") for reason in reasons["1.0"])
    assert_same_verdicts(spark, records)
