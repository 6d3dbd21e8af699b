"""The counting rule (``core.versions``): first window, latest attributes, any order, exact deltas."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, date, datetime, timedelta

from core.versions import (
    AgeFigures,
    Contribution,
    ProfileCopy,
    ProfileState,
    Sighting,
    contribution,
    fold,
    partial_changes,
    recount,
)

BASE = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def copy(uuid: str, minute: float, offset: int, age: int, country: str) -> ProfileCopy:
    attributes = {
        "source": "synthetic", "gender": "male", "country": country, "nationality": "FR",
        "email_domain": "example.com", "age": age, "age_band": "25-34" if age < 35 else "35-44",
        "registration_date": date(2020, 1, 1), "email_pseudonym": "e", "phone_pseudonym": "p",
        "cell_pseudonym": "c", "address_pseudonym": "a",
    }  # fmt: skip
    return ProfileCopy(uuid, Sighting(BASE + timedelta(minutes=minute), 0, offset), attributes)


def test_a_profile_counts_in_its_first_window_with_its_latest_attributes() -> None:
    first, refetch = copy("a", 0.5, 0, 30, "France"), copy("a", 9, 5, 31, "Spain")

    state = fold(None, [first, refetch], 18)

    counted = contribution(state, 60)
    assert counted == Contribution(
        BASE,
        {
            "country": "Spain",
            "gender": "male",
            "nationality": "FR",
            "email_domain": "example.com",
            "age_band": "25-34",
        },
        31,
    )


def test_the_state_is_the_same_in_any_order_and_batching() -> None:
    copies = [copy("a", 3, 2, 30, "France"), copy("a", 1, 9, 30, "Iran"), copy("a", 7, 4, 36, "Spain")]
    states = [
        fold(fold(None, order[:cut], 18), order[cut:], 18)
        for order in itertools.permutations(copies)
        for cut in range(len(order) + 1)
    ]
    state = states[0]
    assert all(other == state for other in states)
    assert state.first.offset == 9 and state.latest.offset == 4


def test_a_copy_seen_again_changes_nothing() -> None:
    state = fold(None, [copy("a", 1, 0, 30, "France")], 18)
    assert fold(state, [copy("a", 1, 0, 30, "France")], 18) == state


def test_under_age_latest_copies_are_not_counted_and_keep_no_attributes() -> None:
    state = fold(None, [copy("a", 1, 0, 30, "France"), copy("a", 2, 1, 17, "France")], 18)
    assert state is not None and not state.counted and state.attributes == {}
    assert contribution(state, 60) is None
    grown_up = fold(state, [copy("a", 9, 2, 18, "France")], 18)
    counted = contribution(grown_up, 60)
    assert counted is not None and counted.window_start == BASE + timedelta(minutes=1)  # its first window


def test_partial_changes_move_a_profile_and_keep_the_ages() -> None:
    before = contribution(fold(None, [copy("a", 1, 0, 30, "France")], 18), 60)
    after = contribution(fold(None, [copy("a", 1, 0, 30, "France"), copy("a", 3, 1, 31, "Spain")], 18), 60)

    changes = partial_changes([(before, after), (after, after)])

    assert changes[("country", BASE + timedelta(minutes=1), "France")] == Counter({30: -1})
    assert changes[("country", BASE + timedelta(minutes=1), "Spain")] == Counter({31: 1})
    assert changes[("age_band", BASE + timedelta(minutes=1), "25-34")] == Counter({30: -1, 31: 1})
    assert ("gender", BASE + timedelta(minutes=1), "male") in changes  # the age changed: 30 -> 31
    assert ("nationality", BASE + timedelta(minutes=1), "FR") in changes


def test_the_sum_of_partials_equals_the_recount() -> None:
    copies = [copy(f"u{i % 7}", i * 0.7, i, 18 + (i * 5) % 40, ["France", "Spain"][i % 2]) for i in range(40)]
    totals: dict = {}
    state: dict[str, ProfileState | None] = {}
    for batch in [copies[:10], copies[10:11], copies[11:30], copies[30:]]:
        for uuid in {c.uuid for c in batch}:
            before = state.get(uuid)
            state[uuid] = fold(before, [c for c in batch if c.uuid == uuid], 18)
            for key, counts in partial_changes(
                [(contribution(before, 60), contribution(state[uuid], 60))]
            ).items():
                totals.setdefault(key, Counter()).update(counts)
    expected = recount(copies, 18, 60)
    assert {k: +v for k, v in totals.items() if +v} == expected


def test_states_survive_their_text_form() -> None:
    state = fold(None, [copy("a", 1, 0, 30, "France"), copy("a", 0.5, 3, 31, "Spain")], 18)
    assert state is not None
    assert ProfileState.from_json(state.to_json()) == state


def test_age_figures_ignore_ages_that_left() -> None:
    assert AgeFigures.of(Counter({30: 1, 41: 0, 25: -0, 70: 2})) == AgeFigures(3, 170, 30, 70)
