"""``userpulse topics``, ``lag``, ``batches``, ``runs``, ``messages`` and ``dead-letters``: the pipeline's
topics, each layer's progress, the speed layer's latest micro-batches, the batch layer's latest runs, a
partition's last records and the records the layers could not use (and their re-drive), for people
(tables) and scripts (``--json``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from core.settings import get_settings
from ingestion.redrive import redrive_dead_letters
from orchestration.runs import RunHistory
from serving.operations import (
    DEAD_LETTER_HOURS,
    DEAD_LETTER_SOURCES,
    RATE_WINDOW_S,
    PartitionLag,
    TopicOverview,
    TopicReader,
    dead_letters_by_hour,
    hour_starts,
    layer_lag,
    size_on_disk,
    topic_overview,
)
from serving.profiles import DeadLetterRow, profile_documents
from serving.views import serving_views
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session, mongo_client, mongo_database

console = Console()

JSON_OPTION = typer.Option("--json", help="Print JSON instead of a table.")


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} s"


def topic_document(topic: TopicOverview) -> dict[str, Any]:
    """A topic's overview as JSON-ready data."""
    return {
        "topic": topic.name,
        "exists": topic.partitions is not None,
        "records": topic.records,
        "rate_per_s": topic.rate_per_s,
        "size_bytes": topic.size_bytes,
        "retention_ms": topic.retention_ms,
        "partitions": [asdict(p) | {"records": p.records} for p in topic.partitions or ()],
    }


def lag_document(row: PartitionLag) -> dict[str, Any]:
    """A partition's progress as JSON-ready data."""
    return asdict(row) | {"speed_lag": row.speed_lag, "archive_lag": row.archive_lag}


def topics(as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """The pipeline's Kafka topics: partitions, earliest and end offsets, records held, records appended
    in the last five minutes, size on disk, retention."""
    overviews = topic_overview(get_settings())
    if as_json:
        typer.echo(json.dumps([topic_document(t) for t in overviews], indent=2))
        return
    table = Table(
        "Topic", "Partition", "Earliest", "End", "Records", f"Last {RATE_WINDOW_S // 60} min", "On disk",
        "Retention", title="Kafka topics",
    )  # fmt: skip
    for topic in overviews:
        if topic.partitions is None:
            table.add_row(topic.name, "—", "—", "—", "—", "—", "—", "topic not created yet")
            continue
        retention = (
            "broker default" if topic.retention_ms is None else f"{topic.retention_ms / 86_400_000:g} d"
        )
        for p in topic.partitions:
            table.add_row(
                topic.name, str(p.partition), _count(p.earliest), _count(p.end), _count(p.records),
                _count(p.recent), size_on_disk(p.size_bytes), retention,
            )  # fmt: skip
    console.print(table)


def lag(as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """How far behind the topic's end the speed layer and the archive are, per partition (offsets from
    their checkpoints' last committed micro-batch)."""
    rows = layer_lag(get_settings())
    if as_json:
        typer.echo(json.dumps([lag_document(r) for r in rows], indent=2))
        return
    table = Table(
        "Partition", "End offset", "Speed layer at", "Speed lag", "Waiting", "Archive at", "Archive lag",
        "Waiting",
    )  # fmt: skip
    for r in rows:
        table.add_row(
            str(r.partition), _count(r.end), _count(r.speed), _count(r.speed_lag), _seconds(r.speed_lag_s),
            _count(r.archive), _count(r.archive_lag), _seconds(r.archive_lag_s),
        )  # fmt: skip
    console.print(table)
    console.print("Waiting: how long the oldest record that layer has not committed has waited.")
    if any(r.speed is None for r in rows) or any(r.archive is None for r in rows):
        console.print("—: that layer has not committed a micro-batch yet (no checkpoint).")


def batches(
    limit: Annotated[int, typer.Option(min=1, max=1_000, help="How many, newest first.")] = 10,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """The speed layer's latest micro-batches: records read, new profiles, duplicates, dead letters,
    under age, duration, input rate and the records left in the topic after each."""
    settings = get_settings()
    cluster, session = cassandra_session(settings)
    try:
        # The schema first, as every read does: before any layer ran, "no micro-batch", not an error.
        apply_schema(session, settings.cassandra.keyspace, settings.cassandra.keyspace_replication)
        views = serving_views(session, settings)
        recent = views.recent_speed_batches(limit)
    finally:
        cluster.shutdown()
    if as_json:
        typer.echo(
            json.dumps([asdict(b) | {"processed_at": b.processed_at.isoformat()} for b in recent], indent=2)
        )
        return
    if not recent:
        console.print("No micro-batch of the speed layer yet.")
        return
    table = Table(
        "Batch", "Processed (UTC)", "Records", "New profiles", "Duplicates", "Dead letters", "Under age",
        "Duration", "Records/s", "Left in topic", title="Latest micro-batches of the speed layer",
    )  # fmt: skip
    for b in recent:
        table.add_row(
            str(b.batch_id), b.processed_at.strftime("%Y-%m-%d %H:%M:%S"), _count(b.input_rows),
            _count(b.new_profiles), _count(b.duplicates), _count(b.dead_lettered), _count(b.under_age),
            f"{b.duration_ms / 1000:,.1f} s", "—" if b.rows_per_s is None else f"{b.rows_per_s:,.0f}",
            _count(b.kafka_lag),
        )  # fmt: skip
    console.print(table)


def messages(
    topic: Annotated[str | None, typer.Option(help="The topic (default: the profiles topic).")] = None,
    partition: Annotated[int, typer.Option(min=0, help="Its partition.")] = 0,
    last: Annotated[int, typer.Option(min=1, max=1_000, help="How many records, newest first.")] = 10,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """The last records of a topic's partition: offset, time written, key, headers and the value decoded,
    direct identifiers masked (sealed ones stay sealed)."""
    settings = get_settings()
    name = topic or settings.kafka.profiles_topic
    with TopicReader(settings) as reader:
        records = reader.last_messages(name, partition, last)
    if as_json:
        typer.echo(
            json.dumps([asdict(m) | {"timestamp": m.timestamp.isoformat()} for m in records], indent=2)
        )
        return
    table = Table("Offset", "Written (UTC)", "Key", "Headers", "Value (masked)", title=f"{name}:{partition}")
    for m in records:
        headers = ", ".join(f"{k}: {v}" for k, v in m.headers.items()) or "—"
        table.add_row(
            _count(m.offset), m.timestamp.strftime("%Y-%m-%d %H:%M:%S"), m.key or "—", headers, m.value
        )
    console.print(table)
    if not records:
        console.print(f"No records in {name}:{partition} (or no such topic or partition).")


def runs(
    limit: Annotated[int, typer.Option(min=1, max=1_000, help="How many, newest first.")] = 10,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """The batch layer's latest runs (archive and refresh) in Dagster's storage (``paths.dagster_home``):
    status, start, duration, the ingestion days covered, and a link to each in the Dagster UI."""
    settings = get_settings()
    with RunHistory(settings.paths.dagster_home) as history:
        recent = history.recent(limit)
    ui = settings.serving.dagster_ui_url.rstrip("/")
    if as_json:
        documents = [
            asdict(run)
            | {
                "started_at": run.started_at.isoformat() if run.started_at else None,
                "ended_at": run.ended_at.isoformat() if run.ended_at else None,
                "duration_s": run.duration_s,
                "url": f"{ui}/runs/{run.run_id}",
            }
            for run in recent
        ]
        typer.echo(json.dumps(documents, indent=2))
        return
    if not recent:
        console.print(f"No batch-layer run in the Dagster storage of {settings.paths.dagster_home}.")
        return
    table = Table(
        "Run", "Job", "Status", "Started (UTC)", "Duration", "Ingestion days", title="Batch-layer runs"
    )
    for run in recent:
        table.add_row(
            f"[link={ui}/runs/{run.run_id}]{run.run_id[:8]}[/link]", run.job, run.status,
            run.started_at.strftime("%Y-%m-%d %H:%M:%S") if run.started_at else "—",
            "—" if run.duration_s is None else f"{run.duration_s:,.1f} s", run.days or "—",
        )  # fmt: skip
    console.print(table)


dead_letters_app = typer.Typer(
    help="The records the speed and batch layers could not use, by reason (values masked).",
    no_args_is_help=True,
)


def dead_letter_document(row: DeadLetterRow) -> dict[str, Any]:
    """A dead letter as JSON-ready data (its value masked)."""
    document = asdict(row)
    for moment in ("kafka_timestamp", "stored_at"):
        document[moment] = document[moment].isoformat() if document[moment] is not None else None
    return document


@dead_letters_app.command("reasons")
def dead_letter_reasons(as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """Dead letters per layer and reason, the most frequent first."""
    settings = get_settings()
    client = mongo_client(settings)
    try:
        counts = profile_documents(mongo_database(client, settings), settings).dead_letter_counts()
    finally:
        client.close()
    if as_json:
        typer.echo(json.dumps([{"layer": j, "reason": r, "dead_letters": n} for j, r, n in counts], indent=2))
        return
    table = Table("Layer", "Reason", "Dead letters", title="Dead letters by reason")
    for job, reason, count in counts:
        table.add_row(job, reason, _count(count))
    console.print(table)


@dead_letters_app.command("hourly")
def dead_letter_hourly(
    hours: Annotated[int, typer.Option(min=1, max=24 * 90, help="How many hours back.")] = DEAD_LETTER_HOURS,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Dead letters per hour by source (the producer's topic, the speed and batch layers), newest first:
    the layers' letters not re-driven by the hour they were stored, the producer's by the hour they
    were appended. Hours without any are left out."""
    settings = get_settings()
    starts = hour_starts(datetime.now(UTC), hours)
    client = mongo_client(settings)
    try:
        tallies = profile_documents(mongo_database(client, settings), settings).dead_letter_tallies()
    finally:
        client.close()
    with TopicReader(settings) as reader:
        producer = reader.appended_per_hour(settings.kafka.dead_letter_topic, starts)
    rows = dead_letters_by_hour(tallies, producer, starts)
    if as_json:
        documents = [{"hour": row.hour.isoformat(), **row.by_source, "total": row.total} for row in rows]
        typer.echo(json.dumps(documents, indent=2))
        return
    table = Table("Hour (UTC)", *DEAD_LETTER_SOURCES, "All", title="Dead letters per hour")
    for row in rows:
        counts = [_count(row.by_source[source]) for source in DEAD_LETTER_SOURCES]
        table.add_row(f"{row.hour:%Y-%m-%d %H:00}", *counts, _count(row.total))
    console.print(table)


@dead_letters_app.command("list")
def dead_letter_list(
    reason: Annotated[str | None, typer.Option(help="Only the dead letters of this reason.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many, newest first.")] = 20,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """The latest dead letters: layer, reason, Kafka coordinates and the value (identifiers masked)."""
    settings = get_settings()
    client = mongo_client(settings)
    try:
        rows = profile_documents(mongo_database(client, settings), settings).latest_dead_letters(
            limit, reason
        )
    finally:
        client.close()
    if as_json:
        typer.echo(json.dumps([dead_letter_document(row) for row in rows], indent=2))
        return
    table = Table(
        "Stored", "Layer", "Reason", "Topic:partition:offset", "Value (masked)", title="Latest dead letters"
    )
    for row in rows:
        stored = row.stored_at.strftime("%Y-%m-%d %H:%M:%S") if row.stored_at else "—"
        table.add_row(stored, row.job, row.reason, f"{row.topic}:{row.partition}:{row.offset}", row.value)
    console.print(table)


@dead_letters_app.command("show")
def dead_letter_show(
    letter_id: Annotated[str, typer.Argument(help="The dead letter's topic:partition:offset.")],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """One dead letter: layer, reason, Kafka coordinates, where its re-drive went, and its value
    (identifiers masked)."""
    settings = get_settings()
    client = mongo_client(settings)
    try:
        row = profile_documents(mongo_database(client, settings), settings).dead_letter(letter_id)
    finally:
        client.close()
    if row is None:
        console.print(f"[red]No dead letter {letter_id!r}[/red] (see userpulse dead-letters list).")
        raise typer.Exit(1)
    document = dead_letter_document(row)
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    table = Table("Field", "Value", title=f"Dead letter {letter_id}", show_header=False)
    for name, value in document.items():
        table.add_row(name, "—" if value is None else str(value))
    console.print(table)


@dead_letters_app.command("redrive")
def dead_letter_redrive(
    reason: Annotated[str, typer.Option(help="Re-drive the dead letters of this reason (as listed).")],
    since: Annotated[
        datetime | None,
        typer.Option(
            help="Only those stored (or appended to the producer's topic) since (ISO 8601, UTC if no offset)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would happen; change nothing.")
    ] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Validate the dead letters of a reason again with today's code and settings, the layers' and the
    producer's: publish those that now pass to the profiles topic (once, however often this runs), give
    the layers' others today's reason. An erased subject's dead letter is never re-driven."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    report = redrive_dead_letters(get_settings(), reason, since, dry_run)
    document = {
        "reason": report.reason,
        "dry_run": report.dry_run,
        "selected": report.selected,
        "from_producer": report.from_producer,
        "redriven": report.redriven,
        "erased": report.erased,
        "still_refused": dict(report.still_refused),
    }
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    verb = "would be" if dry_run else "were"
    console.print(
        f"{report.selected:,} dead letters of {reason!r} not re-driven yet "
        f"({report.from_producer:,} from the producer's topic){' (dry run)' if dry_run else ''}:"
    )
    console.print(f"  {report.redriven:,} pass today's validation and {verb} published to the profiles topic")
    for new_reason, count in report.still_refused.most_common():
        console.print(f"  {count:,} still refused: {new_reason}")
    if report.erased:
        console.print(
            f"  {report.erased:,} of erased subjects: not re-driven, {'to be ' if dry_run else ''}deleted"
        )
