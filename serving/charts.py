"""The dashboard's charts, cheap to build and to update: the dashboard's event loop also serves every
page load, so a chart that costs it time delays every user (``docs/performance.md``).

Breakdowns are HTML bar lists (as web analytics dashboards show their top-N lists); the ingestion
timeline is one Bokeh figure built once per browser session, whose ``ColumnDataSource`` a refresh
replaces in place (a small patch, not a new figure).
"""

from __future__ import annotations

import html

import pandas as pd
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure

LAYER_COLORS = {"batch": "#1f3b73", "speed": "#f28e2b", "batch + speed": "#8c6bb1"}
"""One colour per layer that counted a bar (batch view, speed partials, or both for one window)."""


BREAKDOWN_CSS = """
.breakdown h4 { margin: 0 0 6px 0; font-size: 1.05em; }
.breakdown .legend { font-size: 0.8em; color: #556; margin-bottom: 4px; }
.breakdown .swatch { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; }
.breakdown table { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.breakdown td { padding: 2px 4px; white-space: nowrap; }
.breakdown td.bar { width: 60%; }
.breakdown td.count, .breakdown td.age { text-align: right; color: #334; }
.breakdown .track { display: flex; height: 14px; background: #f0f2f6; border-radius: 3px; overflow: hidden; }
.breakdown .empty { color: #778; font-style: italic; }
"""


def breakdown_html(frame: pd.DataFrame, title: str, test_id: str) -> str:
    """A ``breakdown_frame`` as a bar list (first row on top): batch and speed stacked in each bar, the
    count and average age beside it, the detail in the row's tooltip.

    Plain HTML rather than a plot: one model per chart, drawn by the browser in no time, and replaced
    whole on a refresh (``docs/performance.md``: six Bokeh figures made every page load wait seconds).
    """
    legend = "".join(
        f'<span class="swatch" style="background:{LAYER_COLORS[layer]}"></span>{layer}'
        for layer in ("batch", "speed")
    )
    parts = [f'<div class="breakdown" data-testid="{test_id}"><h4>{html.escape(title)}</h4>']
    if frame.empty:
        parts.append('<div class="empty">No profiles yet</div></div>')
        return "".join(parts)
    widest = max(int(frame["profiles"].max()), 1)
    parts.append(f'<div class="legend">{legend}<span style="float:right">profiles · average age</span></div>')
    parts.append("<table>")
    for row in frame.itertuples(index=False):
        age = "—" if row.average_age is None or pd.isna(row.average_age) else f"{row.average_age:.1f}"
        tip = (
            f"{row.label}: {row.profiles:,} profiles (batch {row.batch:,}, speed {row.speed:,}), "
            f"average age {age}"
        )
        bars = "".join(
            f'<div style="width:{100 * count / widest:.2f}%;background:{LAYER_COLORS[layer]}"></div>'
            for layer, count in (("batch", row.batch), ("speed", row.speed))
            if count > 0
        )
        parts.append(
            f'<tr title="{html.escape(tip)}"><td>{html.escape(str(row.label))}</td>'
            f'<td class="bar"><div class="track">{bars}</div></td>'
            f'<td class="count">{row.profiles:,}</td><td class="age">{age}</td></tr>'
        )
    parts.append("</table></div>")
    return "".join(parts)


class TimelineChart:
    """Profiles per event-time window, one bar per window coloured by the layer that counted it."""

    def __init__(self, title: str, window_seconds: int, height: int = 260) -> None:
        self.source = ColumnDataSource({"window_start": [], "profiles": [], "layer": [], "color": []})
        self.figure = figure(
            title=title,
            x_axis_type="datetime",
            height=height,
            sizing_mode="stretch_width",
            tools="",
            toolbar_location=None,
            y_axis_label="profiles",
        )
        self.figure.vbar(
            x="window_start",
            top="profiles",
            width=window_seconds * 1000 * 0.9,  # milliseconds on a datetime axis
            color="color",
            legend_field="layer",
            source=self.source,
        )
        # Beside the plot, not over the newest bars.
        legend = self.figure.legend[0]
        self.figure.center.remove(legend)
        self.figure.add_layout(legend, "right")
        self.figure.add_tools(
            HoverTool(
                tooltips=[
                    ("window", "@window_start{%H:%M} UTC"),
                    ("profiles", "@profiles{0,0}"),
                    ("", "@layer"),
                ],
                formatters={"@window_start": "datetime"},
            )
        )
        self.figure.y_range.start = 0

    def update(self, frame: pd.DataFrame, title: str) -> None:
        """Show a ``timeline_frame`` (naive UTC window starts) under ``title``."""
        self.figure.title.text = title if not frame.empty else f"{title}: no windows in range"
        self.source.data = {
            "window_start": list(frame["window_start"]),
            "profiles": list(frame["profiles"]),
            "layer": list(frame["layer"]),
            "color": [LAYER_COLORS.get(layer, "#777777") for layer in frame["layer"]],
        }
