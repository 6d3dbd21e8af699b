"""The producer against the real Kafka: exactly-once arrival, keys, envelopes, dead letters, clean stop."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from core.profile import CREDENTIAL_FIELDS, ENVELOPE_SCHEMA_VERSION, profile_reason
from core.sealing import unseal_identifiers
from core.settings import Settings
from core.validation import RecordLimits
from ingestion.kafka_publisher import ProfilePublisher, ensure_topics
from ingestion.producer import ProfileProducer
from ingestion.synthetic import SyntheticSource
from stores.subject_keys import subject_key_store
from tests.integration.support.kafka_helpers import TopicRecord, read_topic
from tests.integration.support.processes import cli_environment, sigterm_once
from tests.randomuser_server import FIXTURES_DIR, Reply, fixture_users, scripted_server

pytestmark = pytest.mark.integration

FIXTURES = FIXTURES_DIR
RECORDED = "codeacademyuz__randomuser_me_project__randomusers.json"
USERPULSE = [sys.executable, "-m", "userpulse.cli"]


@pytest.fixture
def topics(own_stores: Callable[..., Settings]) -> tuple[str, str]:
    """The test's own profiles topic and its dead-letter topic (``<topic>.dlq``, as ``--topic`` names
    it), removed after the test."""
    kafka = own_stores("profiles").kafka
    assert kafka.dead_letter_topic == f"{kafka.profiles_topic}.dlq"
    return kafka.profiles_topic, kafka.dead_letter_topic


def opened_users(settings: Settings, records: list[TopicRecord]) -> dict[str, dict]:
    """The user of each record by uuid, its sealed identifiers opened with the subject's key."""
    with subject_key_store(settings, enabled=True) as key_store:
        assert key_store is not None
        data_keys = key_store.keys_for([record.key for record in records if record.key])
    return {
        record.key: unseal_identifiers(record.value["user"], record.value["sealed"], data_keys[record.key])
        for record in records
        if record.key
    }


def assert_no_credentials(records: list[TopicRecord]) -> None:
    for record in records:
        text = record.raw_value.decode()
        for field in CREDENTIAL_FIELDS:
            assert f'"{field}"' not in text


def test_synthetic_profiles_arrive_exactly_once_with_their_keys(
    stack_settings: Settings, topics: tuple[str, str]
) -> None:
    profiles_topic, dead_letter_topic = topics
    count, seed = 1500, "7"

    result = subprocess.run(
        [*USERPULSE, "produce", "--source", "synthetic", "--count", str(count), "--batch-size", "400",
         "--seed", seed, "--topic", profiles_topic],
        env=cli_environment(stack_settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert f"done: {count:,} profiles sent to {profiles_topic}" in result.stderr
    records = read_topic(stack_settings, profiles_topic)
    regenerated = SyntheticSource(seed)  # same seed, same batch sizes: the same profiles
    expected = [
        user["login"]["uuid"] for size in (400, 400, 400, 300) for user in regenerated.next_batch(size)
    ]
    assert len(records) == count
    assert sorted(record.key for record in records) == sorted(expected)  # each profile exactly once
    assert {record.partition for record in records} == set(range(stack_settings.kafka.topic_partitions))
    users = opened_users(stack_settings, records)
    for record in records:
        envelope = record.value
        assert set(envelope) == {"schema_version", "source", "api_version", "fetched_at", "user", "sealed"}
        assert envelope["schema_version"] == ENVELOPE_SCHEMA_VERSION
        assert (envelope["source"], envelope["api_version"]) == ("synthetic", "1.4")
        assert record.key == envelope["user"]["login"]["uuid"]
        assert datetime.fromisoformat(envelope["fetched_at"]).tzinfo is not None
        # Direct identifiers leave the producer only sealed, under a key of the subject's own.
        assert "email" not in envelope["user"] and "name" not in envelope["user"]
        assert profile_reason(users[record.key], "randomuser", datetime.now(UTC), RecordLimits()) is None
    assert_no_credentials(records)
    assert read_topic(stack_settings, dead_letter_topic) == []


def test_produce_with_cassandra_down_stops_in_one_line_naming_it(
    stack_settings: Settings, topics: tuple[str, str]
) -> None:
    """Kafka answers, the subject keys' Cassandra does not (port 1 is never served): one line, exit 1."""
    result = subprocess.run(
        [*USERPULSE, "produce", "--source", "synthetic", "--count", "3", "--topic", topics[0]],
        env=cli_environment(stack_settings, USERPULSE_CASSANDRA__PORT="1"),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("unreachable:")]
    assert "Cassandra at 127.0.0.1:1 did not answer" in line and "userpulse stack status" in line


def test_invalid_records_are_dead_lettered_with_reasons(
    stack_settings: Settings, topics: tuple[str, str]
) -> None:
    profiles_topic, dead_letter_topic = topics
    ensure_topics(stack_settings, {profiles_topic: 2, dead_letter_topic: 1})
    recorded = json.loads((FIXTURES / "codeacademyuz__randomuser_me_project__randomusers.json").read_text())
    users = copy.deepcopy(recorded["results"])
    del users[3]["login"]["uuid"]
    users[10]["dob"]["date"] = "last tuesday"
    users[20]["email"] = "no-at-sign"
    invalid_uuids = {users[10]["login"]["uuid"], users[20]["login"]["uuid"]}

    class RecordedSource:
        name = "randomuser"
        api_version = "1.4"

        def next_batch(self, count: int, nationalities: tuple[str, ...] = ()) -> list[dict]:
            return users[:count]

    with ProfilePublisher(stack_settings, profiles_topic, dead_letter_topic) as publisher:
        producer = ProfileProducer(RecordedSource(), publisher, batch_size=len(users))
        producer.run(count=len(users))
    counts = publisher.counts()

    profiles = read_topic(stack_settings, profiles_topic)
    dead_letters = read_topic(stack_settings, dead_letter_topic)
    assert (counts.sent, counts.dead_lettered, counts.failed) == (len(users) - 3, 3, 0)
    assert len(profiles) == len(users) - 3
    assert not invalid_uuids & {record.key for record in profiles}
    reasons = {record.key: record.value["reason"] for record in dead_letters}
    assert set(reasons) == {None, *invalid_uuids}
    assert reasons[None] == "user.login.uuid: missing"  # the reasons both layers give (core.validation)
    assert reasons[users[10]["login"]["uuid"]] == "user.dob.date: not an ISO-8601 instant"
    assert reasons[users[20]["login"]["uuid"]] == "user.email: not an e-mail address"
    assert all(record.value["record"]["name"] for record in dead_letters)  # the record itself is kept
    assert_no_credentials(profiles + dead_letters)


def test_sigterm_stops_cleanly_with_nothing_lost(stack_settings: Settings, topics: tuple[str, str]) -> None:
    profiles_topic, _ = topics
    process = subprocess.Popen(
        [*USERPULSE, "produce", "--source", "synthetic", "--rate", "400/s", "--batch-size", "100",
         "--topic", profiles_topic],
        env=cli_environment(stack_settings),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip

    def enough_produced() -> bool:
        try:
            return len(read_topic(stack_settings, profiles_topic, timeout_s=10)) >= 400
        except Exception:  # the topic may not exist yet
            return False

    stderr = sigterm_once(process, enough_produced)

    assert process.returncode == 0, stderr
    assert "SIGTERM: finishing the current batch and flushing" in stderr
    sent = int(re.search(r"done: ([\d,]+) profiles sent", stderr).group(1).replace(",", ""))
    records = read_topic(stack_settings, profiles_topic)
    assert sent >= 400
    assert len(records) == sent
    assert len({record.key for record in records}) == sent


def test_recorded_api_responses_flow_through_the_cli_into_kafka(
    stack_settings: Settings, topics: tuple[str, str]
) -> None:
    profiles_topic, _ = topics
    recorded_users = fixture_users(RECORDED)
    with scripted_server() as api:
        api.script(Reply(503, b"Service Unavailable"), Reply.json({"results": [], "info": {}}))
        api.fallback = Reply.fixture(RECORDED)
        result = subprocess.run(
            [*USERPULSE, "produce", "--source", "randomuser", "--count", str(len(recorded_users)),
             "--batch-size", str(len(recorded_users)), "--seed", "abc", "--topic", profiles_topic],
            env=cli_environment(
                stack_settings,
                USERPULSE_RANDOMUSER__BASE_URL=api.base_url,
                USERPULSE_RANDOMUSER__BACKOFF_INITIAL_S="0.05",
            ),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert [request.query.get("results") for request in api.requests] == ["111", "111", "111"]
    records = read_topic(stack_settings, profiles_topic)
    assert sorted(record.key for record in records) == sorted(
        user["login"]["uuid"] for user in recorded_users
    )
    assert {record.value["source"] for record in records} == {"randomuser"}
    by_uuid = opened_users(stack_settings, records)
    for user in recorded_users:  # published as received, minus the credentials (postcode types kept)
        published = by_uuid[user["login"]["uuid"]]
        assert published["location"] == user["location"]
        assert published["login"] == {"uuid": user["login"]["uuid"], "username": user["login"]["username"]}
    assert_no_credentials(records)


def test_auto_source_falls_back_to_synthetic_when_the_api_is_unreachable(
    stack_settings: Settings, topics: tuple[str, str]
) -> None:
    profiles_topic, _ = topics
    with scripted_server() as closed:
        unreachable_url = closed.base_url  # nothing listens there once the server is stopped

    result = subprocess.run(
        [*USERPULSE, "produce", "--count", "50", "--batch-size", "25", "--topic", profiles_topic],
        env=cli_environment(
            stack_settings,
            USERPULSE_RANDOMUSER__BASE_URL=unreachable_url,
            USERPULSE_RANDOMUSER__AUTO_PROBE_BUDGET_S="2",
            USERPULSE_RANDOMUSER__BACKOFF_INITIAL_S="0.05",
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert " ".join(result.stderr.split()).count("randomuser is unreachable") == 1
    records = read_topic(stack_settings, profiles_topic)
    assert len(records) == 50
    assert {record.value["source"] for record in records} == {"synthetic"}
