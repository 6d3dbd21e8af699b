"""The small latest-profiles copy the speed layer's raw store keeps, on the real MongoDB-compatible server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo.database import Database

from core.settings import Settings
from serving.profiles import ProfileDocuments
from stores.connections import mongo_client
from stores.documents import MongoRawStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def database(own_stores: Callable[..., Settings]) -> Iterator[Database]:
    settings = own_stores("latest")
    client = mongo_client(settings)
    yield client[settings.mongo.database]
    client.close()


def document(index: int, country: str) -> dict:
    return {
        "_id": f"uuid-{index}",
        "fetched_at": T0 + timedelta(seconds=index),
        "source": "synthetic",
        "user": {"name": {"first": "Ann", "last": "Lee"}, "email": "ann@example.com", "phone": "555-0101",
                 "gender": "female", "dob": {"age": 30}, "location": {"country": country}, "nat": "FR"},
    }  # fmt: skip


def test_the_copy_keeps_only_the_newest_documents_and_serves_them_newest_first(database: Database) -> None:
    store = MongoRawStore(
        database["profiles"], database["dead_letters"], database["tallies"], database["latest"], latest_kept=5
    )
    store.ensure_indexes()
    # Three batches, the second one older than the first (late data) and with a replayed document.
    # (The speed layer trims the copy once per micro-batch, after its tasks have inserted.)
    store.insert_profiles([document(i, "France") for i in range(10, 14)])
    store.trim_latest()
    store.insert_profiles([document(i, "Spain") for i in range(0, 4)] + [document(13, "France")])
    store.trim_latest()
    store.insert_profiles([document(i, "Spain") for i in range(14, 17)])
    store.trim_latest()

    assert database["profiles"].count_documents({}) == 11  # every document once
    assert sorted(d["_id"] for d in database["latest"].find()) == [f"uuid-{i}" for i in range(12, 17)]
    documents = ProfileDocuments(store)
    assert [row.uuid for row in documents.latest(3)] == ["uuid-16", "uuid-15", "uuid-14"]
    assert [row.uuid for row in documents.latest(10, country="France")] == ["uuid-13", "uuid-12"]
    assert documents.latest(1)[0].email == "a***@example.com"
