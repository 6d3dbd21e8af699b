"""The batch views read back from Cassandra, and the merged view read through serving."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from core.settings import Settings
from serving.views import serving_views
from stores.connections import cassandra_session
from tests.integration.support.profiles_input import AgeCounts

Totals = dict[tuple[str, str], Counter[int]]


def stored_views(settings: Settings) -> tuple[int, datetime | None, AgeCounts, Totals]:
    """The current batch view: version, cutoff, profiles per age of each window and of all time."""
    keyspace = settings.cassandra.keyspace
    cluster, session = cassandra_session(settings)
    try:
        current = session.execute(
            f"SELECT version, cutoff FROM {keyspace}.batch_current WHERE view_name = 'profiles'"
        ).one()
        version = current.version
        windows = {
            (r.dimension, r.window_start.replace(tzinfo=UTC), r.value): _checked(r)
            for r in session.execute(f"SELECT * FROM {keyspace}.batch_window_aggregates")
            if r.version == version
        }
        totals = {
            (r.dimension, r.value): _checked(r)
            for r in session.execute(f"SELECT * FROM {keyspace}.batch_aggregates")
            if r.version == version
        }
        versions = {
            r.version
            for r in session.execute(f"SELECT DISTINCT version, dimension FROM {keyspace}.batch_aggregates")
        }
    finally:
        cluster.shutdown()
    assert versions <= {version}, "older versions were not cleaned up"
    cutoff = current.cutoff.replace(tzinfo=UTC) if current.cutoff else None
    return version, cutoff, windows, totals


def _checked(row: object) -> Counter[int]:
    """A view row's profiles per age, after checking its other measures agree with them."""
    ages = Counter(dict(row.ages or {}))  # type: ignore[attr-defined]
    assert row.profiles == sum(ages.values())  # type: ignore[attr-defined]
    assert row.age_sum == sum(age * n for age, n in ages.items())  # type: ignore[attr-defined]
    assert (row.age_min, row.age_max) == (min(ages), max(ages))  # type: ignore[attr-defined]
    return ages


def merged_view(settings: Settings) -> dict[tuple[str, str], tuple[int, int, int | None, int | None]]:
    """What serving answers for every dimension, all time: (dimension, value) -> (profiles, age sum,
    youngest, oldest)."""
    cluster, session = cassandra_session(settings)
    try:
        views = serving_views(session, settings)
        return {
            (view.dimension, figures.value): (
                figures.profiles,
                figures.age_sum,
                figures.age_min,
                figures.age_max,
            )
            for view in views.dimensions(("country", "gender", "nationality", "email_domain", "age_band"))
            for figures in view.values
        }
    finally:
        cluster.shutdown()
