"""``userpulse produce``: profiles from randomuser.me or the synthetic source into Kafka."""

from __future__ import annotations

import math
import secrets
import signal
from enum import StrEnum
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from core.logs import configure_logging
from core.settings import Settings, get_settings
from ingestion.kafka_publisher import ProfilePublisher, ensure_topics
from ingestion.producer import AutoSource, PatientSubjectKeys, ProfileProducer, Progress
from ingestion.randomuser import RandomUserClient, RandomUserSource
from ingestion.sources import ProfileSource, SourceUnavailableError, check_batch_size, check_nationalities
from ingestion.synthetic import SyntheticSource
from stores.outages import StoreUnavailableError
from stores.subject_keys import subject_key_store
from userpulse.commands.params import log_level as log_level_name
from userpulse.commands.params import topic_name

console = Console(stderr=True)


class SourceChoice(StrEnum):
    RANDOMUSER = "randomuser"
    SYNTHETIC = "synthetic"
    AUTO = "auto"


def synthetic_seed(seed: str | None) -> str:
    """The seed given, or a fresh random one: without ``--seed`` every run produces new people."""
    return seed if seed is not None else secrets.token_hex(8)


def build_source(choice: SourceChoice, settings: Settings, seed: str | None) -> ProfileSource:
    """The source a user asked for; ``auto`` probes the API with a short retry budget."""
    if choice is SourceChoice.SYNTHETIC:
        return SyntheticSource(synthetic_seed(seed))
    if choice is SourceChoice.RANDOMUSER:
        return RandomUserSource(RandomUserClient(settings.randomuser), seed=seed)
    probing = settings.randomuser.model_copy(
        update={"retry_budget_s": settings.randomuser.auto_probe_budget_s}
    )
    return AutoSource(
        RandomUserSource(RandomUserClient(probing), seed=seed),
        SyntheticSource(synthetic_seed(seed)),
    )


def parse_rate(rate: str | None) -> float | None:
    """``"500/s"`` or ``"500"`` -> 500.0 profiles per second."""
    if rate is None:
        return None
    try:
        value = float(rate.strip().removesuffix("/s"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise typer.BadParameter(
            f"{rate!r} is not a positive number of profiles per second (e.g. 200 or 200/s)",
            param_hint="--rate",
        )
    return value


def progress_line(progress: Progress) -> Text:
    return Text(
        f"{progress.source}: {progress.profiles_per_s:,.0f} profiles/s · sent {progress.sent:,} · "
        f"failed {progress.failed:,} · dead-lettered {progress.dead_lettered:,} · "
        f"{progress.bytes_sent / 1e6:,.1f} MB · {progress.elapsed_s:,.0f} s"
    )


def produce(
    source: Annotated[SourceChoice, typer.Option(help="Where profiles come from.")] = SourceChoice.AUTO,
    count: Annotated[
        int | None,
        typer.Option(min=1, help="Stop after this many profiles (default: run until Ctrl-C)."),
    ] = None,
    rate: Annotated[
        str | None, typer.Option(help="Target rate, e.g. 200/s (default: as fast as possible).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, max=5000, help="Profiles per request/batch, 1..5000.")
    ] = None,
    nat: Annotated[
        str | None, typer.Option(help="Comma-separated nationality codes, e.g. US,FR (default: all).")
    ] = None,
    seed: Annotated[
        str | None, typer.Option(help="Seed for reproducible profiles (API pages or synthetic).")
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option(
            callback=topic_name,
            help="Profiles topic; its dead-letter topic is <topic>.dlq (default: settings).",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(callback=log_level_name, help="Logging level: DEBUG, INFO, WARNING, ERROR.")
    ] = "INFO",
) -> None:
    """Produce profiles to Kafka with a live progress line; Ctrl-C stops cleanly after flushing."""
    # One log line per API request (INFO) and every dead letter (WARNING), above the live progress line.
    # The Kafka and HTTP clients' own INFO chatter stays out (warnings and above only).
    configure_logging(console, {"ingestion": log_level, "core": log_level}, show_time=False)
    settings = get_settings()
    settings.secrets.pseudonymization_key_bytes()  # refuse the public default key before any work
    try:
        nationalities = () if nat is None else check_nationalities(nat.split(","), required=True)
    except ValueError as error:
        raise typer.BadParameter(f"{error}; leave --nat out for all", param_hint="--nat") from error
    try:
        size = check_batch_size(batch_size if batch_size is not None else settings.producer.batch_size)
    except ValueError as error:
        hint = "--batch-size or USERPULSE_PRODUCER__BATCH_SIZE"
        raise typer.BadParameter(str(error), param_hint=hint) from error
    profiles_topic = topic or settings.kafka.profiles_topic
    dead_letter_topic = f"{profiles_topic}.dlq" if topic else settings.kafka.dead_letter_topic
    target_rate = parse_rate(rate)

    created = ensure_topics(settings, {profiles_topic: settings.kafka.topic_partitions, dead_letter_topic: 1})
    if created:
        console.print(f"created topics: {', '.join(created)}")

    with (
        ProfilePublisher(settings, profiles_topic, dead_letter_topic) as publisher,
        subject_key_store(settings) as subject_keys,
    ):
        producer = ProfileProducer(
            build_source(source, settings, seed),
            publisher,
            size,
            nationalities,
            subject_keys=PatientSubjectKeys(subject_keys, settings) if subject_keys else None,
            limits=settings.profiles.limits,
        )

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            console.print(f"{signal.Signals(signum).name}: finishing the current batch and flushing...")
            producer.stop_requested.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        try:
            with Live(progress_line(producer.progress()), console=console, refresh_per_second=4) as live:
                summary = producer.run(count, target_rate, on_batch=lambda p: live.update(progress_line(p)))
        except SourceUnavailableError as error:
            console.print(f"[red]gave up:[/red] {error}")
            raise typer.Exit(2) from error
        except StoreUnavailableError as error:
            console.print(f"[red]stopped:[/red] {error}")
            raise typer.Exit(1) from error
    if not console.is_terminal:
        console.print()  # a non-terminal gets the last progress frame without its line break
    final = producer.progress()  # after close(): every delivery is acknowledged or failed
    if final.refused_erased:
        console.print(f"{final.refused_erased:,} profiles of erased subjects were not published")
    console.print(
        f"done: {final.sent:,} profiles sent to {profiles_topic}, {final.dead_lettered:,} dead-lettered "
        f"to {dead_letter_topic}, {final.failed:,} failed, in {summary.elapsed_s:,.1f} s "
        f"({final.sent / max(summary.elapsed_s, 1e-9):,.0f} profiles/s, source {final.source})"
    )
    if final.failed:
        raise typer.Exit(1)
