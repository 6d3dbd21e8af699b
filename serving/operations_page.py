"""The operations page (``/operations``): the pipeline's topics, how far behind each layer is, the speed
layer's latest micro-batches, the batch layer's latest runs and the records the layers could not use,
refreshing itself like the dashboard.

Its reads (Kafka, the checkpoints, Cassandra, Dagster's run storage, MongoDB) run in a worker thread
with a deadline (``serving.off_loop``), so a slow broker never holds up the dashboard's sessions on the
same server.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import panel as pn
import param

from core.settings import Settings
from orchestration.runs import BatchRun
from serving.off_loop import Answer, read_within
from serving.operations import (
    DEAD_LETTER_HOURS,
    DEAD_LETTER_SOURCES,
    PRODUCER,
    RATE_WINDOW_S,
    DeadLetterHour,
    DeadLettersSnapshot,
    OperationsSnapshot,
    OperationsSources,
    PartitionLag,
    TopicMessage,
    TopicOverview,
    dead_letters_snapshot,
    operations_snapshot,
    size_on_disk,
)
from serving.profiles import DeadLetterRow
from stores.speed_views import StreamBatch

logger = logging.getLogger(__name__)
T = TypeVar("T")

ALL_REASONS = "All reasons"
LETTERS_SHOWN = 20

CSS = """
.ops table { width: 100%; border-collapse: collapse; font-size: 0.9em; margin-bottom: 6px; }
.ops th { background: #f4f6fa; text-align: left; padding: 4px 6px; }
.ops td { padding: 3px 6px; border-top: 1px solid #e6e9f0; }
.ops td.number { text-align: right; white-space: nowrap; }
.ops td.value { font-family: monospace; font-size: 0.85em; word-break: break-all; }
.ops .empty, .ops .note { color: #778; font-style: italic; }
.ops .part-error { color: #8a1c1c; background: #fdecec; padding: 6px 10px; border-radius: 6px; }
"""


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _table(test_id: str, headers: list[str], rows: list[list[tuple[str, str]]]) -> str:
    """An HTML table; each cell is (css class, text), escaped here."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{css}">{html.escape(text)}</td>' for css, text in row) + "</tr>"
        for row in rows
    )
    return (
        f'<div class="ops" data-testid="{test_id}"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _error(test_id: str, part: str, message: str) -> str:
    return (
        f'<div class="ops" data-testid="{test_id}">'
        f'<div class="part-error">Could not read {part}: {html.escape(message)}</div></div>'
    )


def _rate(per_s: float) -> str:
    """Two significant digits below ten per second ("0.02", "3.5"), whole numbers above."""
    return f"{per_s:,.0f}" if per_s >= 10 else f"{per_s:.2g}"


def topics_html(topics: list[TopicOverview]) -> str:
    """One row per partition of each topic (a topic not created yet says so)."""
    rows: list[list[tuple[str, str]]] = []
    for topic in topics:
        if topic.partitions is None:
            rows.append([("", topic.name), ("", "not created yet"), *[("number", "")] * 5, ("", "")])
            continue
        retention = (
            "broker default" if topic.retention_ms is None else f"{topic.retention_ms / 86_400_000:g} days"
        )
        for p in topic.partitions:
            rows.append(
                [("", topic.name), ("number", str(p.partition)), ("number", _count(p.earliest)),
                 ("number", _count(p.end)), ("number", _count(p.records)), ("number", _count(p.recent)),
                 ("number", size_on_disk(p.size_bytes)), ("", retention)]
            )  # fmt: skip
    minutes = RATE_WINDOW_S // 60
    headers = ["Topic", "Partition", "Earliest offset", "End offset", "Records", f"Last {minutes} min",
               "On disk", "Retention"]  # fmt: skip
    rates = "".join(
        f"<div>{html.escape(t.name)}: {_rate(t.rate_per_s)} records/s over the last {minutes} min, "
        f"{size_on_disk(t.size_bytes)} on disk</div>"
        for t in topics
        if t.partitions is not None
    )
    note = f'<div class="ops note" data-testid="topic-rates">{rates}</div>'
    return _table("topics", headers, rows) + (note if rates else "")


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} s"


def lag_html(rows: list[PartitionLag]) -> str:
    """Per partition: the end offset, where each layer has committed, and how far behind it is (in
    records, and how long the oldest record it has not committed has waited)."""
    cells = [
        [("number", str(r.partition)), ("number", _count(r.end)),
         ("number", _count(r.speed)), ("number", _count(r.speed_lag)), ("number", _seconds(r.speed_lag_s)),
         ("number", _count(r.archive)), ("number", _count(r.archive_lag)),
         ("number", _seconds(r.archive_lag_s))]
        for r in rows
    ]  # fmt: skip
    headers = [
        "Partition", "End offset", "Speed layer at", "Speed lag", "Waiting", "Archive at", "Archive lag",
        "Waiting",
    ]  # fmt: skip
    note = ""
    if any(r.speed is None or r.archive is None for r in rows):
        note = '<div class="note">—: that layer has not committed a micro-batch yet.</div>'
    return _table("lag", headers, cells).replace("</table></div>", f"</table>{note}</div>")


def reasons_html(reasons: list[tuple[str, str, int]]) -> str:
    if not reasons:
        return '<div class="ops" data-testid="reasons"><div class="empty">No dead letters.</div></div>'
    rows = [[("", job), ("", reason), ("number", _count(count))] for job, reason, count in reasons]
    return _table("reasons", ["Layer", "Reason", "Dead letters"], rows)


SOURCE_HEADERS = {PRODUCER: "Producer (its topic)", "speed": "Speed layer", "batch": "Batch layer"}


def hourly_html(hours: list[DeadLetterHour]) -> str:
    """The dead letters of each hour that has any, newest first, by source."""
    if not hours:
        return (
            '<div class="ops" data-testid="hourly"><div class="empty">'
            f"No dead letters in the last {DEAD_LETTER_HOURS} hours.</div></div>"
        )
    headers = ["Hour (UTC)", *(SOURCE_HEADERS[source] for source in DEAD_LETTER_SOURCES), "All"]
    rows = [
        [("", f"{hour.hour:%Y-%m-%d %H:00}"),
         *(("number", _count(hour.by_source[source])) for source in DEAD_LETTER_SOURCES),
         ("number", _count(hour.total))]
        for hour in hours
    ]  # fmt: skip
    return _table("hourly", headers, rows)


def letters_html(letters: list[DeadLetterRow]) -> str:
    if not letters:
        return '<div class="ops" data-testid="letters"><div class="empty">No dead letters.</div></div>'
    rows = [
        [("", letter.stored_at.strftime("%Y-%m-%d %H:%M:%S") if letter.stored_at else "—"),
         ("", letter.job), ("", letter.reason), ("", f"{letter.topic}:{letter.partition}:{letter.offset}"),
         ("value", letter.value)]
        for letter in letters
    ]  # fmt: skip
    return _table(
        "letters", ["Stored (UTC)", "Layer", "Reason", "Topic:partition:offset", "Value (masked)"], rows
    )


BATCHES_SHOWN = 10
CHART_WIDTH, CHART_HEIGHT = 640, 120


def lag_chart_svg(batches: list[StreamBatch]) -> str:
    """The records left in the topic after each micro-batch, over time: a line in an inline SVG (no
    script), oldest on the left; batches whose lag is not known yet are left out."""
    points = sorted((b.processed_at, b.kafka_lag) for b in batches if b.kafka_lag is not None)
    if len(points) < 2:
        return '<div class="note">The lag chart needs two micro-batches with a known lag.</div>'
    first, last = points[0][0], points[-1][0]
    span = max((last - first).total_seconds(), 1.0)
    top = max(max(lag for _, lag in points), 1)
    coordinates = " ".join(
        f"{(moment - first).total_seconds() / span * CHART_WIDTH:.1f},"
        f"{CHART_HEIGHT - lag / top * (CHART_HEIGHT - 10):.1f}"
        for moment, lag in points
    )
    return (
        f'<svg data-testid="lag-chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" width="100%" '
        f'height="{CHART_HEIGHT}" preserveAspectRatio="none" role="img" '
        f'aria-label="Records left in the topic after each micro-batch, up to {top:,}">'
        f'<polyline fill="none" stroke="#0072b5" stroke-width="2" points="{coordinates}"/></svg>'
        f'<div class="note">Records left in the topic after each of the last {len(points)} micro-batches, '
        f"{first:%H:%M:%S} to {last:%H:%M:%S} UTC (top of the chart: {top:,}).</div>"
    )


def batches_html(batches: list[StreamBatch]) -> str:
    """The lag over the micro-batches read, then the newest ``BATCHES_SHOWN`` of them."""
    if not batches:
        return '<div class="ops" data-testid="batches"><div class="empty">No micro-batch yet.</div></div>'
    chart = lag_chart_svg(batches)
    batches = batches[:BATCHES_SHOWN]
    rows = [
        [("number", str(b.batch_id)), ("", b.processed_at.strftime("%Y-%m-%d %H:%M:%S")),
         ("number", _count(b.input_rows)), ("number", _count(b.new_profiles)),
         ("number", _count(b.duplicates)), ("number", _count(b.dead_lettered)),
         ("number", _count(b.under_age)), ("number", f"{b.duration_ms / 1000:,.1f} s"),
         ("number", "—" if b.rows_per_s is None else f"{b.rows_per_s:,.0f}"), ("number", _count(b.kafka_lag))]
        for b in batches
    ]  # fmt: skip
    headers = [
        "Batch", "Processed (UTC)", "Records", "New profiles", "Duplicates", "Dead letters", "Under age",
        "Duration", "Records/s", "Left in topic",
    ]  # fmt: skip
    return _table("batches", headers, rows).replace(
        '<div class="ops" data-testid="batches">', f'<div class="ops" data-testid="batches">{chart}', 1
    )


def messages_html(messages: list[TopicMessage]) -> str:
    """The last records of a partition, newest first: coordinates, key, value masked."""
    if not messages:
        return '<div class="ops" data-testid="messages"><div class="empty">No records.</div></div>'
    rows = [
        [("number", _count(m.offset)), ("", m.timestamp.strftime("%Y-%m-%d %H:%M:%S")), ("", m.key or "—"),
         ("", ", ".join(f"{k}: {v}" for k, v in m.headers.items()) or "—"), ("value", m.value)]
        for m in messages
    ]  # fmt: skip
    return _table("messages", ["Offset", "Written (UTC)", "Key", "Headers", "Value (masked)"], rows)


def runs_html(runs: list[BatchRun], dagster_ui_url: str) -> str:
    """The batch layer's latest runs, newest first, each linked to its page in the Dagster UI."""
    if not runs:
        return (
            '<div class="ops" data-testid="runs"><div class="empty">No batch-layer run in Dagster\'s '
            "storage yet.</div></div>"
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("Run", "Job", "Status", "Started (UTC)", "Duration", "Ingestion days")
    )
    rows = []
    for run in runs:
        link = html.escape(f"{dagster_ui_url.rstrip('/')}/runs/{run.run_id}")
        started = run.started_at.strftime("%Y-%m-%d %H:%M:%S") if run.started_at else "—"
        duration = "—" if run.duration_s is None else f"{run.duration_s:,.1f} s"
        cells = [
            f'<a href="{link}" target="_blank">{html.escape(run.run_id[:8])}</a>',
            html.escape(run.job), html.escape(run.status), started,
            duration, html.escape(run.days or "—"),
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return (
        f'<div class="ops" data-testid="runs"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _show_part(
    pane: pn.pane.HTML,
    test_id: str,
    part: str,
    value: T | None,
    render: Callable[[T], str],
    errors: dict[str, str],
) -> None:
    """Give a pane its part's HTML, or the reason its source could not be read; unchanged if the same
    or not read this time."""
    if value is None and part not in errors:
        return
    new = render(value) if value is not None else _error(test_id, part, errors.get(part, "no answer"))
    if pane.object != new:
        pane.object = new


class OperationsPage(pn.viewable.Viewer):
    """The page one browser session sees on ``/operations``."""

    reason = param.Selector(
        default=ALL_REASONS, objects=[ALL_REASONS], doc="Show the dead letters of one reason."
    )
    paused = param.Boolean(default=False, doc="Stop refreshing.")
    messages_topic = param.Selector(default=None, objects=[], doc="Whose last records to show.")
    messages_partition = param.Integer(default=0, bounds=(0, None), doc="Which partition of it.")

    def __init__(self, settings: Settings, sources: OperationsSources) -> None:
        super().__init__()
        self.settings = settings
        self.sources = sources
        self.status = pn.pane.Markdown("Loading…", sizing_mode="stretch_width")
        self.topics = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        self.lag = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        self.reasons = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        self.letters = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        self.hourly = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        self.batches = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        self.runs = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        self.messages = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        kafka = settings.kafka
        self.param["messages_topic"].objects = [kafka.profiles_topic, kafka.dead_letter_topic]
        self.messages_topic = kafka.profiles_topic
        self._reading = self._reading_letters = self._letters_again = False
        self._letters_read_at: datetime | None = None
        self._callbacks: list[pn.io.PeriodicCallback] = []
        self.param.watch(self._reason_changed, ["reason"])
        self.param.watch(self._messages_changed, ["messages_topic", "messages_partition"])
        self.param.watch(self._pause_changed, ["paused"])

    async def refresh(self, force: bool = False) -> None:
        """Topics, lag, micro-batches, batch runs and a partition's last records."""
        if self._reading or (self.paused and not force):
            return  # the previous read is still running, or paused
        self._reading = True
        try:
            read = partial(
                operations_snapshot, self.settings, self.sources,
                messages_of=(self.messages_topic, self.messages_partition),
            )  # fmt: skip
            answer = await read_within(
                read, self.settings.serving.query_timeout_s, "operations refresh", logger
            )
            if answer.value is None:
                failure = html.escape((answer.failure or "no answer").capitalize())
                self.status.object = f"⚠️ {failure}; showing the last figures."
                return
            self.show(answer.value)
        finally:
            self._reading = False

    async def refresh_dead_letters(self, force: bool = False) -> None:
        """The dead-letter parts, on their own cadence and never in the way of the other parts: on
        FerretDB their reads scan the collection (seconds at tens of thousands of letters)."""
        if self._reading_letters:
            # A reason picked during a read is read right after it, not at the next cadence.
            self._letters_again = self._letters_again or force
            return
        if self.paused and not force:
            return
        self._reading_letters = True
        try:
            reason = None if self.reason == ALL_REASONS else self.reason
            read = partial(dead_letters_snapshot, self.settings, self.sources, reason, LETTERS_SHOWN)
            answer = await read_within(read, self.settings.serving.query_timeout_s, "dead letters", logger)
            if answer.value is None:
                failure = answer.failure or "no answer"
                answer = Answer(DeadLettersSnapshot(None, None, None, {"dead letters": failure}))
            elif "dead letters" not in answer.value.errors:
                self._letters_read_at = datetime.now(UTC)
            self.show_dead_letters(answer.value)
        finally:
            self._reading_letters = False
        if self._letters_again:
            self._letters_again = False
            await self.refresh_dead_letters(force=True)

    def show(self, snapshot: OperationsSnapshot) -> None:
        errors = snapshot.errors
        _show_part(self.topics, "topics", "topics", snapshot.topics, topics_html, errors)
        _show_part(self.lag, "lag", "lag", snapshot.lag, lag_html, errors)
        _show_part(self.batches, "batches", "micro-batches", snapshot.batches, batches_html, errors)
        runs_of = partial(runs_html, dagster_ui_url=self.settings.serving.dagster_ui_url)
        _show_part(self.runs, "runs", "batch runs", snapshot.runs, runs_of, errors)
        _show_part(self.messages, "messages", "messages", snapshot.messages, messages_html, errors)
        self._show_status()

    def show_dead_letters(self, snapshot: DeadLettersSnapshot) -> None:
        errors = snapshot.errors
        _show_part(self.reasons, "reasons", "dead letters", snapshot.reasons, reasons_html, errors)
        hourly_part = "dead letters over time" if "dead letters over time" in errors else "dead letters"
        _show_part(self.hourly, "hourly", hourly_part, snapshot.hourly, hourly_html, errors)
        _show_part(self.letters, "letters", "dead letters", snapshot.letters, letters_html, errors)
        if snapshot.reasons is not None:
            stored = {reason for layer, reason, _ in snapshot.reasons if layer != PRODUCER}
            choices = [ALL_REASONS, *sorted(stored)]
            if self.reason not in choices:
                choices.append(self.reason)
            if choices != self.param["reason"].objects:
                self.param["reason"].objects = choices
        self._show_status()

    def _show_status(self) -> None:
        serving = self.settings.serving
        state = "paused" if self.paused else f"every {serving.refresh_period_s:g} s"
        letters = (
            f" Dead letters every {serving.dead_letters_refresh_s:g} s, last read at "
            f"{self._letters_read_at:%H:%M:%S} UTC."
            if self._letters_read_at
            else ""
        )
        self.status.object = f"Refreshing {state}.{letters}"

    async def _reason_changed(self, *_events: param.parameterized.Event) -> None:
        await self.refresh_dead_letters(force=True)

    async def _messages_changed(self, *_events: param.parameterized.Event) -> None:
        await self.refresh(force=True)

    def _pause_changed(self, event: param.parameterized.Event) -> None:
        for callback in self._callbacks:
            callback.running = not event.new
        self.status.object = "Paused." if event.new else "Refreshing…"

    def start_refreshing(self) -> None:
        serving = self.settings.serving
        pn.state.onload(partial(self.refresh, force=True))
        pn.state.onload(partial(self.refresh_dead_letters, force=True))
        self._callbacks = [
            pn.state.add_periodic_callback(self.refresh, period=int(serving.refresh_period_s * 1000)),
            pn.state.add_periodic_callback(
                self.refresh_dead_letters, period=int(serving.dead_letters_refresh_s * 1000)
            ),
        ]

    def __panel__(self) -> pn.viewable.Viewable:
        sidebar = pn.Column(
            "[← Dashboard](./)",
            pn.widgets.Select.from_param(self.param.reason, name="Dead-letter reason"),
            pn.widgets.Toggle.from_param(self.param.paused, name="Pause refresh", button_type="default"),
            self.status,
        )
        return pn.template.BootstrapTemplate(
            title="UserPulse — operations",
            sidebar=[sidebar],
            main=[
                pn.pane.Markdown("### Kafka topics"),
                self.topics,
                pn.pane.Markdown("### Progress of each layer (profiles topic)"),
                self.lag,
                pn.pane.Markdown("### Speed layer: its lag over time and its latest micro-batches"),
                self.batches,
                pn.pane.Markdown("### Latest runs of the batch layer (Dagster)"),
                self.runs,
                pn.pane.Markdown("### Last records of a partition (direct identifiers masked)"),
                pn.Row(
                    pn.widgets.Select.from_param(self.param.messages_topic, name="Topic"),
                    pn.widgets.IntInput.from_param(self.param.messages_partition, name="Partition"),
                ),
                self.messages,
                pn.pane.Markdown("### Dead letters by reason"),
                self.reasons,
                pn.pane.Markdown(f"### Dead letters per hour, by source (last {DEAD_LETTER_HOURS} hours)"),
                self.hourly,
                pn.pane.Markdown("### Latest dead letters (direct identifiers masked)"),
                self.letters,
            ],
        )


def operations_page_factory(
    settings: Settings, sources: OperationsSources
) -> Callable[[], pn.viewable.Viewable]:
    """What ``pn.serve`` calls for each browser session opening ``/operations``."""

    def page() -> pn.viewable.Viewable:
        pn.extension()
        operations = OperationsPage(settings, sources)
        operations.start_refreshing()
        return operations.__panel__()

    return page
