"""Crypto-shredding: sealing in Python (the producer), opening in Spark (both layers), erased subjects."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from pyspark.sql import DataFrame, Row, SparkSession

from core.parsing import dead_letter_records, erased_records, parse_kafka_records, valid_envelopes
from core.profile import dead_letter, profile_envelope, strip_credentials
from core.schema import SEALED_ENVELOPE_VERSION
from core.sealing import SEALED_FIELDS, new_data_key, seal_identifiers, unseal_identifiers
from core.spark import collect_dicts
from core.validation import CANNOT_UNSEAL, MISSING_SEALED, NO_KEY, RecordLimits
from ingestion.producer import seal_dead_letters, seal_envelopes
from tests.unit.core.test_parsing import AU, GB, IR, NL, kafka_frame, uuid_of

FETCHED_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
USERS = [strip_credentials(user) for user in (AU, NL, IR, GB)]
KEYS = {user["login"]["uuid"]: new_data_key() for user in USERS}


def identifier_values(user: dict[str, Any]) -> list[str]:
    """Every string among a user's direct identifiers (what must not appear in clear)."""
    values: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, str) and len(value) > 3:
            values.append(value)

    for path in SEALED_FIELDS:
        value: Any = user
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        walk(value)
    return values


def sealed_value(user: dict[str, Any], data_key: bytes) -> bytes:
    return profile_envelope(user, "randomuser", FETCHED_AT).sealed_with(data_key).model_dump_json().encode()


def test_sealing_removes_every_direct_identifier_and_opens_with_the_subjects_key() -> None:
    user = USERS[0]
    remaining, token = seal_identifiers(user, KEYS[user["login"]["uuid"]])
    assert "name" not in remaining and "email" not in remaining and "street" not in remaining["location"]
    assert remaining["login"] == {"uuid": user["login"]["uuid"]}
    text = json.dumps(remaining) + token
    assert identifier_values(user) and not [value for value in identifier_values(user) if value in text]
    assert unseal_identifiers(remaining, token, KEYS[user["login"]["uuid"]]) == user


def test_a_token_does_not_open_with_another_key_or_for_another_subject() -> None:
    user, other = USERS[0], USERS[1]
    remaining, token = seal_identifiers(user, KEYS[user["login"]["uuid"]])
    with pytest.raises(InvalidTag):
        unseal_identifiers(remaining, token, KEYS[other["login"]["uuid"]])
    moved = {**remaining, "login": {"uuid": other["login"]["uuid"]}}
    with pytest.raises(InvalidTag):
        unseal_identifiers(moved, token, KEYS[user["login"]["uuid"]])


def test_the_producer_seals_subjects_with_a_key_and_holds_back_the_others() -> None:
    envelopes = [profile_envelope(user, "randomuser", FETCHED_AT) for user in USERS]
    erased_uuid = USERS[2]["login"]["uuid"]
    keys = {uuid: key for uuid, key in KEYS.items() if uuid != erased_uuid}
    sealed, without_key = seal_envelopes(envelopes, keys)
    assert without_key == [erased_uuid]
    assert [envelope.schema_version for envelope in sealed] == [SEALED_ENVELOPE_VERSION] * 3
    assert all(envelope.sealed and "email" not in envelope.user for envelope in sealed)


def keys_frame(spark: SparkSession, keys: dict[str, bytes]) -> DataFrame:
    return spark.createDataFrame(list(keys.items()), "uuid string, data_key binary")


@pytest.fixture(scope="module")
def opened(spark: SparkSession) -> dict[int, Row]:
    """Parsed rows by offset: 0-3 sealed users, then an erased one, a wrong key, a tampered token, a
    token moved to another subject, a version-2 envelope without a token, and a plain version-1 one."""
    au, nl = USERS[0], USERS[1]
    au_envelope = json.loads(sealed_value(au, KEYS[au["login"]["uuid"]]))
    tampered = base64.b64decode(au_envelope["sealed"])
    tampered = tampered[:-1] + bytes([tampered[-1] ^ 1])
    moved = {**au_envelope, "user": {**au_envelope["user"], "login": {"uuid": nl["login"]["uuid"]}}}
    records = [
        *((uuid_of(user), sealed_value(user, KEYS[user["login"]["uuid"]])) for user in USERS),
        (b"0a0a0a0a-0000-4000-8000-000000000001", sealed_value(
            {**au, "login": {"uuid": "0a0a0a0a-0000-4000-8000-000000000001"}}, new_data_key()
        )),  # a subject whose key was deleted
        (au["login"]["uuid"].encode(), sealed_value(au, KEYS[nl["login"]["uuid"]])),
        (au["login"]["uuid"].encode(), json.dumps(
            {**au_envelope, "sealed": base64.b64encode(tampered).decode()}
        ).encode()),
        (nl["login"]["uuid"].encode(), json.dumps(moved).encode()),
        (au["login"]["uuid"].encode(), json.dumps({**au_envelope, "sealed": None}).encode()),
        (uuid_of(au), profile_envelope(au, "randomuser", FETCHED_AT).model_dump_json().encode()),
        (None, sealed_value(au, KEYS[au["login"]["uuid"]])),  # sealed, but no key names its subject
    ]  # fmt: skip
    parsed = parse_kafka_records(kafka_frame(spark, records), RecordLimits(), keys_frame(spark, KEYS)).cache()
    return {row["offset"]: row for row in parsed.collect()}


def test_spark_opens_what_the_producer_sealed_exactly_as_python_does(opened: dict[int, Row]) -> None:
    for offset, user in enumerate(USERS):
        row = opened[offset]
        assert row["dead_letter_reason"] is None
        unsealed_user = row["envelope"]["user"].asDict(recursive=True)
        assert unsealed_user["name"] == user["name"]
        assert unsealed_user["email"] == user["email"]
        assert (unsealed_user["phone"], unsealed_user["cell"]) == (user["phone"], user["cell"])
        assert unsealed_user["id"] == user["id"]  # IR: a null id value survives
        assert unsealed_user["picture"] == user["picture"]
        assert unsealed_user["location"]["street"] == user["location"]["street"]
        assert unsealed_user["location"]["city"] == user["location"]["city"]
        assert unsealed_user["login"] == {
            "uuid": user["login"]["uuid"],
            "username": user["login"]["username"],
        }
        assert "_identifiers" not in row["envelope"].asDict()


def test_an_erased_subjects_records_are_neither_usable_nor_dead_letters(opened: dict[int, Row]) -> None:
    erased = opened[4]
    assert erased["envelope"] is None and erased["dead_letter_reason"] is None


def test_tokens_that_do_not_open_are_dead_letters_with_the_reason(opened: dict[int, Row]) -> None:
    assert [opened[offset]["dead_letter_reason"] for offset in (5, 6, 7, 8, 10)] == [
        CANNOT_UNSEAL,
        CANNOT_UNSEAL,
        CANNOT_UNSEAL,
        MISSING_SEALED,
        NO_KEY,
    ]


def test_plain_version_1_envelopes_are_still_read(opened: dict[int, Row]) -> None:
    assert opened[9]["dead_letter_reason"] is None
    assert opened[9]["envelope"]["user"]["email"] == USERS[0]["email"]


def test_valid_dead_and_erased_records_partition_the_input(spark: SparkSession) -> None:
    au = USERS[0]
    records = [
        (au["login"]["uuid"].encode(), sealed_value(au, KEYS[au["login"]["uuid"]])),
        (au["login"]["uuid"].encode(), b"not json"),
    ]
    parsed = parse_kafka_records(kafka_frame(spark, records), RecordLimits())  # no keys: sealed = erased
    assert [row["offset"] for row in collect_dicts(valid_envelopes(parsed))] == []
    assert [row["offset"] for row in collect_dicts(dead_letter_records(parsed))] == [1]
    assert [row["offset"] for row in collect_dicts(erased_records(parsed))] == [0]


def test_dead_letters_with_a_uuid_are_sealed_and_those_of_erased_subjects_held_back() -> None:
    bad = {**USERS[0], "email": "not an address"}
    no_uuid = {key: value for key, value in USERS[1].items() if key != "login"}
    erased = {**USERS[2], "email": "nope"}
    letters = [
        (uuid, dead_letter(record, "invalid", "randomuser", FETCHED_AT))
        for uuid, record in ((bad["login"]["uuid"], bad), (None, no_uuid), (erased["login"]["uuid"], erased))
    ]
    keys = {bad["login"]["uuid"]: KEYS[bad["login"]["uuid"]]}

    kept, without_key = seal_dead_letters(letters, keys)

    assert without_key == [erased["login"]["uuid"]]
    (sealed_key, sealed), (plain_key, plain) = kept
    assert sealed_key == bad["login"]["uuid"] and sealed.sealed is not None
    assert "not an address" not in sealed.model_dump_json()
    assert unseal_identifiers(sealed.record, sealed.sealed, keys[sealed_key]) == bad
    assert (plain_key, plain.sealed, plain.record) == (None, None, no_uuid)
