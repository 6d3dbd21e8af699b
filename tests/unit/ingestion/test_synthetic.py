from __future__ import annotations

import hashlib
import json
import re
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import cache
from math import log, sqrt
from statistics import NormalDist
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.profile import CREDENTIAL_FIELDS, profile_reason, strip_credentials
from core.schema import NATIONALITIES
from core.transformations import age_band_of
from core.validation import RecordLimits
from ingestion.sources import ProfileSource
from ingestion.synthetic import TIMEZONES, SyntheticSource, _email_part
from tests.randomuser_server import FIXTURES_DIR

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
FIXTURES = FIXTURES_DIR
RECORDED = FIXTURES / "codeacademyuz__randomuser_me_project__randomusers.json"


def valid(user: dict[str, Any]) -> str | None:
    """Why the producer would not publish a generated user (None: it would)."""
    return profile_reason(user, "synthetic", datetime.now(UTC), RecordLimits(), api_version="1.4")


NULL_ID_NATS = {"IR", "NZ", "TR", "UA"}
STRING_POSTCODE_NATS = {"CA", "GB", "NL", "NO"}
ISO_MILLIS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
API_14_NATIONALITIES = frozenset({
    "AU", "BR", "CA", "CH", "DE", "DK", "ES", "FI", "FR", "GB", "IE",
    "IN", "IR", "MX", "NL", "NO", "NZ", "RS", "TR", "UA", "US",
})  # fmt: skip
"""The API's 1.4 nationalities (its ``api/1.4/data`` folders, API-NOTES.md), apart from core.schema."""
AGE_DAYS = (NOW.date(), date(2026, 6, 15))
"""Days on which both sides are aged: in 2024 both fill 18-24; by mid-2026 neither does (born by 2001)."""
SIGNIFICANCE = 0.001
"""The chance that a comparison of recorded and synthetic data below fails although both follow one law."""


@cache
def recorded_users() -> tuple[dict[str, Any], ...]:
    """The users of a real 1.4 response covering all 21 nationalities."""
    return tuple(json.loads(RECORDED.read_text(encoding="utf-8"))["results"])


@cache
def recorded_responses() -> tuple[dict[str, Any], ...]:
    """Every recorded response with users (any API version; the error body is left out)."""
    responses = (json.loads(path.read_text(encoding="utf-8")) for path in sorted(FIXTURES.glob("*.json")))
    return tuple(response for response in responses if "results" in response)


@cache
def recorded_14_users() -> tuple[dict[str, Any], ...]:
    """The users of every recorded 1.4 response: the version whose distributions the source copies."""
    users = tuple(
        user
        for response in recorded_responses()
        if response["info"]["version"] == "1.4"
        for user in response["results"]
    )
    assert len(users) >= 100  # enough for the comparisons below to mean something
    return users


@cache
def synthetic_users() -> tuple[dict[str, Any], ...]:
    """An unfiltered synthetic sample, large enough to reach every value the generator can draw."""
    source = SyntheticSource("distributions", now=NOW)
    return tuple(source.next_batch(5000) + source.next_batch(5000))


def recorded_user(nat: str) -> dict[str, Any]:
    return next(user for user in recorded_users() if user["nat"] == nat)


def structure(value: Any) -> Any:
    """Nested key order with leaf type names: what a consumer's parser sees, without the values."""
    if isinstance(value, dict):
        return [(key, structure(item)) for key, item in value.items()]
    return type(value).__name__


def parse_date(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def age_at(born: datetime, now: datetime) -> int:
    return now.year - born.year - ((now.month, now.day, now.time()) < (born.month, born.day, born.time()))


def age_on(user: dict[str, Any], day: date) -> int:
    """Completed years on ``day`` from the UTC date of ``dob.date``, as ``core.transformations.age_at`` does.

    Recorded ``dob.age`` values are ages at recording time, so both sides are aged from ``dob.date`` instead.
    """
    born = parse_date(user["dob"]["date"]).astimezone(UTC).date()
    return day.year - born.year - ((born.month, born.day) > (day.month, day.day))


def ks_distance(first: Sequence[int], second: Sequence[int]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the widest gap between the empirical distributions."""
    first, second = sorted(first), sorted(second)
    return max(
        abs(bisect_right(first, x) / len(first) - bisect_right(second, x) / len(second))
        for x in {*first, *second}
    )


def ks_critical(n: int, m: int) -> float:
    """The distance ``ks_distance`` exceeds with chance ``SIGNIFICANCE`` for two samples of one law."""
    return sqrt(-log(SIGNIFICANCE / 2) / 2) * sqrt((n + m) / (n * m))


def chi_square_critical(degrees: int) -> float:
    """The chi-square value exceeded with chance ``SIGNIFICANCE`` (Wilson-Hilferty approximation)."""
    z, k = NormalDist().inv_cdf(1 - SIGNIFICANCE), 2 / (9 * degrees)
    return degrees * (1 - k + z * sqrt(k)) ** 3


@cache
def sample(nat: str, count: int = 300) -> tuple[dict[str, Any], ...]:
    """Profiles of one nationality, shared by the tests below (generation is deterministic)."""
    return tuple(SyntheticSource(f"sample-{nat}", now=NOW).next_batch(count, (nat,)))


@settings(max_examples=300, deadline=None)
@given(nat=st.sampled_from(NATIONALITIES), seed=st.integers() | st.text(max_size=20))
def test_every_profile_is_valid_for_any_nationality_and_seed(nat: str, seed: int | str) -> None:
    batch = SyntheticSource(seed, now=NOW).next_batch(20, (nat,))

    assert [valid(user) for user in batch] == [None] * 20
    assert {user["nat"] for user in batch} == {nat}


@pytest.mark.parametrize("nat", NATIONALITIES)
def test_each_nationality_validates_and_has_the_recorded_shape(nat: str) -> None:
    expected = structure(recorded_user(nat))

    for user in sample(nat):
        assert valid(user) is None
        assert structure(user) == expected  # key order, nesting and leaf types (int vs str vs null)
        assert user["location"]["country"] == recorded_user(nat)["location"]["country"]


def test_same_seed_gives_the_same_batches() -> None:
    first, second = SyntheticSource(42, now=NOW), SyntheticSource(42, now=NOW)

    assert [first.next_batch(50) for _ in range(3)] == [second.next_batch(50) for _ in range(3)]
    assert SyntheticSource("abc", now=NOW).next_batch(10) == SyntheticSource("abc", now=NOW).next_batch(10)
    assert SyntheticSource(7, now=NOW).next_batch(10) == SyntheticSource("7", now=NOW).next_batch(10)


def test_successive_batches_and_different_seeds_differ() -> None:
    source = SyntheticSource(1, now=NOW)
    uuids = {user["login"]["uuid"] for user in source.next_batch(100) + source.next_batch(100)}
    batches = [SyntheticSource(seed, now=NOW).next_batch(10) for seed in (1, 2, -1, "a", "b")]

    assert len(uuids) == 200
    assert all(a != b for i, a in enumerate(batches) for b in batches[i + 1 :])


def test_nationality_filter_is_respected_and_case_insensitive() -> None:
    batch = SyntheticSource(3, now=NOW).next_batch(400, ("ch", "NO"))

    assert {user["nat"] for user in batch} == {"CH", "NO"}


def test_no_filter_spreads_over_all_nationalities_and_both_genders() -> None:
    batch = SyntheticSource(4, now=NOW).next_batch(5000)
    genders = Counter(user["gender"] for user in batch)

    assert {user["nat"] for user in batch} == set(NATIONALITIES)
    assert 0.45 < genders["male"] / len(batch) < 0.55


def test_dates_are_in_the_api_ranges_and_ages_match_them() -> None:
    batch = SyntheticSource(5, now=NOW).next_batch(2000)

    for user in batch:
        born, registered = parse_date(user["dob"]["date"]), parse_date(user["registered"]["date"])
        assert ISO_MILLIS_Z.match(user["dob"]["date"])
        assert ISO_MILLIS_Z.match(user["registered"]["date"])
        assert 1944 <= born.year <= 2001
        assert 2002 <= registered.year <= 2022
        assert user["dob"]["age"] == age_at(born, NOW)
        assert user["registered"]["age"] == age_at(registered, NOW)


@pytest.mark.parametrize("day", AGE_DAYS)
def test_ages_have_the_recorded_range_bands_and_distribution(day: date) -> None:
    recorded = [age_on(user, day) for user in recorded_14_users()]
    synthetic = [age_on(user, day) for user in synthetic_users()]

    assert min(synthetic) <= min(recorded) <= min(synthetic) + 2
    assert max(synthetic) - 2 <= max(recorded) <= max(synthetic)
    assert {age_band_of(age) for age in synthetic} == {age_band_of(age) for age in recorded}
    assert ks_distance(recorded, synthetic) < ks_critical(len(recorded), len(synthetic))


def test_nationalities_are_the_apis_and_as_evenly_drawn_as_recorded() -> None:
    synthetic = Counter(user["nat"] for user in synthetic_users())
    recorded = Counter(user["nat"] for user in recorded_14_users())
    recorded_any_version = {
        user["nat"] for response in recorded_responses() for user in response["results"] if "nat" in user
    }
    expected = {nat: len(recorded_14_users()) * count / synthetic.total() for nat, count in synthetic.items()}

    assert recorded_any_version <= set(synthetic) <= API_14_NATIONALITIES
    chi_square = sum((recorded[nat] - expected[nat]) ** 2 / expected[nat] for nat in synthetic)
    assert chi_square < chi_square_critical(len(synthetic) - 1)


def test_genders_are_half_and_half_as_recorded() -> None:
    synthetic = Counter(user["gender"] for user in synthetic_users())
    recorded = Counter(user["gender"] for user in recorded_14_users())
    share, count = synthetic["male"] / synthetic.total(), recorded.total()

    assert set(synthetic) == set(recorded) == {"male", "female"}
    assert abs(share - 0.5) < 0.02  # the API draws randomItem(["male", "female"])
    z = (recorded["male"] - count * share) / sqrt(count * share * (1 - share))
    assert abs(z) < NormalDist().inv_cdf(1 - SIGNIFICANCE / 2)


def test_default_now_is_the_current_time() -> None:
    before = datetime.now(UTC)
    batch = SyntheticSource(6).next_batch(50)
    after = datetime.now(UTC)

    for user in batch:
        born = parse_date(user["dob"]["date"])
        assert user["dob"]["age"] in {age_at(born, before), age_at(born, after)}


@pytest.mark.parametrize("nat", NATIONALITIES)
def test_ids_and_postcodes_follow_the_country_quirks(nat: str) -> None:
    users = sample(nat)
    postcodes = [user["location"]["postcode"] for user in users]

    if nat in NULL_ID_NATS:
        assert all(user["id"] == {"name": "", "value": None} for user in users)
    else:
        assert all(user["id"]["name"] and isinstance(user["id"]["value"], str) for user in users)
    if nat in STRING_POSTCODE_NATS:
        assert all(isinstance(postcode, str) for postcode in postcodes)
    else:
        assert all(isinstance(postcode, int) for postcode in postcodes)
    if nat == "NO":
        assert all(re.fullmatch(r"\d{4}", postcode) for postcode in postcodes)
        assert any(postcode.startswith("0") for postcode in postcodes)  # leading zeros are kept


def test_names_use_the_scripts_of_the_real_api() -> None:
    def is_persian(text: str) -> bool:
        return any("\u0600" <= char <= "\u06ff" for char in text)

    assert all(is_persian(user["name"]["first"] + user["name"]["last"]) for user in sample("IR"))
    assert all(user["name"]["first"].isascii() for user in sample("UA"))  # transliterated, as the API
    assert any(not user["name"]["last"].isascii() for user in sample("RS"))  # Latin with diacritics


def test_emails_are_ascii_first_dot_last_at_example_com() -> None:
    users = [user for nat in NATIONALITIES for user in sample(nat)]
    us_name = sample("US")[0]["name"]

    assert all(re.fullmatch(r"[a-z0-9'-]+\.[a-z0-9'-]+@example\.com", user["email"]) for user in users)
    assert sample("US")[0]["email"] == f"{us_name['first']}.{us_name['last']}@example.com".lower()


def test_email_transliteration_reproduces_every_recorded_email() -> None:
    # "Horst-Günter Korte" -> horst-gunter.korte, "دانیال حسینی" -> dnyl.hsyny, as the API writes them.
    for user in recorded_users():
        name = user["name"]
        assert f"{_email_part(name['first'])}.{_email_part(name['last'])}@example.com" == user["email"]


@pytest.mark.parametrize("nat", NATIONALITIES)
def test_titles_match_gender(nat: str) -> None:
    # The API titles every Swiss user in French; everyone else gets the English titles.
    male, female = ("Monsieur", {"Madame", "Mademoiselle"}) if nat == "CH" else ("Mr", {"Miss", "Mrs", "Ms"})

    for user in sample(nat):
        if user["gender"] == "male":
            assert user["name"]["title"] == male
        else:
            assert user["name"]["title"] in female


def test_credentials_look_like_the_api_and_are_stripped_by_minimization() -> None:
    for user in SyntheticSource(7, now=NOW).next_batch(500):
        login = user["login"]
        salted = (login["password"] + login["salt"]).encode()
        assert uuid.UUID(login["uuid"]).version == 4
        assert re.fullmatch(r"[a-z]+\d{3}", login["username"])
        assert re.fullmatch(r"[A-Za-z0-9]{8}", login["salt"])
        assert 1 <= len(login["password"]) <= 8
        assert login["md5"] == hashlib.md5(salted).hexdigest()
        assert login["sha1"] == hashlib.sha1(salted).hexdigest()
        assert login["sha256"] == hashlib.sha256(salted).hexdigest()
        assert not set(CREDENTIAL_FIELDS) & set(strip_credentials(user)["login"])


def test_location_pictures_and_timezones_are_in_the_api_formats() -> None:
    recorded_timezones = {tuple(user["location"]["timezone"].values()) for user in recorded_users()}

    assert set(TIMEZONES) == recorded_timezones
    for user in SyntheticSource(8, now=NOW).next_batch(1000):
        location = user["location"]
        assert -90 <= float(location["coordinates"]["latitude"]) <= 90
        assert -180 <= float(location["coordinates"]["longitude"]) <= 180
        assert 1 <= location["street"]["number"] <= 9999
        picture, folder = user["picture"], "men" if user["gender"] == "male" else "women"
        match = re.fullmatch(rf"https://randomuser\.me/api/portraits/{folder}/(\d+)\.jpg", picture["large"])
        assert match and 0 <= int(match[1]) <= 99
        assert picture["medium"] == picture["large"].replace("portraits/", "portraits/med/")
        assert picture["thumbnail"] == picture["large"].replace("portraits/", "portraits/thumb/")


def test_is_a_profile_source() -> None:
    source: ProfileSource = SyntheticSource()

    assert source.name == "synthetic"
    assert len(source.next_batch(1)) == 1


@pytest.mark.parametrize("count", [0, -1, 5001])
def test_rejects_a_bad_count(count: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 5000"):
        SyntheticSource(now=NOW).next_batch(count)


def test_rejects_an_unknown_nationality() -> None:
    with pytest.raises(ValueError, match="XX"):
        SyntheticSource(now=NOW).next_batch(10, ("US", "XX"))


@pytest.mark.parametrize("now", [datetime(2024, 1, 1), datetime(2020, 1, 1, tzinfo=UTC)])
def test_rejects_a_naive_or_too_early_now(now: datetime) -> None:
    with pytest.raises(ValueError, match="now"):
        SyntheticSource(now=now)
