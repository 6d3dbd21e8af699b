"""The producer's pure logic: validation split, minimization, source fallback, pacing and stopping."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from core.profile import CREDENTIAL_FIELDS, DeadLetter, ProfileEnvelope, Source, record_uuid
from core.validation import RecordLimits
from ingestion.kafka_publisher import DeliveryCounts
from ingestion.producer import AutoSource, ProfileProducer, split_batch, within_size_limit
from ingestion.sources import SourceUnavailableError, check_batch_size
from tests.randomuser_server import FIXTURES_DIR

FIXTURES = FIXTURES_DIR
FETCHED_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def recorded_users() -> list[dict[str, Any]]:
    return json.loads((FIXTURES / "codeacademyuz__randomuser_me_project__randomusers.json").read_text())[
        "results"
    ]


class ListSource:
    """A source that serves records from a list, in order, or raises once it is told to fail."""

    def __init__(self, records: list[Any], name: Source = "synthetic", fail: bool = False) -> None:
        self.records = records
        self.name: Source = name
        self.api_version: str | None = "1.4"
        self.fail = fail
        self.calls: list[int] = []

    def next_batch(self, count: int, nationalities: tuple[str, ...] = ()) -> list[Any]:
        self.calls.append(count)
        if self.fail:
            raise SourceUnavailableError("gave up after 3 attempts: ConnectError")
        batch, self.records = self.records[:count], self.records[count:]
        return batch


class MemoryPublisher:
    """Keeps what would go to Kafka; every record counts as acknowledged."""

    def __init__(self) -> None:
        self.envelopes: list[ProfileEnvelope] = []
        self.dead_letters: list[tuple[str | None, DeadLetter]] = []
        self.flushes = 0

    def publish(self, envelope: ProfileEnvelope, value: bytes | None = None) -> None:
        self.envelopes.append(envelope)

    def publish_dead_letter(self, letter: DeadLetter, key: str | None) -> None:
        self.dead_letters.append((key, letter))

    def counts(self) -> DeliveryCounts:
        return DeliveryCounts(len(self.envelopes), 0, len(self.dead_letters), 0)

    def flush(self) -> None:
        self.flushes += 1


def test_split_batch_publishes_valid_records_without_credentials() -> None:
    users = recorded_users()[:3]

    split = split_batch(users, "randomuser", FETCHED_AT, RecordLimits(), api_version="1.4")

    assert [envelope.user["login"]["uuid"] for envelope in split.envelopes] == [
        user["login"]["uuid"] for user in users
    ]
    assert split.dead_letters == []
    for envelope in split.envelopes:
        assert not set(CREDENTIAL_FIELDS) & set(envelope.user["login"])
        assert envelope.fetched_at == FETCHED_AT and envelope.source == "randomuser"
        assert envelope.api_version == "1.4"
    assert "password" in users[0]["login"]  # the caller's records are not modified


def test_split_batch_dead_letters_invalid_records_with_reasons_and_no_credentials() -> None:
    no_uuid, bad_nat, bad_postcode = copy.deepcopy(recorded_users()[:3])
    del no_uuid["login"]["uuid"]
    bad_nat["nat"] = "XX"

    bad_postcode["location"]["postcode"] = {"code": 1}
    records = [no_uuid, bad_nat, "not a profile", bad_postcode]

    split = split_batch(records, "randomuser", FETCHED_AT, RecordLimits())

    assert split.envelopes == []
    keys = [key for key, _ in split.dead_letters]
    reasons = [letter.reason for _, letter in split.dead_letters]
    assert keys == [None, bad_nat["login"]["uuid"], None, bad_postcode["login"]["uuid"]]
    # The reasons both layers give the same records (core.validation).
    assert reasons == [
        "user.login.uuid: missing",
        "user.nat: not a nationality code of the API",
        "user: not an object; user.login.uuid: missing",
        "user.location.postcode: not a text value",
    ]
    for _, letter in split.dead_letters:
        assert "sha256" not in letter.model_dump_json() and "password" not in letter.model_dump_json()


def test_an_envelope_over_the_size_limit_is_a_dead_letter_with_its_identifiers_still_sealed() -> None:
    small, large = copy.deepcopy(recorded_users()[:2])
    large["location"]["city"] = "x" * 5_000
    split = split_batch([small, large], "randomuser", FETCHED_AT, RecordLimits(max_record_bytes=4_000))
    sealed = [envelope.sealed_with(b"k" * 32) for envelope in split.envelopes]

    publishable, too_large = within_size_limit(sealed, RecordLimits(max_record_bytes=4_000))

    assert [envelope.uuid for envelope, _ in publishable] == [small["login"]["uuid"]]
    assert [value for _, value in publishable] == [sealed[0].value()]
    [(key, letter)] = too_large
    assert key == large["login"]["uuid"]
    assert letter.reason == "record over the limit of 4000 bytes"
    assert letter.sealed == sealed[1].sealed and "email" not in letter.record


def test_record_uuid_only_for_string_uuids() -> None:
    assert record_uuid({"login": {"uuid": "abc"}}) == "abc"
    assert record_uuid({"login": {"uuid": 7}}) is None
    assert record_uuid(["login"]) is None


def test_auto_source_switches_once_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    api = ListSource([], name="randomuser", fail=True)
    synthetic = ListSource(recorded_users())
    auto = AutoSource(api, synthetic)

    first = auto.next_batch(2)
    second = auto.next_batch(3)

    assert (len(first), len(second)) == (2, 3)
    assert api.calls == [2]  # not asked again after it gave up
    assert auto.name == "synthetic"
    assert "ConnectError" in (auto.switched_because or "")
    assert [r.levelname for r in caplog.records if "unreachable" in r.getMessage()] == ["WARNING"]


def test_auto_source_keeps_the_api_while_it_answers() -> None:
    api = ListSource(recorded_users(), name="randomuser")
    auto = AutoSource(api, ListSource([]))

    assert len(auto.next_batch(4)) == 4
    assert auto.name == "randomuser" and auto.switched_because is None


def test_run_produces_exactly_count_in_batches_and_flushes() -> None:
    source = ListSource(recorded_users())
    publisher = MemoryPublisher()
    producer = ProfileProducer(source, publisher, batch_size=40)

    progress = producer.run(count=100)

    assert source.calls == [40, 40, 20]
    assert (progress.fetched, progress.sent, progress.dead_lettered) == (100, 100, 0)
    assert publisher.flushes == 1


def test_run_paces_to_the_target_rate() -> None:
    now = [0.0]
    source = ListSource(recorded_users())
    producer = ProfileProducer(source, MemoryPublisher(), batch_size=100, clock=lambda: now[0])
    waits: list[float] = []

    def wait(delay: float) -> bool:
        waits.append(delay)
        now[0] += delay
        return False

    producer.stop_requested.wait = wait  # type: ignore[method-assign]
    producer.run(count=30, rate_per_s=10)

    assert source.calls == [10, 10, 10]  # a batch never exceeds one second's worth
    assert waits == [1.0, 1.0, 1.0]


def test_a_stop_request_ends_the_run_at_a_batch_boundary_and_flushes() -> None:
    source = ListSource(recorded_users())
    publisher = MemoryPublisher()
    producer = ProfileProducer(source, publisher, batch_size=10)

    progress = producer.run(on_batch=lambda p: producer.stop_requested.set() if p.sent >= 20 else None)

    assert progress.sent == 20
    assert publisher.flushes == 1


@pytest.mark.parametrize("count", [0, 5001, 2.5, True])
def test_batch_sizes_the_api_would_silently_change_are_refused(count: object) -> None:
    with pytest.raises(ValueError, match="between 1 and 5000"):
        check_batch_size(count)  # type: ignore[arg-type]
