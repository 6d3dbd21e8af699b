"""Pure logic of ``userpulse profile``: ``--set`` parsing and application, validation, decoding archived
versions (clear, sealed, erased) and their newest-first order."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from core.profile import profile_envelope
from core.sealing import new_data_key
from core.settings import Settings
from ingestion.synthetic import SyntheticSource
from serving.profile_page import profile_html
from serving.profile_store import (
    ProfileVersion,
    StoredProfile,
    changed_paths,
    decode_version,
    newest_first,
)
from userpulse.commands.profile import (
    ErasedSubjectError,
    ProfileEditError,
    apply_assignments,
    coerce_value,
    json_text,
    load_profile_json,
    parse_assignment,
    user_in_clear,
    validation_problems,
    version_changes,
)

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def user() -> dict[str, Any]:
    return SyntheticSource("profile-cli", now=T0).next_batch(1)[0]


def archive_row(value: bytes, offset: int = 5, key: str = "k") -> dict[str, Any]:
    return {
        "key": bytearray(key.encode()),
        "value": bytearray(value),
        "partition": 1,
        "offset": offset,
        "kafka_timestamp": T0,
        "ingestion_date": T0.date(),
    }


def version(offset: int, fetched_at: datetime | None, user: dict[str, Any] | None = None) -> ProfileVersion:
    return ProfileVersion(
        uuid="u",
        partition=0,
        offset=offset,
        kafka_timestamp=T0 + timedelta(seconds=offset),
        ingestion_date=T0.date(),
        status="clear" if user is not None else "invalid",
        fetched_at=fetched_at,
        user=user,
    )


# --- --set path=value ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("location.city=Lyon", (("location", "city"), "Lyon")),
        ("email=a=b@example.com", (("email",), "a=b@example.com")),
        ("name.first=", (("name", "first"), "")),
    ],
)
def test_an_assignment_is_a_dotted_path_and_everything_after_the_first_equals_sign(
    text: str, expected: tuple[tuple[str, ...], str]
) -> None:
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["location.city", "=Lyon", "location..city=Lyon", "location.=x"])
def test_an_assignment_without_a_path_or_value_is_refused(text: str) -> None:
    with pytest.raises(ProfileEditError, match="expected path=value"):
        parse_assignment(text)


@pytest.mark.parametrize(
    ("raw", "current", "expected"),
    [
        ("0612345678", "01 23 45 67 89", "0612345678"),  # a phone stays a string, even all digits
        ("75001", 69001, 75001),  # an int postcode stays an int
        ("SW1A 1AA", 69001, "SW1A 1AA"),  # ... unless the new one is not a number (the schema allows it)
        ("42", None, 42),  # a new field: JSON when it parses
        ('{"a": 1}', None, {"a": 1}),
        ("Lyon", None, "Lyon"),  # ... else a string
    ],
)
def test_a_value_keeps_the_json_type_of_the_value_it_replaces(raw: str, current: Any, expected: Any) -> None:
    assert coerce_value(raw, current) == expected


def test_assignments_change_a_copy_and_create_missing_objects(user: dict[str, Any]) -> None:
    original = json.loads(json.dumps(user))

    edited = apply_assignments(
        user,
        [
            (("location", "city"), "Lyon"),
            (("email",), "new.address@example.org"),
            (("extra", "note"), "added by hand"),
        ],
    )

    assert edited["location"]["city"] == "Lyon"
    assert edited["email"] == "new.address@example.org"
    assert edited["extra"] == {"note": "added by hand"}
    assert edited["location"]["country"] == user["location"]["country"]  # the rest untouched
    assert user == original  # the input is not modified


def test_the_uuid_cannot_be_changed_by_an_assignment(user: dict[str, Any]) -> None:
    with pytest.raises(ProfileEditError, match=r"login\.uuid cannot be changed"):
        apply_assignments(user, [(("login", "uuid"), "00000000-0000-0000-0000-000000000000")])


def test_an_assignment_through_a_value_that_is_not_an_object_is_refused(user: dict[str, Any]) -> None:
    with pytest.raises(ProfileEditError, match="email is a str"):
        apply_assignments(user, [(("email", "domain"), "example.org")])


# --- validation -----------------------------------------------------------------------------------


def test_a_valid_profile_has_no_problem(user: dict[str, Any]) -> None:
    assert validation_problems(user, Settings()) == []


def test_each_reason_a_profile_is_invalid_is_listed(user: dict[str, Any]) -> None:
    edited = apply_assignments(user, [(("email",), "not an e-mail"), (("dob", "age"), "old")])
    del edited["gender"]

    problems = validation_problems(edited, Settings())

    assert problems == [
        "user.gender: missing",
        "user.email: not an e-mail address",
        "user.dob.age: not an integer",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "JSON list, not a profile object"),
        ('{"results": [{}, {}]}', "holds 2 results"),
    ],
)
def test_a_profile_file_that_is_not_one_profile_object_is_refused(text: str, message: str) -> None:
    with pytest.raises(ProfileEditError, match=message):
        load_profile_json(text, "profile.json")


def test_a_profile_file_may_be_a_bare_user_or_a_response_of_one(user: dict[str, Any]) -> None:
    assert load_profile_json(json.dumps(user), "f") == user
    assert load_profile_json(json.dumps({"results": [user], "info": {}}), "f") == user


# --- archived versions ----------------------------------------------------------------------------


def test_a_plain_envelope_is_read_in_clear(user: dict[str, Any]) -> None:
    envelope = profile_envelope(user, "synthetic", T0)

    decoded = decode_version(archive_row(envelope.model_dump_json().encode()), data_key=None)

    assert (decoded.status, decoded.schema_version, decoded.source) == ("clear", 1, "synthetic")
    assert decoded.user == envelope.user
    assert decoded.fetched_at == T0
    assert (decoded.partition, decoded.offset, decoded.ingestion_date) == (1, 5, T0.date())


def test_a_sealed_envelope_is_read_with_the_subjects_key(user: dict[str, Any]) -> None:
    key = new_data_key()
    sealed = profile_envelope(user, "admin", T0).sealed_with(key)
    value = sealed.model_dump_json().encode()
    assert user["email"].encode() not in value  # what the archive holds: no identifier in clear

    decoded = decode_version(archive_row(value), key)

    assert (decoded.status, decoded.schema_version, decoded.source) == ("unsealed", 2, "admin")
    assert decoded.user == profile_envelope(user, "admin", T0).user


def test_a_sealed_envelope_without_a_key_is_erased_and_keeps_only_what_was_never_sealed(
    user: dict[str, Any],
) -> None:
    sealed = profile_envelope(user, "admin", T0).sealed_with(new_data_key())

    decoded = decode_version(archive_row(sealed.model_dump_json().encode()), data_key=None)

    assert decoded.status == "erased" and not decoded.readable
    assert "erased" in (decoded.note or "")
    assert decoded.user is not None
    assert "email" not in decoded.user and "name" not in decoded.user
    assert decoded.user["location"]["country"] == user["location"]["country"]


def test_a_sealed_envelope_that_another_key_does_not_open_is_unreadable(user: dict[str, Any]) -> None:
    sealed = profile_envelope(user, "admin", T0).sealed_with(new_data_key())

    decoded = decode_version(archive_row(sealed.model_dump_json().encode()), new_data_key())

    assert decoded.status == "unreadable"
    assert "do not open" in (decoded.note or "")


@pytest.mark.parametrize(
    ("value", "note"),
    [
        (b"\xff not json", "not JSON"),
        (b"[1]", "not an envelope"),
        (b'{"schema_version": 99, "user": {}}', "unknown envelope version 99"),
    ],
)
def test_a_record_that_is_not_a_known_envelope_is_listed_as_invalid(value: bytes, note: str) -> None:
    decoded = decode_version(archive_row(value), None)

    assert decoded.status == "invalid"
    assert note in (decoded.note or "")


def test_versions_are_ordered_newest_first_by_fetch_time_then_offset() -> None:
    versions = [
        version(1, T0),
        version(2, T0 + timedelta(minutes=5)),
        version(3, T0),  # same fetch time as offset 1, later in the log
        version(4, T0 - timedelta(minutes=1)),  # published later, fetched earlier (a late copy)
        version(5, None),  # no fetch time: placed by its Kafka timestamp (T0 + 5 s)
    ]

    assert [v.offset for v in newest_first(versions)] == [2, 5, 3, 1, 4]


def test_each_version_lists_the_fields_it_changed_from_the_previous_readable_one(
    user: dict[str, Any],
) -> None:
    moved = apply_assignments(user, [(("location", "city"), "Lyon")])
    renamed = apply_assignments(moved, [(("email",), "x@example.org"), (("name", "first"), "Zoé")])
    versions = [version(4, T0 + timedelta(3), renamed), version(3, T0 + timedelta(2)),
                version(2, T0 + timedelta(1), moved), version(1, T0, user)]  # fmt: skip

    assert version_changes(versions) == ["email, name.first", "?", "location.city", "first version"]
    assert changed_paths({"a": {"b": 1}}, {"a": {"b": 1}}) == []
    assert changed_paths({"a": 1}, {"a": {"b": 1}}) == ["a"]


# --- raw documents and output ---------------------------------------------------------------------


def test_a_sealed_raw_document_is_read_in_clear_with_its_key_and_refused_without(
    user: dict[str, Any],
) -> None:
    key = new_data_key()
    sealed = profile_envelope(user, "admin", T0).sealed_with(key)
    document = {"_id": user["login"]["uuid"], "user": sealed.user, "sealed": sealed.sealed}

    assert user_in_clear(document, key) == profile_envelope(user, "admin", T0).user
    assert user_in_clear({"user": user}, None) == user  # a document in clear needs no key
    with pytest.raises(ErasedSubjectError):
        user_in_clear(document, None)


def test_json_output_writes_dates_and_bytes_readably() -> None:
    text = json_text({"at": T0, "day": date(2026, 1, 2), "key": b"\x01\xff", "name": "Zoé"})

    assert json.loads(text) == {
        "at": "2026-11-23T10:00:00+00:00",
        "day": "2026-01-02",
        "key": "01ff",
        "name": "Zoé",
    }


def test_the_dashboard_lookup_masks_the_raw_document_and_shortens_pseudonyms(user: dict[str, Any]) -> None:
    uuid = user["login"]["uuid"]
    document = {"_id": uuid, "fetched_at": T0, "source": "admin", "user": user}
    row = {"uuid": uuid, "country": user["location"]["country"], "email_pseudonym": "ab" * 32}

    page = profile_html(uuid, StoredProfile(uuid, document, row))

    assert user["email"] not in page and user["name"]["last"] not in page
    assert f"{user['email'][0]}***@{user['email'].rsplit('@', 1)[1]}" in page
    assert f"{user['name']['first'][0]}. {user['name']['last'][0]}." in page
    assert "abababababab…" in page and "ab" * 32 not in page
    assert 'data-testid="profile-raw"' in page and 'data-testid="profile-cassandra"' in page


def test_the_dashboard_lookup_says_when_a_uuid_is_unknown() -> None:
    page = profile_html("<b>", StoredProfile("<b>", None, None))

    assert "profile-not-found" in page and "&lt;b&gt;" in page
