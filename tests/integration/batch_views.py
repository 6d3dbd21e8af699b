"""The batch views: an independent recount of the known input, and the stored views read back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.settings import Settings
from core.stores import cassandra_session
from tests.integration.profiles_input import add, age_when_fetched, dimension_values

Totals = dict[tuple[str, str], list[int]]
WindowTotals = dict[tuple[str, datetime, str], list[int]]


def batch_recount(envelopes: list[dict[str, Any]]) -> tuple[datetime, WindowTotals, Totals]:
    """Cutoff, per-window and all-time totals: latest version per uuid, adults, events before the cutoff."""
    latest: dict[str, dict[str, Any]] = {}
    for envelope in envelopes:  # in production order: a later copy with a later fetch time wins
        uuid = envelope["user"]["login"]["uuid"]
        fetched_at = datetime.fromisoformat(envelope["fetched_at"])
        if uuid not in latest or fetched_at >= datetime.fromisoformat(latest[uuid]["fetched_at"]):
            latest[uuid] = envelope
    newest = max(datetime.fromisoformat(e["fetched_at"]) for e in latest.values())
    cutoff = newest.replace(second=0, microsecond=0)
    windows: WindowTotals = {}
    totals: Totals = {}
    for envelope in latest.values():
        user = envelope["user"]
        fetched_at = datetime.fromisoformat(envelope["fetched_at"])
        age = age_when_fetched(envelope)
        if age < 18 or fetched_at >= cutoff:
            continue
        for dimension, value in dimension_values(user, age).items():
            add(windows, (dimension, fetched_at.replace(second=0, microsecond=0), value), age)
            add(totals, (dimension, value), age)
    return cutoff, windows, totals


def stored_views(settings: Settings) -> tuple[int, datetime, WindowTotals, Totals]:
    keyspace = settings.cassandra.keyspace
    cluster, session = cassandra_session(settings)
    try:
        current = session.execute(
            f"SELECT version, cutoff FROM {keyspace}.batch_current WHERE view_name = 'profiles'"
        ).one()
        version = current.version
        windows = {
            (r.dimension, r.window_start.replace(tzinfo=UTC), r.value): [
                r.profiles,
                r.age_sum,
                r.age_min,
                r.age_max,
            ]
            for r in session.execute(f"SELECT * FROM {keyspace}.batch_window_aggregates")
            if r.version == version
        }
        totals = {
            (r.dimension, r.value): [r.profiles, r.age_sum, r.age_min, r.age_max]
            for r in session.execute(f"SELECT * FROM {keyspace}.batch_aggregates")
            if r.version == version
        }
        versions = {
            r.version
            for r in session.execute(f"SELECT DISTINCT version, dimension FROM {keyspace}.batch_aggregates")
        }
    finally:
        cluster.shutdown()
    assert versions == {version}, "older versions were not cleaned up"
    return version, current.cutoff.replace(tzinfo=UTC), windows, totals
