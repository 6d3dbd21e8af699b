"""``userpulse batch ...``: the batch layer's jobs from the command line."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

import typer
from rich.console import Console

from batch_layer.archive import run_archive
from batch_layer.maintenance import maintain_lake
from batch_layer.recompute import recompute_batch_views, refresh_silver_profiles
from core.settings import get_settings
from core.spark import build_spark_session
from core.streaming import MissingTopicError
from userpulse.commands.params import utc_day

batch_app = typer.Typer(
    help="The batch layer: the Delta archive of the topic and the recomputed views.", no_args_is_help=True
)
console = Console(stderr=True)


@batch_app.command()
def archive() -> None:
    """Append the profiles topic's new records to the Delta archive (each offset exactly once)."""
    settings = get_settings()
    settings.secrets.pseudonymization_key_bytes()  # refuse the public default key before any work
    spark = build_spark_session(settings, app_name="userpulse-archive")
    try:
        result = run_archive(settings, spark)
    except MissingTopicError as error:
        console.print(f"[red]archive failed:[/red] {error}")
        raise typer.Exit(1) from error
    finally:
        spark.stop()
    days = ", ".join(day.isoformat() for day in result.days) or "none"
    console.print(
        f"archived {result.records:,} new records in {result.batches} batches "
        f"into {settings.paths.archive_table} (ingestion days: {days})"
    )


@batch_app.command()
def recompute(
    first: Annotated[
        datetime | None,
        typer.Option("--from", formats=["%Y-%m-%d"], help="First UTC ingestion day of silver to rewrite."),
    ] = None,
    last: Annotated[
        datetime | None,
        typer.Option("--to", formats=["%Y-%m-%d"], help="Last UTC ingestion day of silver to rewrite."),
    ] = None,
) -> None:
    """Refresh the silver table from the archive (every day, or the days from --from to --to), then
    recompute the batch views from all of silver and make them current."""
    days = None
    if first is not None or last is not None:
        days = (utc_day(first) or date.min, utc_day(last) or datetime.now(UTC).date())
        if days[0] > days[1]:
            console.print(f"[red]--from {days[0]} is after --to {days[1]}[/red]")
            raise typer.Exit(2)
    settings = get_settings()
    settings.secrets.pseudonymization_key_bytes()  # refuse the public default key before any work
    spark = build_spark_session(settings, app_name="userpulse-recompute")
    try:
        silver = refresh_silver_profiles(settings, spark, days)
        result = recompute_batch_views(settings, spark)
    finally:
        spark.stop()
    console.print(
        f"silver: {silver.profiles:,} rows in {len(silver.days)} ingestion days"
        f"{'' if days is None else f' from {days[0]} to {days[1]}'}; "
        f"batch views version {result.version}: {result.profiles:,} profiles before cutoff {result.cutoff}; "
        f"removed versions {result.removed_versions or 'none'}"
    )


@batch_app.command()
def maintain(
    retention_hours: Annotated[
        float | None,
        typer.Option(
            min=0, help="Keep unreferenced files this long (default: batch_layer.vacuum_retention_hours)."
        ),
    ] = None,
) -> None:
    """OPTIMIZE (compact small files) and VACUUM (delete files no version within the retention needs)
    the archive and the silver table."""
    settings = get_settings()
    settings.secrets.pseudonymization_key_bytes()  # refuse the public default key before any work
    spark = build_spark_session(settings, app_name="userpulse-maintain")
    try:
        results = maintain_lake(settings, spark, retention_hours)
    finally:
        spark.stop()
    for result in results:
        console.print(
            f"{result.path}: {result.files_before} -> {result.files_after} files in the current version, "
            f"{result.files_vacuumed} unreferenced files deleted ({result.files_on_disk_after} on disk)"
        )
    if not results:
        console.print("no Delta table to maintain yet")
