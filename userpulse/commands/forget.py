"""``userpulse forget``: erase a subject (by uuid, or every subject with an e-mail) from every store."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from pyspark.sql import SparkSession
from rich.console import Console
from rich.table import Table

from core.settings import Settings, get_settings
from core.spark import build_spark_session
from core.validation import is_uuid
from privacy.erasure import ErasureReport, UnseenSubjectsError, erase_subjects, subjects_with_email
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session, mongo_client, mongo_database

console = Console()
errors = Console(stderr=True, soft_wrap=True)


def _check_uuid(uuid: str | None) -> str | None:
    if uuid is not None and not is_uuid(uuid):
        raise typer.BadParameter(f"{uuid!r} is not a profile uuid", param_hint="UUID")
    return uuid


def _uuids_with_email(settings: Settings, spark: SparkSession, email: str) -> set[str]:
    cluster, session = cassandra_session(settings)
    client = mongo_client(settings)
    try:
        apply_schema(session, settings.cassandra.keyspace, settings.cassandra.keyspace_replication)
        return subjects_with_email(email, settings, session, mongo_database(client, settings), spark)
    finally:
        client.close()
        cluster.shutdown()


def print_report(report: ErasureReport) -> None:
    table = Table(title=f"erased subject {report.subject_pseudonym[:16]}… (pseudonym)")
    table.add_column("store")
    table.add_column("removed", justify="right")
    for store, count in report.removed.items():
        table.add_row(store, f"{count:,}")
    console.print(table)
    for note in report.notes:
        console.print(f"• {note}")


def forget(
    uuid: Annotated[
        str | None, typer.Argument(callback=_check_uuid, help="The subject's uuid (login.uuid).")
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="Erase every subject with this e-mail (found by its pseudonym).")
    ] = None,
    requested_by: Annotated[
        str, typer.Option(help="Who asked (a name or a ticket): kept in the erasure log.")
    ] = "operator",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Erase even a uuid that no store has seen yet (a request that arrives before the data): "
            "it is recorded, and the producer will never publish that subject.",
        ),
    ] = False,
) -> None:
    """Erase a subject from every store (right to be forgotten) and print what each store removed.

    The subject's data key is deleted first, which makes every sealed copy in the Kafka topic and the
    archive unreadable; then its rows go from MongoDB, Cassandra and the Delta files. An erasure log
    keeps when and which pseudonym, never the personal data. Running it again is harmless.
    """
    if (uuid is None) == (email is None):
        raise typer.BadParameter("give either a uuid or --email")
    logging.basicConfig(level=logging.WARNING)
    settings = get_settings()
    settings.secrets.pseudonymization_key_bytes()  # refuse the public default key before any work
    spark = build_spark_session(settings, app_name="userpulse-forget")
    try:
        uuids = {uuid} if uuid is not None else _uuids_with_email(settings, spark, email or "")
        if not uuids:
            console.print(f"no profile with e-mail {email!r}: nothing to erase")
            raise typer.Exit(1)
        reports = erase_subjects(settings, spark, sorted(uuids), requested_by, force=force)
    except UnseenSubjectsError as unseen:
        errors.print(
            f"no store has seen {', '.join(unseen.uuids)}: nothing erased, nothing recorded. Check the "
            "uuid; to erase a subject before its data arrives (it will then never be published), run "
            "again with --force."
        )
        raise typer.Exit(1) from None
    finally:
        spark.stop()
    for report in reports:
        print_report(report)
