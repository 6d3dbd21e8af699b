"""``userpulse speed``: run the speed layer's streaming job until stopped (or until the topic is consumed)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer
from pyspark.errors import StreamingQueryException
from rich.console import Console

from core.logs import configure_logging
from core.settings import get_settings
from core.spark import build_spark_session
from core.streaming import MAX_REPLAY_RESTARTS, MissingTopicError, failure_line, is_replay_metrics_failure
from speed_layer.job import SpeedLayerJob, StopRequestedError, speed_layer_job
from stores.outages import STORE_UNAVAILABLE, first_line, store_name
from userpulse.commands.params import log_level as log_level_name
from userpulse.commands.params import topic_name

console = Console(stderr=True, soft_wrap=True)  # one event, one line: logs stay greppable


def run_until_stopped(job: SpeedLayerJob, stop_requested: threading.Event) -> None:
    """Run the continuous query until a stop is requested (between batches) or it fails."""
    restarts = 0
    query = job.start()
    while True:
        if stop_requested.is_set():
            job.stop_requested.set()  # the next batch refuses to start (see SpeedLayerJob.process_batch)
            if not query.status["isTriggerActive"]:
                query.stop()  # between batches: nothing in flight
                return
        try:
            if not query.awaitTermination(0.5) and query.isActive:
                continue
        except StreamingQueryException:
            pass  # the same error is examined below
        error = query.exception()
        if error is None:
            return
        if stop_requested.is_set() and StopRequestedError.__name__ in str(error):
            # Stopped at a batch boundary under load (Spark logs the refusal as an error).
            console.print("stopped at a batch boundary: the refused batch is read again by the next run")
            return
        if not is_replay_metrics_failure(error) or restarts >= MAX_REPLAY_RESTARTS:
            console.print(f"[red]speed layer failed:[/red] {failure_line(error)}")
            raise typer.Exit(1)
        restarts += 1
        query = job.start()


def speed(
    topic: Annotated[
        str | None, typer.Option(callback=topic_name, help="Topic to read (default: the profiles topic).")
    ] = None,
    available_now: Annotated[
        bool, typer.Option("--available-now", help="Process what the topic holds now, then stop.")
    ] = False,
    log_level: Annotated[
        str, typer.Option(callback=log_level_name, help="Logging level of the job's own messages.")
    ] = "INFO",
) -> None:
    """Stream profiles from Kafka into MongoDB and Cassandra. SIGTERM finishes the current batch first."""
    configure_logging(console, {"speed_layer": log_level})
    settings = get_settings()
    settings.secrets.pseudonymization_key_bytes()  # refuse the public default key before any work
    spark = build_spark_session(settings, app_name="userpulse-speed")
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        console.print(f"{signal.Signals(signum).name}: stopping after the current batch...")
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        with speed_layer_job(settings, spark, topic) as job:
            console.print(f"speed layer reading {job.topic}, checkpoint {job.checkpoint_dir}")
            if available_now:
                job.run_until_consumed()
            else:
                run_until_stopped(job, stop_requested)
    except MissingTopicError as error:
        console.print(f"[red]speed layer failed:[/red] {error}")
        raise typer.Exit(1) from error
    except StreamingQueryException as error:
        console.print(f"[red]speed layer failed:[/red] {failure_line(error)}")
        raise typer.Exit(1) from error
    except STORE_UNAVAILABLE as error:  # while starting: say which store, without a traceback
        console.print(f"[red]speed layer failed:[/red] {store_name(error, settings)} does not answer "
                      f"({type(error).__name__}: {first_line(error)})")  # fmt: skip
        raise typer.Exit(1) from error
    finally:
        spark.stop()
    console.print("speed layer stopped")
