"""What a re-drive does with each dead letter (``ingestion.redrive.redrive_plan``), on tiny inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.profile import profile_envelope
from core.sealing import new_data_key
from core.validation import NOT_JSON, RecordLimits
from ingestion.redrive import RedriveReport, RedriveStep, redrive_headers, redrive_plan
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
