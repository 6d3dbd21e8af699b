"""Derived profile fields, exact ages and bands, the transformed profile and the minimum-age split."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.profile import strip_credentials
from core.pseudonymization import pseudonym
from core.schema import ENVELOPE_SCHEMA, PROFILE_SCHEMA
from core.transformations import (
    AGE_BANDS,
    PROFILE_COLUMNS,
    age,
    age_at,
    age_band,
    age_band_column,
    age_band_of,
    country,
    email_domain,
    full_address,
    gender,
    identifiant,
    nationality,
    registration_date,
    split_by_minimum_age,
    transform_profiles,
)
from tests.randomuser_server import FIXTURES_DIR

FIXTURES = FIXTURES_DIR
USERS: list[dict[str, Any]] = json.loads(
    (FIXTURES / "codeacademyuz__randomuser_me_project__randomusers.json").read_text()
)["results"]
AU, BR, IR, GB = USERS[0], USERS[15], USERS[26], USERS[42]
FETCHED_AT = datetime(2026, 11, 23, 12, 0, 0, 123000, tzinfo=UTC)
PROCESSING_DATE = date(2026, 11, 23)
KEY = b"unit-test-pseudonymization-key"


def envelope_json(user: dict[str, Any], source: str = "randomuser") -> str:
    envelope = {
        "schema_version": 1,
        "source": source,
        "fetched_at": FETCHED_AT.isoformat().replace("+00:00", "Z"),
        "user": strip_credentials(user),
    }
    return json.dumps(envelope, ensure_ascii=False)


def envelopes_frame(spark: SparkSession, users: list[dict[str, Any]]) -> DataFrame:
    """Valid envelopes as ``core.parsing.valid_envelopes`` gives them: envelope, partition, offset."""
    rows = [
        (envelope_json(user, "synthetic" if i == 1 else "randomuser"), 2, i) for i, user in enumerate(users)
    ]
    frame = spark.createDataFrame(rows, "value string, partition int, offset long")
    return frame.select(F.from_json("value", ENVELOPE_SCHEMA).alias("envelope"), "partition", "offset")


def users_frame(spark: SparkSession, users: list[dict[str, Any]]) -> DataFrame:
    """One ``user`` struct column per JSON user (partial users allowed), plus its index ``i``."""
    rows = [(i, json.dumps(user, ensure_ascii=False)) for i, user in enumerate(users)]
    frame = spark.createDataFrame(rows, "i int, json string")
    return frame.select("i", F.from_json("json", PROFILE_SCHEMA).alias("user"))


def expected_profile(
    user: dict[str, Any],
    source: str,
    offset: int,
    age_years: int,
    band: str,
    registered: date,
    address: str,
) -> dict[str, Any]:
    return {
        "uuid": user["login"]["uuid"],
        "fetched_at": FETCHED_AT,
        "source": source,
        "gender": user["gender"],
        "country": user["location"]["country"],
        "nationality": user["nat"],
        "email_domain": "example.com",
        "age": age_years,
        "age_band": band,
        "registration_date": registered,
        "email_pseudonym": pseudonym(user["email"], KEY, "email"),
        "phone_pseudonym": pseudonym(user["phone"], KEY),
        "cell_pseudonym": pseudonym(user["cell"], KEY),
        "address_pseudonym": pseudonym(address, KEY),
        "partition": 2,
        "offset": offset,
    }


@pytest.fixture(scope="module")
def profiles(spark: SparkSession) -> DataFrame:
    return transform_profiles(envelopes_frame(spark, [AU, IR, BR, GB]), KEY)


def test_transform_profiles_columns(profiles: DataFrame) -> None:
    assert tuple(profiles.columns) == PROFILE_COLUMNS
    assert not {"email", "phone", "cell", "full_address", "user", "envelope"} & set(profiles.columns)


def test_transform_profiles_rows(profiles: DataFrame) -> None:
    rows = [row.asDict() for row in profiles.orderBy("offset").collect()]
    for row in rows:
        row["fetched_at"] = row["fetched_at"].astimezone(UTC)  # collected in the local zone, naive
    au_address = "1614 E Sandy Lake Rd, Bendigo, Australian Capital Territory, 2722, Australia"
    ir_address = "8930 هویزه, خوی, قزوین, 74966, Iran"
    br_address = "6335 Rua São Paulo, Paulo Afonso, Acre, 35087, Brazil"  # street name trimmed
    gb_address = "1024 Rectory Lane, Belfast, Cambridgeshire, B4 0JH, United Kingdom"
    assert rows == [
        expected_profile(AU, "randomuser", 0, 34, "25-34", date(2004, 4, 28), au_address),
        expected_profile(IR, "synthetic", 1, 29, "25-34", date(2017, 4, 12), ir_address),
        expected_profile(BR, "randomuser", 2, 82, "65+", date(2017, 7, 23), br_address),
        expected_profile(GB, "randomuser", 3, 60, "55-64", date(2002, 10, 16), gb_address),
    ]


def test_ages_are_taken_at_each_profiles_own_event_date(spark: SparkSession) -> None:
    # The same person fetched the day before and the day of their 18th birthday (UTC): 17, then 18.
    user = {**GB, "dob": {"date": "2008-11-23T09:30:00.000Z", "age": 17}}
    rows = []
    for offset, fetched_at in enumerate(["2026-11-22T23:59:59Z", "2026-11-23T00:00:00Z"]):
        envelope = {"schema_version": 1, "source": "randomuser", "fetched_at": fetched_at, "user": user}
        rows.append((json.dumps(envelope), 0, offset, f"carried {offset}"))
    frame = spark.createDataFrame(rows, "value string, partition int, offset long, note string")
    envelopes = frame.select(
        F.from_json("value", ENVELOPE_SCHEMA).alias("envelope"), "partition", "offset", "note"
    )
    profiles = transform_profiles(envelopes, KEY, carry=("note",))
    assert tuple(profiles.columns) == (*PROFILE_COLUMNS, "note")
    assert [tuple(row) for row in profiles.orderBy("offset").select("age", "age_band", "note").collect()] == [
        (17, "<18", "carried 0"),
        (18, "18-24", "carried 1"),
    ]


def test_no_plaintext_contact_or_address_in_the_output(profiles: DataFrame) -> None:
    values = [str(value) for row in profiles.collect() for value in row]
    for user in (AU, IR, BR, GB):
        for secret in (
            user["email"],
            user["phone"],
            user["cell"],
            user["location"]["street"]["name"].strip(),
        ):
            assert not any(secret in value for value in values), secret


def test_column_functions(spark: SparkSession) -> None:
    user = F.col("user")
    row = (
        users_frame(spark, [IR])
        .select(
            identifiant(user),
            email_domain(user),
            country(user),
            nationality(user),
            gender(user),
            registration_date(user),
            full_address(user),
            age(user, F.lit(PROCESSING_DATE)),
            age_band(user, F.lit(PROCESSING_DATE)),
        )
        .first()
    )
    assert row is not None
    assert row.asDict() == {
        "uuid": "30f39797-3a2d-413a-95bf-6bc979b01a80",
        "email_domain": "example.com",
        "country": "Iran",
        "nationality": "IR",
        "gender": "female",
        "registration_date": date(2017, 4, 12),
        "full_address": "8930 هویزه, خوی, قزوین, 74966, Iran",
        "age": 29,
        "age_band": "25-34",
    }


def test_email_domain_and_full_address_edge_cases(spark: SparkSession) -> None:
    users = [
        {"email": "a@b@Example.COM "},  # the part after the last @, lower-cased
        {"email": "no-at-sign"},
        {"email": "trailing@"},
        {
            "email": None,
            "location": {"street": {"number": 12, "name": " Main St "}, "city": "Oslo", "postcode": 283},
        },  # state and country missing: left out with their separators
    ]
    rows = (
        users_frame(spark, users)
        .orderBy("i")
        .select(email_domain(F.col("user")), full_address(F.col("user")))
        .collect()
    )
    assert [tuple(row) for row in rows] == [
        ("example.com", ""),
        (None, ""),
        (None, ""),
        (None, "12 Main St, Oslo, 283"),
    ]


# (born at, processing date, exact age)
AGE_CASES: list[tuple[datetime, date, int]] = [
    (datetime(2000, 11, 23, 0, 0, tzinfo=UTC), date(2026, 11, 23), 26),  # birthday today
    (datetime(2000, 11, 23, 23, 59, 59, tzinfo=UTC), date(2026, 11, 23), 26),  # today, late UTC
    (datetime(2000, 11, 24, 0, 0, tzinfo=UTC), date(2026, 11, 23), 25),  # birthday tomorrow
    (datetime(2000, 11, 22, 23, 59, 59, tzinfo=UTC), date(2026, 11, 23), 26),  # birthday yesterday
    (datetime(2000, 12, 1, tzinfo=UTC), date(2026, 11, 23), 25),  # a later month
    (datetime(2000, 1, 31, tzinfo=UTC), date(2026, 11, 23), 26),  # an earlier month
    (datetime(2008, 11, 24, tzinfo=UTC), date(2026, 11, 23), 17),  # 18 tomorrow
    (datetime(2000, 2, 29, 12, 0, tzinfo=UTC), date(2027, 2, 28), 26),  # Feb 29, common year: not yet
    (datetime(2000, 2, 29, 12, 0, tzinfo=UTC), date(2027, 3, 1), 27),
    (datetime(2000, 2, 29, 12, 0, tzinfo=UTC), date(2028, 2, 28), 27),
    (datetime(2000, 2, 29, 12, 0, tzinfo=UTC), date(2028, 2, 29), 28),  # leap year: on the day
    (datetime(1944, 10, 15, 4, 7, 34, tzinfo=UTC), date(2026, 10, 15), 82),  # before 1970
    (datetime(2026, 11, 24, tzinfo=UTC), date(2026, 11, 23), -1),  # born after the processing date
]


def test_exact_age(spark: SparkSession) -> None:
    cases = spark.createDataFrame(
        [(i, born, on) for i, (born, on, _) in enumerate(AGE_CASES)], "i int, born timestamp, on date"
    )
    ages = [
        r.age for r in cases.orderBy("i").select(age_at(F.col("born"), F.col("on")).alias("age")).collect()
    ]
    assert ages == [expected for _, _, expected in AGE_CASES]


def test_age_uses_the_utc_date_whatever_the_session_time_zone(spark: SparkSession) -> None:
    # 1996-10-21T23:45:55Z is already the 22nd in Tehran: the age must not change with the session zone.
    user = {"dob": {"date": "1996-10-21T23:45:55.115Z"}, "registered": {"date": "2012-11-30T22:59:18.055Z"}}
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "Asia/Tehran")
    try:
        row = (
            users_frame(spark, [user])
            .select(age(F.col("user"), F.lit(date(2026, 10, 21))), registration_date(F.col("user")))
            .first()
        )
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
    assert row is not None
    assert tuple(row) == (30, date(2012, 11, 30))


AGE_BAND_CASES: list[tuple[int, str]] = [
    (-1, "<18"),
    (0, "<18"),
    (17, "<18"),
    (18, "18-24"),
    (24, "18-24"),
    (25, "25-34"),
    (34, "25-34"),
    (35, "35-44"),
    (44, "35-44"),
    (45, "45-54"),
    (54, "45-54"),
    (55, "55-64"),
    (64, "55-64"),
    (65, "65+"),
    (120, "65+"),
]


@pytest.mark.parametrize(("age_years", "label"), AGE_BAND_CASES)
def test_age_band_of(age_years: int, label: str) -> None:
    assert age_band_of(age_years) == label


def test_age_bands_are_contiguous() -> None:
    assert [label for label, _, _ in AGE_BANDS] == ["<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
    for (_, _, upper), (_, lower, _) in itertools.pairwise(AGE_BANDS):
        assert upper == lower
    assert AGE_BANDS[-1][2] is None


def test_age_band_column_matches_age_band_of(spark: SparkSession) -> None:
    ages: list[int | None] = [age_years for age_years, _ in AGE_BAND_CASES] + [None]
    frame = spark.createDataFrame([(i, a) for i, a in enumerate(ages)], "i int, age int")
    labels = [row[0] for row in frame.orderBy("i").select(age_band_column(F.col("age"))).collect()]
    assert labels == [label for _, label in AGE_BAND_CASES] + [None]


def test_split_by_minimum_age(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [("a", 17), ("b", 18), ("c", 64), ("d", None), ("e", 0)], "uuid string, age int"
    )
    kept, excluded = split_by_minimum_age(frame, 18)
    assert sorted(tuple(row) for row in kept.collect()) == [("b", 18), ("c", 64)]
    assert sorted(row["uuid"] for row in excluded.collect()) == ["a", "d", "e"]
    assert kept.columns == excluded.columns == ["uuid", "age"]
