"""``userpulse views``: the merged view the dashboard shows, for people and scripts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from core.aggregates import DIMENSIONS, window_floor, window_seconds_of
from core.settings import get_settings
from serving.views import DimensionView, Freshness, TimeRange, serving_views
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session

console = Console()

_LAST = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_range(text: str, now: datetime, window_seconds: int) -> TimeRange:
    """``all``; ``15m``, ``1h``, ``7d`` (the last ones, whole windows); or ``START..END`` (ISO instants,
    either side may be empty). ``ValueError`` for anything else."""
    text = text.strip()
    if text == "all":
        return TimeRange()
    last = _LAST.match(text)
    if last is not None:
        since = now - timedelta(**{_UNITS[last.group(2)]: int(last.group(1))})
        return TimeRange(start=window_floor(since, window_seconds))
    if ".." in text:
        start, end = (_instant(part.strip()) for part in text.split("..", 1))
        if start is not None and end is not None and end <= start:
            raise ValueError(f"{text!r} ends before it starts")
        return TimeRange(start, end)
    raise ValueError(f"{text!r} is not a range: use all, 15m, 1h, 7d or START..END (ISO instants)")


def _instant(text: str) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def view_document(view: DimensionView) -> dict[str, Any]:
    """A merged breakdown as JSON-ready data."""
    return {
        "dimension": view.dimension,
        "profiles": view.profiles,
        "batch_profiles": view.batch_profiles,
        "speed_profiles": view.speed_profiles,
        "values": [
            {
                "value": v.value,
                "profiles": v.profiles,
                "age_sum": v.age_sum,
                "age_min": v.age_min,
                "age_max": v.age_max,
                "average_age": round(v.average_age, 2) if v.average_age is not None else None,
                "batch_profiles": v.batch_profiles,
                "speed_profiles": v.speed_profiles,
            }
            for v in view.values
        ],
    }


def freshness_document(freshness: Freshness) -> dict[str, Any]:
    batch = freshness.batch
    speed = freshness.speed
    return {
        "batch_version": batch.version if batch else None,
        "batch_cutoff": batch.cutoff.isoformat() if batch and batch.cutoff else None,
        "batch_speed_batch_id": batch.speed_batch_id if batch else None,
        "batch_computed_at": batch.computed_at.isoformat() if batch and batch.computed_at else None,
        "speed_last_batch_at": speed.processed_at.isoformat() if speed else None,
        "speed_kafka_lag": speed.kafka_lag if speed else None,
        "answered_at": freshness.answered_at.isoformat(),
    }


def views(
    dimension: Annotated[
        list[str] | None,
        typer.Option("--dimension", "-d", help=f"Dimension to show (repeatable): {', '.join(DIMENSIONS)}."),
    ] = None,
    time_range: Annotated[
        str, typer.Option("--range", help="all, the last 15m / 1h / 7d, or START..END (ISO instants).")
    ] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Print the merged view the dashboard shows: per dimension value, profiles, ages, each layer's share."""
    settings = get_settings()
    chosen = dimension or list(DIMENSIONS)
    unknown = [name for name in chosen if name not in DIMENSIONS]
    if unknown:
        raise typer.BadParameter(f"unknown dimension {unknown}: one of {', '.join(DIMENSIONS)}")
    window_seconds = window_seconds_of(settings.profiles.window_duration)
    try:
        selected = parse_range(time_range, datetime.now(UTC), window_seconds)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--range") from error
    cluster, session = cassandra_session(settings)
    try:
        apply_schema(session, settings.cassandra.keyspace, settings.cassandra.keyspace_replication)
        serving = serving_views(session, settings)
        answers = serving.dimensions(chosen, selected)
    finally:
        cluster.shutdown()
    freshness = answers[0].freshness
    if as_json:
        document = {
            "range": {
                "start": selected.start.isoformat() if selected.start else None,
                "end": selected.end.isoformat() if selected.end else None,
            },
            "freshness": freshness_document(freshness),
            "dimensions": [view_document(view) for view in answers],
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return
    batch = freshness.batch
    console.print(
        "batch view: "
        + (
            f"version {batch.version}, up to speed batch {batch.speed_batch_id}, newest window {batch.cutoff}"
            if batch
            else "none yet (every figure comes from the speed layer)"
        )
    )
    for view in answers:
        table = Table(title=f"{view.dimension}: {view.profiles:,} profiles", title_justify="left")
        for column in ("value", "profiles", "avg age", "min", "max", "batch", "speed"):
            table.add_column(column, justify="left" if column == "value" else "right")
        for v in view.values:
            average = f"{v.average_age:.1f}" if v.average_age is not None else "—"
            table.add_row(
                v.value, f"{v.profiles:,}", average, str(v.age_min), str(v.age_max),
                f"{v.batch_profiles:,}", f"{v.speed_profiles:,}",
            )  # fmt: skip
        console.print(table)
