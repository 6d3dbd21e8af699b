"""``userpulse batch ...``: the batch layer's jobs from the command line."""

from __future__ import annotations

import typer
from rich.console import Console

from batch_layer.archive import run_archive
from batch_layer.recompute import recompute_batch_views, refresh_silver_profiles
from core.settings import get_settings
from core.spark import build_spark_session
from core.streaming import MissingTopicError

batch_app = typer.Typer(
    help="The batch layer: the Delta archive of the topic and the recomputed views.", no_args_is_help=True
)
console = Console(stderr=True)


@batch_app.command()
def archive() -> None:
    """Append the profiles topic's new records to the Delta archive (each offset exactly once)."""
    settings = get_settings()
    spark = build_spark_session(settings, app_name="userpulse-archive")
    try:
        result = run_archive(settings, spark)
    except MissingTopicError as error:
        console.print(f"[red]archive failed:[/red] {error}")
        raise typer.Exit(1) from error
    finally:
        spark.stop()
    console.print(
        f"archived {result.records:,} new records in {result.batches} batches "
        f"into {settings.paths.archive_table}"
    )


@batch_app.command()
def recompute() -> None:
    """Refresh the silver table from the archive, then recompute the batch views and make them current."""
    settings = get_settings()
    spark = build_spark_session(settings, app_name="userpulse-recompute")
    try:
        refresh_silver_profiles(settings, spark)
        result = recompute_batch_views(settings, spark)
    finally:
        spark.stop()
    console.print(
        f"batch views version {result.version}: {result.profiles:,} profiles before cutoff {result.cutoff}; "
        f"removed versions {result.removed_versions or 'none'}"
    )
