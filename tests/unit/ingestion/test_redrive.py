"""What a re-drive does with each dead letter (``ingestion.redrive.redrive_plan`` for the layers',
``producer_redrive_plan`` for the producer's), on tiny inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.profile import ProfileEnvelope, dead_letter, profile_envelope
from core.sealing import new_data_key, unseal_identifiers
from core.validation import NOT_JSON, RecordLimits
from ingestion.redrive import (
    UNSEALABLE,
    ProducerLetter,
    RedriveReport,
    RedriveStep,
    producer_redrive_plan,
    redrive_headers,
    redrive_plan,
)
from ingestion.synthetic import SyntheticSource

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
LIMITS = RecordLimits(max_record_bytes=20_000, max_clock_skew_s=600)


def letter(letter_id: str, key: str | None, value: bytes) -> dict[str, object]:
    return {"_id": letter_id, "key": key, "raw_value": value, "reason": "record over the limit of 1000 bytes"}


def test_each_dead_letter_is_redriven_still_refused_or_left_for_its_erased_subject() -> None:
    fine, sealed, erased_plain, gone_key, odd = SyntheticSource(3, now=NOW).next_batch(5)
    odd = {**odd, "gender": "unknown"}

    def plain(user: dict[str, object]) -> bytes:
        return profile_envelope(user, "synthetic", NOW - timedelta(minutes=5), "1.4").value()

    data_key = new_data_key()
    sealed_value = profile_envelope(sealed, "synthetic", NOW, "1.4").sealed_with(data_key).value()
    gone_value = profile_envelope(gone_key, "synthetic", NOW, "1.4").sealed_with(new_data_key()).value()
    named = {"fine": fine, "sealed": sealed, "erased": erased_plain, "gone": gone_key, "odd": odd}
    uuid = {name: user["login"]["uuid"] for name, user in named.items()}
    letters = [
        letter("t:0:1", uuid["fine"], plain(fine)),
        letter("t:0:2", uuid["sealed"], sealed_value),
        letter("t:0:3", uuid["erased"], plain(erased_plain)),  # plain, but its subject was erased
        letter("t:0:4", uuid["gone"], gone_value),  # sealed under a key no longer stored
        letter("t:0:5", uuid["odd"], plain(odd)),
        letter("t:0:6", None, b"not json"),
    ]
    steps = redrive_plan(letters, {uuid["sealed"]: data_key}, {uuid["erased"]}, NOW, LIMITS)

    assert steps == [
        RedriveStep("t:0:1", uuid["fine"], "redriven"),
        RedriveStep("t:0:2", uuid["sealed"], "redriven"),
        RedriveStep("t:0:3", uuid["erased"], "erased"),
        RedriveStep("t:0:4", uuid["gone"], "erased"),
        RedriveStep("t:0:5", uuid["odd"], "still refused", "user.gender: not male or female"),
        RedriveStep("t:0:6", None, "still refused", NOT_JSON),
    ]
    report = RedriveReport("record over the limit of 1000 bytes", dry_run=True)
    report.add(steps)
    assert (report.selected, report.redriven, report.erased) == (6, 2, 2)
    assert report.still_refused == {"user.gender: not male or female": 1, NOT_JSON: 1}


def test_a_limit_still_too_small_keeps_the_letter_with_the_reason_of_today() -> None:
    [user] = SyntheticSource(4, now=NOW).next_batch(1)
    value = profile_envelope(user, "synthetic", NOW, "1.4").value()
    [step] = redrive_plan([letter("t:1:9", user["login"]["uuid"], value)], {}, set(), NOW, RecordLimits(100))
    assert (step.outcome, step.reason) == ("still refused", "record over the limit of 100 bytes")


def test_a_redriven_record_says_where_it_comes_from() -> None:
    assert redrive_headers("profiles:2:41") == [
        ("userpulse-source", b"redrive"),
        ("userpulse-redrive-of", b"profiles:2:41"),
    ]


def test_a_producers_dead_letter_that_now_passes_becomes_the_envelope_the_producer_would_publish() -> None:
    passes, odd, erased, gone_key, tampered, too_big = SyntheticSource(5, now=NOW).next_batch(6)
    odd = {**odd, "gender": "unknown"}
    fetched_at = NOW - timedelta(minutes=5)
    data_key = new_data_key()
    named = {"passes": passes, "odd": odd, "erased": erased, "gone": gone_key, "tampered": tampered,
             "too_big": too_big}  # fmt: skip
    uuid = {name: user["login"]["uuid"] for name, user in named.items()}
    keys = {uuid[name]: data_key for name in ("passes", "odd", "erased", "tampered", "too_big")}

    def sealed_letter(name: str, letter_id: str) -> ProducerLetter:
        refused = dead_letter(
            named[name], "record over the limit of 1000 bytes", "randomuser", fetched_at, "1.4"
        )
        return ProducerLetter(letter_id, uuid[name], refused.sealed_with(data_key))

    broken = sealed_letter("tampered", "dlq:0:5")
    broken = ProducerLetter("dlq:0:5", broken.key, broken.letter.model_copy(update={"sealed": "AAAA"}))
    letters = [
        sealed_letter("passes", "dlq:0:1"),
        sealed_letter("odd", "dlq:0:2"),
        sealed_letter("erased", "dlq:0:3"),
        sealed_letter("gone", "dlq:0:4"),  # its key was shredded
        broken,
        sealed_letter("too_big", "dlq:0:6"),
    ]
    steps = producer_redrive_plan(letters, keys, {uuid["erased"]}, NOW, LIMITS)
    assert [(s.letter_id, s.outcome, s.reason) for s in steps[1:5]] == [
        ("dlq:0:2", "still refused", "user.gender: not male or female"),
        ("dlq:0:3", "erased", None),
        ("dlq:0:4", "erased", None),
        ("dlq:0:5", "still refused", UNSEALABLE),
    ]
    # Published as the producer publishes it: its envelope, sealed under the subject's key, keyed by uuid.
    redriven = steps[0]
    assert (redriven.outcome, redriven.key) == ("redriven", uuid["passes"])
    assert redriven.value is not None
    envelope = ProfileEnvelope.model_validate_json(redriven.value)
    assert (
        envelope.sealed is not None and envelope.fetched_at == fetched_at and envelope.source == "randomuser"
    )
    assert "email" not in envelope.user and envelope.uuid == uuid["passes"]
    assert unseal_identifiers(envelope.user, envelope.sealed, data_key)["email"] == passes["email"]
    assert "password" not in redriven.value.decode()
    # The size the layers check is the published value's.
    [small] = producer_redrive_plan(letters[5:], keys, set(), NOW, RecordLimits(max_record_bytes=300))
    assert (small.outcome, small.reason) == ("still refused", "record over the limit of 300 bytes")
