"""The live dashboard: merged Lambda views, the latest profiles and how fresh it all is.

One ``UserPulseDashboard`` per browser session. It reads through ``serving.snapshot.take_snapshot`` (the
only query), in a worker thread with a deadline so a slow store never freezes the page, and refreshes
itself with a Panel periodic callback (no reload) that the pause toggle stops and starts.

First paint: the page sent holds the sidebar and the headline only (from the newest snapshot another
session took, when there is one: memory, not a store read); the charts, the table and the lookup are
built and added once the page has loaded, after its first read. The sessions of one process share their
snapshots (``SharedSnapshots``), so N viewers cost the stores one read per refresh period.
"""

from __future__ import annotations

import asyncio
import html
import logging
from datetime import UTC, datetime
from functools import partial

import pandas as pd
import panel as pn
import param

from batch_layer.schedule import next_run
from core.aggregates import window_seconds_of
from core.settings import BatchLayerSettings, Settings
from core.transformations import AGE_BANDS
from serving.charts import BREAKDOWN_CSS, TimelineChart, breakdown_html
from serving.off_loop import read_within
from serving.profile_page import ProfileLookup
from serving.profile_store import ProfileStore
from serving.profiles import ProfileDocuments
from serving.snapshot import Filters, Headline, SharedSnapshots, Snapshot, take_snapshot
from serving.views import DimensionView, ServingViews

logger = logging.getLogger(__name__)

TIME_RANGES: dict[str, int | None] = {
    "All time": None,
    "Last 15 minutes": 15,
    "Last hour": 60,
    "Last 24 hours": 24 * 60,
}
"""Choices of the time-range filter: label -> minutes (``None``: all time)."""

ALL = "All"
"""The filter choice that does not narrow."""

BREAKDOWN_TITLES: dict[str, str] = {
    "country": "Profiles by country",
    "age_band": "Age distribution",
    "gender": "Gender split",
    "email_domain": "Top e-mail domains",
    "nationality": "Nationalities",
}

TIMELINE_TITLE = "Ingestion rate (profiles per window)"

LATEST_COLUMNS = ["fetched_at", "name", "gender", "age", "country", "nationality", "email", "phone", "source"]

LATEST_HEADERS = [
    "Fetched (UTC)",
    "Name",
    "Gender",
    "Age",
    "Country",
    "Nationality",
    "E-mail",
    "Phone",
    "Source",
]

CSS = """
.kpis { display: flex; flex-wrap: wrap; gap: 12px; }
.kpi { padding: 8px 16px; border-radius: 8px; background: #f4f6fa; min-width: 150px; }
.kpi .label { font-size: 0.85em; color: #556; }
.kpi .value { font-size: 1.9em; font-weight: 600; color: #1f3b73; }
.part-error { color: #8a1c1c; background: #fdecec; padding: 6px 10px; border-radius: 6px; }
.latest { max-height: 420px; overflow-y: auto; }
.latest table { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.latest th { position: sticky; top: 0; background: #f4f6fa; text-align: left; padding: 4px 6px; }
.latest td { padding: 3px 6px; border-top: 1px solid #e6e9f0; white-space: nowrap; }
.latest td.age { text-align: right; }
.latest .empty { color: #778; font-style: italic; }
"""


def format_count(value: float | None, digits: int = 0) -> str:
    """Thousands separators; an em dash when there is nothing to show."""
    return "—" if value is None else f"{value:,.{digits}f}"


def kpi_html(test_id: str, label: str, value: str) -> str:
    """One headline figure (``data-testid`` lets the browser test find it)."""
    return (
        f'<div class="kpi" data-testid="{test_id}"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div></div>'
    )


def rate_label(window: datetime | None) -> str:
    """The per-minute figure's label names the window it was measured in (it may be long ago)."""
    return "Profiles per minute" if window is None else f"Profiles per minute ({window:%H:%M} UTC)"


def timeline_title(minutes: int | None, timeline_minutes: int) -> str:
    """All time shows the last ``timeline_minutes`` of data; a time range shows itself."""
    return TIMELINE_TITLE if minutes is not None else f"{TIMELINE_TITLE}, last {timeline_minutes} min of data"


def headline_html(headline: Headline) -> str:
    figures = [
        ("kpi-profiles", "Profiles", format_count(headline.profiles)),
        ("kpi-average-age", "Average age", format_count(headline.average_age, 1)),
        ("kpi-countries", "Countries", format_count(headline.countries)),
        ("kpi-per-minute", rate_label(headline.rate_window), format_count(headline.profiles_per_minute)),
        ("kpi-dead-lettered", "Dead-lettered records", format_count(headline.dead_lettered)),
    ]
    return '<div class="kpis">' + "".join(kpi_html(*figure) for figure in figures) + "</div>"


def breakdown_frame(view: DimensionView, top: int) -> pd.DataFrame:
    """One row per value (the ``top`` largest; the rest summed as "other"), batch and speed counts apart."""
    rows = [
        {
            "label": v.value,
            "batch": v.batch_profiles,
            "speed": v.speed_profiles,
            "profiles": v.profiles,
            "average_age": round(v.average_age, 1) if v.average_age is not None else None,
        }
        for v in view.values
    ]
    if view.dimension == "age_band":
        order = {label: index for index, (label, _, _) in enumerate(AGE_BANDS)}
        return pd.DataFrame(sorted(rows, key=lambda r: order.get(r["label"], len(order))))
    head, rest = rows[:top], rows[top:]
    if rest:
        profiles = sum(r["profiles"] for r in rest)
        age_sum = sum(v.age_sum for v in view.values[top:])
        head.append(
            {
                "label": "other",
                "batch": sum(r["batch"] for r in rest),
                "speed": sum(r["speed"] for r in rest),
                "profiles": profiles,
                "average_age": round(age_sum / profiles, 1) if profiles is not None else None,
            }
        )
    return pd.DataFrame(head, columns=["label", "batch", "speed", "profiles", "average_age"])


def breakdown_title(dimension: str, selected: str | None) -> str:
    return BREAKDOWN_TITLES[dimension] + (f" (selected: {selected})" if selected else "")


def timeline_frame(snapshot: Snapshot) -> pd.DataFrame:
    """Profiles per window, and which layer counted it, with naive UTC times (as Bokeh plots them)."""
    frame = pd.DataFrame(
        [
            {"window_start": w.window_start, "profiles": w.profiles, "layer": w.layer}
            for w in snapshot.timeline or []
        ],
        columns=["window_start", "profiles", "layer"],
    )
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True).dt.tz_convert(None)
    return frame


def next_batch_run_text(batch_layer: BatchLayerSettings, now: datetime) -> str:
    """When the batch layer runs next, as its trigger (``batch_layer.archive_trigger``) decides."""
    if batch_layer.archive_trigger == "new_offsets":
        return (
            "archive as soon as new records wait in Kafka and no batch run is going (looked for every "
            f"{batch_layer.new_offsets_check_s} s), views refreshed right after it"
        )
    next_archive = _utc(next_run(batch_layer.archive_schedule, now))
    return (
        f"archive due {next_archive} (schedule `{batch_layer.archive_schedule}`, UTC; a tick is skipped "
        "while a batch run is still going), views refreshed right after it"
    )


def freshness_markdown(snapshot: Snapshot, batch_layer: BatchLayerSettings) -> str:
    """Batch cutoff and when it moves next, speed progress and lag, and each layer's share."""
    freshness = snapshot.freshness
    if freshness is None:
        return "**Freshness**: unknown (the views could not be read)."
    lines = ["### Freshness"]
    batch = freshness.batch
    if batch is None or batch.cutoff is None:
        lines.append(
            "- **Batch view**: none yet — every figure comes from the speed layer; the first one "
            "follows the next archive run."
        )
    else:
        lines.append(
            f"- **Batch view** v{batch.version}: complete up to **{_utc(batch.cutoff)}** "
            f"(computed {_utc(batch.computed_at)})"
        )
    lines.append(f"- **Next batch run**: {next_batch_run_text(batch_layer, snapshot.taken_at)}")
    speed = freshness.speed
    if speed is None:
        lines.append("- **Speed layer**: no micro-batch yet.")
    else:
        lag = freshness.speed_lag
        lag_text = "lag unknown" if lag is None else f"{lag.total_seconds():,.0f} s behind the newest event"
        waiting = f", {speed.kafka_lag:,} records waiting in Kafka" if speed.kafka_lag is not None else ""
        lines.append(f"- **Speed layer**: last batch {_utc(speed.processed_at)}, {lag_text}{waiting}")
        lines.append(f"- Rows dropped by the speed layer as too late: {speed.late_rows_dropped:,}")
    if freshness.last_speed_window is not None:
        lines.append(f"- Newest speed window: {_utc(freshness.last_speed_window)}")
    total_view = snapshot.breakdowns.get("age_band")
    if total_view is not None and total_view.profiles:
        batch_share = total_view.batch_profiles / total_view.profiles
        lines.append(
            f"- **Share of the counts**: {batch_share:.0%} batch ({total_view.batch_profiles:,}), "
            f"{1 - batch_share:.0%} speed ({total_view.speed_profiles:,})"
        )
    lines.append(f"- Read at {_utc(snapshot.taken_at)}")
    return "\n".join(lines)


def _utc(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def latest_frame(snapshot: Snapshot) -> pd.DataFrame:
    rows = [{column: getattr(row, column) for column in LATEST_COLUMNS} for row in (snapshot.latest or [])]
    frame = pd.DataFrame(rows, columns=LATEST_COLUMNS)
    if not frame.empty:
        frame["fetched_at"] = pd.to_datetime(frame["fetched_at"], utc=True).dt.strftime("%H:%M:%S")
        frame["age"] = frame["age"].astype("Int64")  # whole years, even when some are unknown
    return frame


def latest_html(frame: pd.DataFrame) -> str:
    """A ``latest_frame`` as a plain HTML table, newest first.

    Plain HTML rather than a table widget: it is replaced whole on each change, so the page always shows
    the last rows sent. Panel's Tabulator dropped rows sent while the browser was still building it
    (a filter chosen right after the page loaded left the unfiltered rows on screen until the data
    changed again), and its script made the page heavier.
    """
    if frame.empty:
        return '<div class="latest" data-testid="latest"><div class="empty">No profiles yet</div></div>'
    head = "".join(f"<th>{html.escape(header)}</th>" for header in LATEST_HEADERS)
    rows = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="{column}">{html.escape("" if pd.isna(value) else str(value))}</td>'
            for column, value in zip(LATEST_COLUMNS, row, strict=True)
        )
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="latest" data-testid="latest"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


class UserPulseDashboard(pn.viewable.Viewer):
    """The page one browser session sees; its filters are params, its figures refresh themselves."""

    country = param.Selector(default=ALL, objects=[ALL], doc="Narrow the figures to one country.")
    gender = param.Selector(default=ALL, objects=[ALL], doc="Narrow the figures to one gender.")
    time_range = param.Selector(default="All time", objects=list(TIME_RANGES), doc="Windows to count.")
    paused = param.Boolean(default=False, doc="Stop refreshing (the figures stay as they are).")

    def __init__(
        self,
        settings: Settings,
        views: ServingViews,
        documents: ProfileDocuments,
        profiles: ProfileStore | None = None,
        shared: SharedSnapshots | None = None,
    ) -> None:
        """With ``profiles``, the page also offers a lookup of one profile by uuid; ``shared`` holds the
        snapshots of the process's other sessions (each dashboard has its own without it)."""
        super().__init__()
        self.shared = shared if shared is not None else SharedSnapshots()
        self.settings = settings
        self.views = views
        self.documents = documents
        self.profiles = profiles
        self.window_seconds = window_seconds_of(settings.profiles.window_duration)
        self.status = pn.pane.Markdown("Loading…", sizing_mode="stretch_width")
        self.errors = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        self.notes = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.headline = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        self.freshness = pn.pane.Markdown("", sizing_mode="stretch_width")
        # Built once the page has loaded (``first_paint``), so that the page sent first is light.
        self.charts: dict[str, pn.pane.HTML] = {}
        self.timeline: TimelineChart | None = None
        self.latest: pn.pane.HTML | None = None
        self.details = pn.Column(sizing_mode="stretch_width")
        """Charts, latest profiles and lookup, added once the page has loaded."""
        self._shown: Snapshot | None = None
        self._refreshing = asyncio.Lock()
        self._drawn: dict[str, tuple[str, pd.DataFrame]] = {}
        """What each chart pane shows now: its title and data."""
        self._callback: pn.io.PeriodicCallback | None = None
        self.param.watch(self._filters_changed, ["country", "gender", "time_range"])
        self.param.watch(self._pause_changed, ["paused"])

    @property
    def filters(self) -> Filters:
        return Filters(
            country=None if self.country == ALL else self.country,
            gender=None if self.gender == ALL else self.gender,
            minutes=TIME_RANGES[self.time_range],
        )

    # --- refresh ------------------------------------------------------------------------------

    async def refresh(self, force: bool = False) -> None:
        """Read a snapshot off the event loop, with a deadline; show it, or say what went wrong.

        A snapshot of the same filters that another session took less than half a refresh period ago
        is shown instead of reading again. While paused only a forced refresh (a filter change) reads;
        a read that was under way when the user paused is not shown.
        """
        if self._refreshing.locked() or (self.paused and not force):
            return  # the previous refresh is still running: skip this tick rather than pile up
        async with self._refreshing:
            filters = self.filters
            period = self.settings.serving.refresh_period_s
            snapshot = self.shared.fresh(filters, datetime.now(UTC), period / 2)
            if snapshot is None:
                read = partial(
                    take_snapshot,
                    self.views,
                    self.documents,
                    filters,
                    self.window_seconds,
                    self.settings.serving.timeline_minutes,
                    self.settings.serving.latest_profiles,
                )
                answer = await read_within(read, self.settings.serving.query_timeout_s, "refresh", logger)
                if answer.value is None:
                    failure = html.escape(answer.failure or "no answer")
                    self.status.object = f"⚠️ {failure.capitalize()}; showing the last figures."
                    return
                snapshot = answer.value
                self.shared.keep(snapshot)
            if self.paused and not force:
                return
            await self.show(snapshot)

    async def first_paint(self) -> None:
        """Once the page has loaded: a fresh snapshot, then the charts and the table.

        The page is sent with the sidebar and the headline only (built with the newest snapshot any
        session took, if there was one: see ``start_refreshing``): the browser shows the figures before
        it lays out a plot and a table, which on a busy machine takes it seconds.
        """
        await self.refresh(force=True)
        await asyncio.sleep(0)
        self.details.objects = self.build_details()
        if self._shown is not None:
            self.show_charts(self._shown)
            self.show_latest(self._shown)

    async def show(self, snapshot: Snapshot) -> None:
        """Headline and freshness first, then the charts and the table, yielding to the event loop in
        between: other sessions' page loads and this page's first figures do not wait for every part."""
        self.show_summary(snapshot)
        await asyncio.sleep(0)
        self.show_charts(snapshot)
        await asyncio.sleep(0)
        self.show_latest(snapshot)

    def show_summary(self, snapshot: Snapshot) -> None:
        """Errors, notes, headline figures, freshness and the status line."""
        self._shown = snapshot
        self._update_choices(snapshot)
        self.errors.object = "".join(
            f'<div class="part-error" data-testid="error-{part}">'
            f"Could not read {part}: {html.escape(message)}</div>"
            for part, message in snapshot.errors.items()
        )
        self.notes.object = "\n".join(f"*{note}*" for note in snapshot.notes)
        if snapshot.headline is not None:
            self.headline.object = headline_html(snapshot.headline)
        self.freshness.object = freshness_markdown(snapshot, self.settings.batch_layer)
        state = "paused" if self.paused else f"every {self.settings.serving.refresh_period_s:g} s"
        self.status.object = f"Updated {_utc(snapshot.taken_at)} (refresh {state})"

    def show_charts(self, snapshot: Snapshot) -> None:
        if snapshot.headline is None or self.timeline is None:
            return  # unread aggregates (the charts keep their last figures), or no charts yet
        top = self.settings.serving.top_values
        selected = {"country": self.filters.country, "gender": self.filters.gender}
        for dimension, pane in self.charts.items():
            frame = breakdown_frame(snapshot.breakdowns[dimension], top)
            title = breakdown_title(dimension, selected.get(dimension))
            chart = breakdown_html(frame, title, f"breakdown-{dimension}")
            if pane.object != chart:
                pane.object = chart
        title = timeline_title(self.filters.minutes, self.settings.serving.timeline_minutes)
        self._draw("timeline", self.timeline, timeline_frame(snapshot), title)

    def show_latest(self, snapshot: Snapshot) -> None:
        if snapshot.latest is None or self.latest is None:
            return
        latest = latest_html(latest_frame(snapshot))
        if self.latest.object != latest:
            self.latest.object = latest

    def _draw(self, key: str, chart: TimelineChart, frame: pd.DataFrame, title: str) -> None:
        """Give a chart new data unless it already shows the same; a chart that cannot take it says so
        in its title, and the rest of the page still updates."""
        drawn = self._drawn.get(key)
        if drawn is not None and drawn[0] == title and drawn[1].equals(frame):
            return
        # A Bokeh model changed from a coroutine (the first paint, a filter's change) is outside the
        # document's lock, and Bokeh refuses the change ("_pending_writes should be non-None"): Panel's
        # ``unlocked`` takes the changes and sends them to the page itself.
        with pn.io.unlocked():
            try:
                chart.update(frame, title)
                self._drawn[key] = (title, frame)
            except Exception as error:
                logger.exception("could not draw the %s chart", key)
                chart.figure.title.text = f"{title}: could not draw this chart ({error})"
                self._drawn.pop(key, None)

    def _update_choices(self, snapshot: Snapshot) -> None:
        """Offer the countries and genders the views know, keeping the current choice."""
        for name, dimension in (("country", "country"), ("gender", "gender")):
            view = snapshot.breakdowns.get(dimension)
            if view is None:
                continue
            current = getattr(self, name)
            choices = [ALL, *sorted(v.value for v in view.values)]
            if current not in choices:
                choices.append(current)
            if choices != self.param[name].objects:
                self.param[name].objects = choices

    async def _filters_changed(self, *_events: param.parameterized.Event) -> None:
        await self.refresh(force=True)

    def _pause_changed(self, event: param.parameterized.Event) -> None:
        self.status.object = "Paused: figures stay as they are." if event.new else "Refreshing…"
        if self._callback is not None:
            try:
                self._callback.running = not event.new
            except Exception:
                logger.exception("could not switch the periodic refresh")

    def start_refreshing(self) -> None:
        """Refresh now and then every ``refresh_period_s``, for as long as the session lives.

        A page built when another session has a snapshot shows it straight away, in the page itself
        (from memory: no store is read before the page is sent); it is replaced once the page loads.
        """
        newest = self.shared.newest(self.filters)
        if newest is not None:
            self.show_summary(newest)
        pn.state.onload(self.first_paint)
        self._callback = pn.state.add_periodic_callback(
            self.refresh, period=int(self.settings.serving.refresh_period_s * 1000), start=True
        )

    # --- layout -------------------------------------------------------------------------------

    def __panel__(self) -> pn.viewable.Viewable:
        filters = pn.Column(
            "### Filters",
            pn.widgets.Select.from_param(self.param.country, name="Country"),
            pn.widgets.Select.from_param(self.param.gender, name="Gender"),
            pn.widgets.Select.from_param(self.param.time_range, name="Time range"),
            pn.widgets.Toggle.from_param(self.param.paused, name="Pause refresh", button_type="default"),
            self.status,
            pn.pane.Markdown("[Operations: topics, lag, dead letters →](operations)"),
        )
        template = pn.template.BootstrapTemplate(
            title="UserPulse — live user-profile analytics",
            sidebar=[filters, self.freshness],
            main=[self.errors, self.notes, self.headline, self.details],
        )
        return template

    def build_details(self) -> list[pn.viewable.Viewable]:
        """The charts, the latest profiles and the lookup (built once the headline is on the page)."""
        self.charts = {
            name: pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[BREAKDOWN_CSS])
            for name in BREAKDOWN_TITLES
        }
        self.timeline = TimelineChart(TIMELINE_TITLE, self.window_seconds)
        self.latest = pn.pane.HTML(
            latest_html(pd.DataFrame(columns=LATEST_COLUMNS)), sizing_mode="stretch_width", stylesheets=[CSS]
        )
        lookup = (
            [ProfileLookup(self.profiles, self.settings.serving.query_timeout_s)] if self.profiles else []
        )
        return [
            pn.pane.Bokeh(self.timeline.figure, sizing_mode="stretch_width"),
            pn.GridBox(*self.charts.values(), ncols=2, sizing_mode="stretch_width"),
            pn.pane.Markdown("### Latest profiles (direct identifiers masked)"),
            self.latest,
            *lookup,
        ]
