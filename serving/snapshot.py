"""Everything one dashboard refresh shows, read in one call: the dashboard's only query.

Filters narrow what the stores can answer without a scan. The aggregates are kept per single dimension
(see ``core.aggregates``), so a country or a gender narrows the headline figures, the ingestion timeline
and the latest profiles; the breakdown charts always show all profiles of the time range, with the
selected value highlighted. Narrowing by country *and* gender at once would need cross-dimension views:
the headline then follows the country and says so.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from core.aggregates import DIMENSIONS, window_floor
from serving.profiles import ProfileDocuments, ProfileRow
from serving.views import DimensionView, Freshness, ServingViews, TimeRange, WindowCount

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Filters:
    """What the user narrowed the dashboard to."""

    country: str | None = None
    gender: str | None = None
    minutes: int | None = None
    """Only the windows of the last ``minutes`` (``None``: all time)."""

    @property
    def segment(self) -> tuple[str, str] | None:
        """The (dimension, value) the headline and timeline are narrowed to, if any."""
        if self.country:
            return ("country", self.country)
        if self.gender:
            return ("gender", self.gender)
        return None


@dataclass(frozen=True)
class Headline:
    profiles: int
    average_age: float | None
    countries: int
    profiles_per_minute: float | None
    """Profiles per minute in ``rate_window`` (see ``per_minute``)."""
    dead_lettered: int | None
    """``None`` when the dead-letter store could not be read."""
    rate_window: datetime | None = None
    """The window ``profiles_per_minute`` was measured in."""


@dataclass(frozen=True)
class Snapshot:
    """One refresh's answer. A part whose store failed is ``None`` and its error says why."""

    filters: Filters
    taken_at: datetime
    headline: Headline | None
    breakdowns: dict[str, DimensionView]
    timeline: list[WindowCount] | None
    latest: list[ProfileRow] | None
    freshness: Freshness | None
    errors: dict[str, str] = field(default_factory=dict)
    """Per part (``aggregates``, ``latest``, ``dead_letters``): why it could not be read."""
    notes: list[str] = field(default_factory=list)
    """What the user should know about this answer (e.g. a filter that could not apply everywhere)."""


def time_range_of(filters: Filters, now: datetime, window_seconds: int) -> TimeRange:
    """Windows of the last ``filters.minutes`` (whole windows, the current one included), or all time."""
    if filters.minutes is None:
        return TimeRange()
    return TimeRange(start=window_floor(now - timedelta(minutes=filters.minutes), window_seconds))


def timeline_range_of(
    filters: Filters, now: datetime, newest_window: datetime | None, window_seconds: int, minutes: int
) -> TimeRange:
    """The windows the ingestion chart shows: those of the time range, or, for all time, the last
    ``minutes`` up to the newest window with data (however long ago that was: a chart of the last hour
    of the clock would be empty when the data is older)."""
    if filters.minutes is not None:
        return time_range_of(filters, now, window_seconds)
    end = (newest_window or window_floor(now, window_seconds)) + timedelta(seconds=window_seconds)
    return TimeRange(start=window_floor(end - timedelta(minutes=minutes), window_seconds), end=end)


def per_minute(
    timeline: list[WindowCount], now: datetime, window_seconds: int
) -> tuple[float, datetime] | None:
    """Profiles per minute, and the window measured: the newest window with data that has ended; when
    only the current window has data, the part of it that has passed. ``None`` without data."""
    if not timeline:
        return None
    current = window_floor(now, window_seconds)
    complete = [w for w in timeline if w.window_start < current]
    if complete:
        newest = complete[-1]
        return newest.profiles * 60 / window_seconds, newest.window_start
    newest = timeline[-1]
    elapsed = min(max((now - newest.window_start).total_seconds(), 1.0), window_seconds)
    return newest.profiles * 60 / elapsed, newest.window_start


def headline_of(
    breakdowns: dict[str, DimensionView],
    filters: Filters,
    rate: tuple[float, datetime] | None,
    dead_lettered: int | None,
) -> Headline:
    """Headline figures of all profiles, or of the filtered segment."""
    per_minute, rate_window = rate if rate is not None else (None, None)
    segment = filters.segment
    if segment is None:
        total = breakdowns["age_band"]
        countries = len([v for v in breakdowns["country"].values if v.profiles])
        return Headline(total.profiles, total.average_age, countries, per_minute, dead_lettered, rate_window)
    dimension, value = segment
    figures = breakdowns[dimension].value(value)
    if figures is None:
        return Headline(0, None, 0, per_minute, dead_lettered, rate_window)
    countries = 1 if dimension == "country" else len([v for v in breakdowns["country"].values if v.profiles])
    return Headline(figures.profiles, figures.average_age, countries, per_minute, dead_lettered, rate_window)


def take_snapshot(
    views: ServingViews,
    documents: ProfileDocuments,
    filters: Filters,
    window_seconds: int,
    timeline_minutes: int,
    latest_rows: int,
) -> Snapshot:
    """Read what one refresh shows. Each store is read on its own: one failing leaves the others' parts."""
    now = datetime.now(UTC)
    time_range = time_range_of(filters, now, window_seconds)
    errors: dict[str, str] = {}

    def attempt(part: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except Exception as error:  # shown in place on the page; the other parts still render
            logger.warning("dashboard part %s failed: %s", part, error)
            errors[part] = f"{type(error).__name__}: {error}"
            return None

    def read_aggregates() -> tuple[dict[str, DimensionView], list[WindowCount]]:
        breakdowns = {view.dimension: view for view in views.dimensions(DIMENSIONS, time_range)}
        freshness = breakdowns["age_band"].freshness
        newest = max(
            (w for w in (freshness.last_speed_window, freshness.batch_cutoff) if w is not None), default=None
        )
        timeline_range = timeline_range_of(filters, now, newest, window_seconds, timeline_minutes)
        segment = filters.segment
        timeline = views.timeline(timeline_range, *segment) if segment else views.timeline(timeline_range)
        return breakdowns, timeline

    aggregates = attempt("aggregates", read_aggregates)
    dead_lettered = attempt("dead_letters", documents.dead_lettered)
    latest = attempt(
        "latest", lambda: documents.latest(latest_rows, filters.country, filters.gender, time_range)
    )
    notes = []
    if filters.country and filters.gender:
        notes.append(
            f"Counts follow the country ({filters.country}); "
            "the gender filter narrows the latest profiles only."
        )
    if aggregates is None:
        return Snapshot(filters, now, None, {}, None, latest, None, errors, notes)
    breakdowns, timeline = aggregates
    headline = headline_of(breakdowns, filters, per_minute(timeline, now, window_seconds), dead_lettered)
    freshness = breakdowns["age_band"].freshness
    return Snapshot(filters, now, headline, breakdowns, timeline, latest, freshness, errors, notes)


class SharedSnapshots:
    """The newest snapshot per filters, shared by every browser session of one dashboard process.

    Sessions with the same filters then cost the stores one query per refresh period, not one each;
    and a page that opens shows the newest snapshot at once (marked with its time) while its own read
    is under way, rather than an empty page.
    """

    def __init__(self) -> None:
        self._newest: dict[Filters, Snapshot] = {}
        self._lock = threading.Lock()

    def newest(self, filters: Filters) -> Snapshot | None:
        with self._lock:
            return self._newest.get(filters)

    def fresh(self, filters: Filters, now: datetime, max_age_s: float) -> Snapshot | None:
        """The newest snapshot of ``filters`` if it was taken at most ``max_age_s`` ago."""
        snapshot = self.newest(filters)
        if snapshot is None or (now - snapshot.taken_at).total_seconds() > max_age_s:
            return None
        return snapshot

    def keep(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` unless a newer one of the same filters is already kept."""
        with self._lock:
            kept = self._newest.get(snapshot.filters)
            if kept is None or kept.taken_at < snapshot.taken_at:
                self._newest[snapshot.filters] = snapshot
