"""The dead-letter tallies on the real MongoDB-compatible server: after every kind of change to the letters
(inserts, replays, the other layer's copy, re-drive marks, new reasons, erasure, deletion, retention) they
hold what a ``$group`` over the letters themselves counts; a tally knocked off (a process that died
between its two writes) is set right by the recount; the newest letters come back as a full sort gives
them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.settings import RetentionSettings, Settings
from stores import documents
from stores.connections import mongo_client, mongo_database
from stores.documents import OUTSTANDING, MongoRawStore, mongo_raw_store, tally_key

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
EARLIER = NOW - timedelta(hours=2)


def letter(offset: int, reason: str, job: str = "speed", key: str | None = None) -> dict[str, Any]:
    return {"_id": f"profiles:0:{offset}", "job": job, "topic": "profiles", "partition": 0, "offset": offset,
            "key": key, "raw_value": b"{}", "reason": reason}  # fmt: skip


def counted_from_letters(store: MongoRawStore) -> dict[tuple[str, str, datetime | None], int]:
    """What the tallies must say: one ``$group`` over the outstanding letters (what the page read before)."""
    groups = store.dead_letters.aggregate(
        [{"$match": OUTSTANDING},
         {"$group": {"_id": {"job": "$job", "reason": "$reason", "stored_hour": "$stored_hour"},
                     "count": {"$sum": 1}}}]
    )  # fmt: skip
    return {tally_key(group["_id"]): group["count"] for group in groups}


def tallied(store: MongoRawStore) -> dict[tuple[str, str, datetime | None], int]:
    return {
        tally_key({"job": job, "reason": reason, "stored_hour": hour}): count
        for job, reason, hour, count in store.outstanding_dead_letter_groups()
    }


@pytest.fixture
def store(own_stores: Callable[..., Settings]) -> Any:
    # A copy of the 10 newest letters, so that 40 letters overflow it.
    settings = own_stores("tallies", mongo={"newest_dead_letters_kept": 10})
    with mongo_client(settings) as client:
        yield mongo_raw_store(mongo_database(client, settings), settings)


def test_the_tallies_follow_every_change_of_the_letters(store: MongoRawStore) -> None:
    store.insert_dead_letters([letter(i, "invalid email", key=f"uuid-{i % 4}") for i in range(12)], EARLIER)
    store.insert_dead_letters([letter(i, "not json") for i in range(12, 20)], EARLIER)
    store.insert_dead_letters([letter(i, "not json") for i in range(20, 26)], NOW)
    # A replayed micro-batch, and the batch layer meeting records the speed layer stored: nothing new.
    store.insert_dead_letters([letter(i, "not json") for i in range(12, 26)], NOW)
    store.insert_dead_letters([letter(i, "invalid email", job="batch") for i in range(0, 6)], NOW)
    store.insert_dead_letters([letter(i, "invalid email", job="batch") for i in range(26, 29)], NOW)
    assert tallied(store) == counted_from_letters(store)
    assert sum(tallied(store).values()) == 29

    store.mark_redriven("profiles:0:12", NOW, "profiles:1:0")
    store.mark_redriven("profiles:0:12", NOW, "profiles:1:0")  # marked twice: leaves its tally once
    store.mark_redriven("profiles:0:20", NOW, "profiles:1:1")
    store.set_dead_letter_reason("profiles:0:13", "too large", NOW)
    store.set_dead_letter_reason("profiles:0:12", "too large", NOW)  # re-driven already: counted nowhere
    store.set_dead_letter_reason("profiles:0:14", "not json", NOW)  # the same reason: no move
    assert store.erase("uuid-1")["MongoDB " + store.dead_letters.name] == 3  # offsets 1, 5 and 9
    assert store.delete_dead_letters(["profiles:0:21", "profiles:0:21", "profiles:0:999"]) == 1
    assert tallied(store) == counted_from_letters(store)
    assert sum(tallied(store).values()) == 29 - 2 - 3 - 1
    assert tallied(store)[("speed", "too large", EARLIER.replace(minute=0, tzinfo=None))] == 1

    # Retention: the letters stored two hours ago go, and their tallies with them.
    store.expire(RetentionSettings(dead_letters_days=1), NOW + timedelta(days=1) - timedelta(hours=1))
    assert tallied(store) == counted_from_letters(store)
    assert {hour for _, _, hour in tallied(store)} == {NOW.replace(minute=0, tzinfo=None)}


def test_the_recount_sets_right_the_closed_hours_and_leaves_the_current_one_to_its_writers(
    store: MongoRawStore,
) -> None:
    store.insert_dead_letters([letter(i, "not json") for i in range(5)], EARLIER)
    store.insert_dead_letters([letter(i, "invalid email") for i in range(5, 8)], EARLIER)
    store.insert_dead_letters([letter(i, "not json") for i in range(8, 10)], NOW)
    right = counted_from_letters(store)
    # A process died between a letter's write and its tally's: one tally short, one gone, one too many.
    store.tallies.update_one(
        {"_id": documents.tally_id(("speed", "not json", _hour(EARLIER)))}, {"$inc": {"count": -2}}
    )
    store.tallies.delete_one({"_id": documents.tally_id(("speed", "invalid email", _hour(EARLIER)))})
    store.tallies.update_one(
        {"_id": documents.tally_id(("speed", "not json", _hour(NOW)))}, {"$inc": {"count": 7}}
    )
    assert tallied(store) != right

    assert store.recount_dead_letter_tallies(NOW) == 2
    current = ("speed", "not json", _hour(NOW))
    assert tallied(store) == {**right, current: right[current] + 7}  # this hour: its writers' own
    assert store.recount_dead_letter_tallies(NOW + timedelta(hours=1)) == 1
    assert tallied(store) == right
    assert store.recount_dead_letter_tallies(NOW + timedelta(hours=1)) == 0


def test_the_newest_letters_are_those_a_full_sort_gives(store: MongoRawStore) -> None:
    for second in range(40):
        reason = "rare" if second < 3 else ("not json" if second % 2 else "invalid email")
        store.insert_dead_letters([letter(second, reason)], EARLIER + timedelta(seconds=second))
    store.mark_redriven("profiles:0:39", NOW, "profiles:1:0")

    def full_sort(limit: int, reason: str | None) -> list[str]:
        query = OUTSTANDING if reason is None else {**OUTSTANDING, "reason": reason}
        return [d["_id"] for d in store.dead_letters.find(query).sort("stored_at", -1).limit(limit)]

    for limit, reason in [(5, None), (5, "not json"), (20, None), (3, "rare"), (5, "rare"), (5, "unknown")]:
        newest = [d["_id"] for d in store.newest_dead_letters(limit, reason)]
        assert newest == full_sort(limit, reason), (limit, reason)
    assert [d["_id"] for d in store.newest_dead_letters(2, None)] == ["profiles:0:38", "profiles:0:37"]
    assert store.newest_letters is not None
    assert store.newest_letters.count_documents({}) == 10  # the copy keeps the newest only
    store.set_dead_letter_reason("profiles:0:38", "rare", NOW)
    store.erase("uuid-of-37")  # no letter of theirs: nothing changes
    store.delete_dead_letters(["profiles:0:36"])
    for limit, reason in [(5, None), (2, "rare"), (5, "rare")]:
        newest = [d["_id"] for d in store.newest_dead_letters(limit, reason)]
        assert newest == full_sort(limit, reason), (limit, reason)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0, tzinfo=None)
