"""Dashboard benchmark: latency of one refresh query (``serving.snapshot.take_snapshot``) on loaded stores.

    .venv/bin/python bench/bench_dashboard.py [--profiles 1000000] [--documents 1000000] [--repeat 50]

The stores are loaded as the layers would leave them after ``--profiles`` adult profiles: a current batch
view over ``--hours`` of one-minute windows before the cutoff (90% of the profiles), and speed partials
of ``--batches-per-window`` micro-batches per window for ``--speed-windows`` windows from the cutoff on
(the other 10%), written with the layers' own store classes; MongoDB gets ``--documents`` raw documents.
Dimension values come from a pool of synthetic profiles, so the value counts are realistic.

Then one refresh is timed ``--repeat`` times for each filter (all time; last hour; one country), and its
parts (merged breakdowns, timeline, latest profiles) on their own: p50 and p95 in milliseconds.
Starts the local stack if it is not running (and stops it after); everything it creates is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import local_stack, timed

from core.aggregates import window_floor
from core.profile import profile_envelope
from core.settings import Settings, get_settings
from core.transformations import age_band_of
from infra.isolation import own_stores
from ingestion.synthetic import SyntheticSource
from serving.profiles import profile_documents
from serving.snapshot import Filters, take_snapshot
from serving.views import TimeRange, serving_views
from stores.batch_views import BatchCurrent, BatchViewStore
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session, mongo_client, mongo_database
from stores.documents import mongo_raw_store, raw_document
from stores.speed_views import CassandraSpeedStore, partial_row

WINDOW = timedelta(minutes=1)
POOL = 5_000


def profile_pool(now: datetime) -> list[dict[str, Any]]:
    """Synthetic adults with their dimension values and age, to draw the loaded profiles from."""
    pool = []
    source = SyntheticSource(7)
    for user in source.next_batch(POOL) + source.next_batch(POOL):
        age = int(user["dob"]["age"])
        if age < 18:
            continue
        values = {
            "country": user["location"]["country"],
            "gender": user["gender"],
            "nationality": user["nat"],
            "email_domain": user["email"].rsplit("@", 1)[1].lower(),
            "age_band": age_band_of(age),
        }
        pool.append({"user": user, "age": age, "values": values})
    return pool[:POOL]


def aggregate(
    pool: list[dict[str, Any]], count: int, windows: list[datetime], offset: int = 0
) -> dict[tuple[str, datetime, str], Counter[int]]:
    """(dimension, window, value) -> profiles per age, for ``count`` profiles spread over ``windows``."""
    rows: dict[tuple[str, datetime, str], Counter[int]] = {}
    per_window: Counter[tuple[int, int]] = Counter(
        ((offset + i) % len(pool), i % len(windows)) for i in range(count)
    )
    for (pool_index, window_index), times in per_window.items():
        entry = pool[pool_index]
        for dimension, value in entry["values"].items():
            rows.setdefault((dimension, windows[window_index], value), Counter())[entry["age"]] += times
    return rows


def view_row(ages: Counter[int]) -> dict[str, Any]:
    """The figures of a batch view row (``core.aggregates.VIEW_COLUMNS``) from its age counts."""
    return {
        "profiles": sum(ages.values()), "age_sum": sum(age * n for age, n in ages.items()),
        "age_min": min(ages), "age_max": max(ages), "ages": dict(ages),
    }  # fmt: skip


def load(
    settings: Settings, profiles: int, documents: int, hours: int, speed_windows: int, batches: int
) -> None:
    now = datetime.now(UTC)
    pool = profile_pool(now)
    cutoff = window_floor(now, 60) - (speed_windows - 1) * WINDOW
    batch_windows = [cutoff - (i + 1) * WINDOW for i in range(hours * 60)]
    after_cutoff = [cutoff + i * WINDOW for i in range(speed_windows)]
    batch_count = profiles * 9 // 10
    cluster, session = cassandra_session(settings)
    try:
        keyspace, concurrency = settings.cassandra.keyspace, settings.cassandra.concurrency
        apply_schema(session, keyspace, settings.cassandra.keyspace_replication)
        started = time.monotonic()
        batch_rows = aggregate(pool, batch_count, batch_windows)
        totals: dict[tuple[str, str], Counter[int]] = {}
        for (dimension, _window, value), ages in batch_rows.items():
            totals.setdefault((dimension, value), Counter()).update(ages)
        batch_store = BatchViewStore(session, keyspace, concurrency)
        batch_store.write_version(
            1,
            [{"dimension": d, "value": v, **view_row(ages)} for (d, v), ages in totals.items()],
            [{"dimension": d, "window_start": w, "value": v, "window_end": w + WINDOW, **view_row(ages)}
             for (d, w, v), ages in batch_rows.items()],
        )  # fmt: skip
        # The view covers no speed batch: serving adds every partial (batch ids from 0 on).
        current = BatchCurrent(1, cutoff, batch_count, now, -1, {}, 0)
        batch_store.make_current(current, batch_store.erasure_seq())
        speed_store = CassandraSpeedStore(session, keyspace, concurrency)
        speed_count = profiles - batch_count
        per_batch = max(1, speed_count // (speed_windows * batches))
        partials = []
        for batch_id in range(speed_windows * batches):
            window = after_cutoff[batch_id // batches]
            rows = aggregate(pool, per_batch, [window], offset=batch_id * per_batch)
            partials.extend(partial_row(key, ages, batch_id, 0, 60) for key, ages in rows.items())
        speed_store.write_partials(partials)
        print(
            f"cassandra: batch view of {batch_count:,} profiles in {len(batch_rows):,} window rows, "
            f"{len(partials):,} speed partials, loaded in {time.monotonic() - started:.0f} s"
        )
    finally:
        cluster.shutdown()
    client = mongo_client(settings)
    try:
        database = mongo_database(client, settings)
        raw = mongo_raw_store(database, settings)
        raw.ensure_indexes()
        started = time.monotonic()
        chunk = 10_000
        for first in range(0, documents, chunk):
            batch = []
            for i in range(first, min(first + chunk, documents)):
                entry = pool[i % len(pool)]
                user = {**entry["user"], "login": {**entry["user"]["login"], "uuid": str(uuid.uuid4())}}
                fetched_at = now - timedelta(seconds=(documents - i) * hours * 3600 / documents)
                envelope = profile_envelope(user, "synthetic", fetched_at).model_dump_json()
                row = {"uuid": user["login"]["uuid"], "raw_value": envelope.encode(),
                       "fetched_at": fetched_at, "topic": "bench", "partition": 0, "offset": i}  # fmt: skip
                batch.append(raw_document(row, now))
            raw.insert_profiles(batch)
        print(f"mongodb: {documents:,} raw documents loaded in {time.monotonic() - started:.0f} s")
    finally:
        client.close()


def measure(settings: Settings, repeat: int) -> list[dict[str, Any]]:
    cluster, session = cassandra_session(settings)
    client = mongo_client(settings)
    try:
        views = serving_views(session, settings)
        database = mongo_database(client, settings)
        documents = profile_documents(database, settings)
        country = views.dimension("country").values[0].value
        serving = settings.serving

        def refresh(filters: Filters) -> Callable[[], object]:
            return lambda: take_snapshot(
                views, documents, filters, 60, serving.timeline_minutes, serving.latest_profiles
            )

        last_hour = TimeRange(start=window_floor(datetime.now(UTC), 60) - 60 * WINDOW)
        return [
            timed("refresh, all time", refresh(Filters()), repeat),
            timed("refresh, last hour", refresh(Filters(minutes=60)), repeat),
            timed(f"refresh, country = {country}", refresh(Filters(country=country)), repeat),
            timed("merged breakdowns, all time (Cassandra)", lambda: views.dimensions(
                ("country", "gender", "nationality", "email_domain", "age_band")), repeat),
            timed("timeline, last hour (Cassandra)", lambda: views.timeline(last_hour), repeat),
            timed("latest profiles (MongoDB)", lambda: documents.latest(serving.latest_profiles), repeat),
            timed(f"latest profiles of {country} (MongoDB)", lambda: documents.latest(
                serving.latest_profiles, country=country), repeat),
        ]  # fmt: skip
    finally:
        client.close()
        cluster.shutdown()


def main() -> None:
    # Synthetic data on throwaway stores: the public default secrets are fine (see SecretSettings).
    os.environ.setdefault("USERPULSE_SECRETS__DEVELOPMENT_MODE", "true")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--hours", type=int, default=24, help="hours of batch windows before the cutoff")
    parser.add_argument("--speed-windows", type=int, default=30)
    parser.add_argument("--batches-per-window", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    base = get_settings()
    with (
        local_stack(base),
        own_stores(base, "bench_dashboard", Path(tempfile.mkdtemp(prefix="bench_dashboard"))) as settings,
    ):
        load(settings, args.profiles, args.documents, args.hours, args.speed_windows, args.batches_per_window)
        results = measure(settings, args.repeat)
        print(json.dumps({"profiles": args.profiles, "documents": args.documents, "results": results}))


if __name__ == "__main__":
    main()
