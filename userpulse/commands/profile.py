"""``userpulse profile get|history|create|update|delete``: one profile by uuid, read from the stores,
written through the log.

Reads go to the stores that already answer for a uuid: the serving stores (``get``) and the Delta archive
(``history``). Writes never touch a store directly: ``create`` and ``update`` publish a sealed envelope
to the profiles topic, as the producer does, so both layers apply it and the archive keeps it like any
other version. ``delete`` is an erasure (``privacy/erasure.py``). The pure parts (reading ``--set
path=value``, applying it, validating) are functions of their own, tested without services.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from kafka.errors import KafkaError
from rich.console import Console
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table

from core.profile import ProfileEnvelope, profile_envelope, profile_reason
from core.sealing import unseal_identifiers
from core.settings import Settings, get_settings
from core.spark import build_spark_session
from core.validation import is_uuid
from ingestion.kafka_publisher import DeliveryCounts, ProfilePublisher, ensure_topics
from ingestion.producer import seal_envelopes
from serving.profile_store import (
    ProfileVersion,
    StoredProfile,
    changed_paths,
    profile_history,
    profile_store,
)
from stores.subject_keys import SubjectKeyStore, subject_key_store
from userpulse.commands.forget import forget
from userpulse.commands.params import utc_day

profile_app = typer.Typer(
    help="One profile by uuid: read it from the stores, or create and update it through the topic.",
    no_args_is_help=True,
)
console = Console(stderr=True, soft_wrap=True)  # messages stay whole lines for scripts and logs
output = Console()

ADMIN_SOURCE = "admin"
"""The envelope ``source`` of profiles written by hand, so they stay distinguishable from fetched ones."""

IMMUTABLE_PATHS: tuple[tuple[str, ...], ...] = (("login", "uuid"),)
"""Paths an update may not change: the uuid is the subject's identity (Kafka key, document id, data key)."""


class ProfileEditError(ValueError):
    """A ``--set`` that cannot be applied, or a profile file that cannot be used; the message says why."""


class ErasedSubjectError(RuntimeError):
    """The subject was erased: nothing of theirs may be published again."""


# --- pure logic -------------------------------------------------------------------------------


def parse_assignment(text: str) -> tuple[tuple[str, ...], str]:
    """``location.city=Lyon`` -> ``(("location", "city"), "Lyon")``; the value may itself contain ``=``."""
    path_text, separator, value = text.partition("=")
    path = tuple(part.strip() for part in path_text.split("."))
    if not separator or not all(path):
        raise ProfileEditError(f"--set {text!r}: expected path=value, e.g. location.city=Lyon")
    return path, value


def coerce_value(raw: str, current: Any) -> Any:
    """The value of a ``--set``, typed like the value it replaces.

    Fields keep the JSON type they arrived with (a phone stays a string even when it is all digits, an
    int postcode stays an int when the new one is a number). A new field, or one that held a number,
    an object or null, takes the value as JSON when it parses, else as a string.
    """
    if isinstance(current, str):
        return raw
    if isinstance(current, bool):
        return {"true": True, "false": False}.get(raw.strip().lower(), raw)
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # e.g. "SW1A 1AA" where an int postcode was: valid, the schema allows both


def apply_assignments(user: dict[str, Any], assignments: list[tuple[tuple[str, ...], str]]) -> dict[str, Any]:
    """A copy of ``user`` with each ``(path, value)`` set, missing objects created on the way."""
    edited = copy.deepcopy(user)
    for path, raw in assignments:
        if path in IMMUTABLE_PATHS:
            raise ProfileEditError(f"{'.'.join(path)} cannot be changed: it is the profile's identity")
        parent: Any = edited
        for depth, part in enumerate(path[:-1]):
            child = parent.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ProfileEditError(f"--set {'.'.join(path)}: {where} is a {type(child).__name__}")
            parent = child
        parent[path[-1]] = coerce_value(raw, parent.get(path[-1]))
    return edited


def validation_problems(user: Any, settings: Settings) -> list[str]:
    """Why ``user`` cannot be published, one reason per item (empty when it can): the rules the producer
    and both layers apply (``core.validation``)."""
    reason = profile_reason(user, ADMIN_SOURCE, datetime.now(UTC), settings.profiles.limits)
    return [] if reason is None else reason.split("; ")


def profile_uuid(user: dict[str, Any]) -> str:
    """``login.uuid`` of a validated profile."""
    return str(user["login"]["uuid"])


def load_profile_json(text: str, origin: str) -> dict[str, Any]:
    """The user object in ``text``: a bare user, or a randomuser.me response holding exactly one."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ProfileEditError(f"{origin} is not JSON: {error}") from error
    if isinstance(value, dict) and isinstance(value.get("results"), list):
        if len(value["results"]) != 1:
            raise ProfileEditError(f"{origin} holds {len(value['results'])} results: one profile at a time")
        value = value["results"][0]
    if not isinstance(value, dict):
        raise ProfileEditError(f"{origin} holds a JSON {type(value).__name__}, not a profile object")
    return value


def user_in_clear(document: dict[str, Any], data_key: bytes | None) -> dict[str, Any]:
    """The profile of a raw document in clear: as stored, or unsealed when the document is sealed."""
    user = document.get("user") or {}
    sealed = document.get("sealed")
    if not sealed:
        return user
    if data_key is None:
        raise ErasedSubjectError("the stored profile is sealed and the subject has no key (erased)")
    return unseal_identifiers(user, sealed, data_key)


def json_text(value: Any) -> str:
    """JSON for people and scripts: dates as ISO 8601, bytes as hex, non-ASCII kept."""

    def default(item: Any) -> Any:
        if isinstance(item, datetime | date):
            return item.isoformat()
        if isinstance(item, bytes | bytearray):
            return bytes(item).hex()
        return str(item)

    return json.dumps(value, default=default, ensure_ascii=False, indent=2)


def version_summary(version: ProfileVersion) -> str:
    """Name, e-mail and city of a version, or why it cannot be read."""
    if version.user is None:
        return version.note or version.status
    user = version.user
    name = " ".join(str(user.get("name", {}).get(part, "")) for part in ("first", "last")).strip()
    city = (user.get("location") or {}).get("city")
    parts = [name or "(name sealed)", user.get("email") or "(e-mail sealed)", city]
    return ", ".join(str(part) for part in parts if part)


def version_changes(versions: list[ProfileVersion]) -> list[str]:
    """For each version (newest first), the fields it changed from the next older readable one."""
    changes: list[str] = []
    for index, version in enumerate(versions):
        older = next((v for v in versions[index + 1 :] if v.readable), None)
        if not version.readable:
            changes.append("?")
        elif older is None:
            changes.append("first version")
        else:
            changes.append(", ".join(changed_paths(older.user, version.user)) or "none")
    return changes


# --- the effects ------------------------------------------------------------------------------


def fail(message: str, reasons: list[str] | None = None) -> NoReturn:
    """Print an error (and its reasons, one per line) and exit with code 1."""
    console.print(f"[red]error:[/red] {message}")
    for reason in reasons or []:
        console.print(f"  - {reason}")
    raise typer.Exit(1)


def read_profile_input(file: Path | None) -> dict[str, Any]:
    """The profile of ``--file`` (``-`` or none: standard input)."""
    if file is None or str(file) == "-":
        if sys.stdin.isatty():
            fail("give the profile with --file profile.json, or pipe its JSON on standard input")
        return load_profile_json(sys.stdin.read(), "standard input")
    try:
        return load_profile_json(file.read_text(encoding="utf-8"), str(file))
    except OSError as error:
        raise ProfileEditError(f"cannot read {file}: {error.strerror}") from error


def sealed_envelope(user: dict[str, Any], key_store: SubjectKeyStore) -> ProfileEnvelope:
    """The envelope of a validated profile, sealed under its subject's data key (created when new)."""
    uuid = profile_uuid(user)
    envelope = profile_envelope(user, ADMIN_SOURCE, datetime.now(UTC))
    sealed, without_key = seal_envelopes([envelope], key_store.keys_creating_missing([uuid]))
    if without_key:
        raise ErasedSubjectError(f"subject {uuid} was erased: nothing of theirs is published again")
    return sealed[0]


def publish_envelope(settings: Settings, envelope: ProfileEnvelope) -> DeliveryCounts:
    """Publish one envelope to the profiles topic (created if missing) and wait for the broker's answer."""
    topic = settings.kafka.profiles_topic
    ensure_topics(settings, {topic: settings.kafka.topic_partitions})
    with ProfilePublisher(settings, topic, settings.kafka.dead_letter_topic) as publisher:
        publisher.publish(envelope)
    return publisher.counts()  # after close(): acknowledged or failed, nothing pending


def publish_profile(settings: Settings, user: dict[str, Any], key_store: SubjectKeyStore, verb: str) -> None:
    """Seal, publish and report one profile; exit 1 when the broker did not acknowledge it."""
    uuid = profile_uuid(user)
    try:
        envelope = sealed_envelope(user, key_store)
    except ErasedSubjectError as error:
        fail(str(error))
    try:
        counts = publish_envelope(settings, envelope)
    except KafkaError as error:
        fail(f"profile {uuid} could not be published to {settings.kafka.profiles_topic}: {error}")
    if counts.sent != 1 or counts.failed:
        fail(f"profile {uuid} was not acknowledged by Kafka ({counts.failed} failed delivery)")
    console.print(
        f"{verb} profile {uuid}: published to {settings.kafka.profiles_topic} "
        f"(sealed, source {ADMIN_SOURCE}); the layers and the archive take it from there"
    )


def stored_or_fail(uuid: str, settings: Settings) -> StoredProfile:
    """What the serving stores hold for ``uuid``; exit 1 when they hold nothing."""
    with profile_store(settings) as store:
        stored = store.read(uuid)
    if not stored.found:
        fail(f"no profile {uuid} in the serving stores (MongoDB {settings.mongo.raw_profiles_collection}, "
             f"Cassandra {settings.cassandra.keyspace}.profiles)")  # fmt: skip
    return stored


# --- the commands -----------------------------------------------------------------------------


def _profile_uuid(value: str) -> str:
    """A profile uuid, or a usage error (an empty or malformed one can match no profile)."""
    if not is_uuid(value):
        raise typer.BadParameter(f"{value!r} is not a profile uuid (8-4-4-4-12 hexadecimal digits)")
    return value


UuidArgument = Annotated[str, typer.Argument(callback=_profile_uuid, help="The profile's login.uuid.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
FileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="A JSON profile (randomuser 1.4 user object); '-' or none: stdin."),
]


@profile_app.command()
def get(uuid: UuidArgument, as_json: JsonOption = False) -> None:
    """Show a profile as the serving stores hold it: MongoDB raw document, Cassandra pseudonymized row."""
    stored = stored_or_fail(uuid, get_settings())
    if as_json:
        view = {"uuid": uuid, "raw_document": stored.raw_document, "cassandra_row": stored.cassandra_row}
        typer.echo(json_text(view))
        return
    raw = stored.raw_document
    output.print(
        Panel(JSON(json_text(raw)), title="MongoDB raw document (in clear)")
        if raw is not None
        else "[yellow]no raw document in MongoDB[/yellow] (expired by retention, or not processed yet)"
    )
    if stored.cassandra_row is None:
        output.print("[yellow]no row in Cassandra profiles[/yellow]")
        return
    table = Table(title="Cassandra profiles row (pseudonymized)", show_header=False)
    for column, value in stored.cassandra_row.items():
        table.add_row(column, "" if value is None else str(value))
    output.print(table)


@profile_app.command()
def history(
    uuid: UuidArgument,
    since: Annotated[
        datetime | None,
        typer.Option("--since", formats=["%Y-%m-%d"], help="First UTC ingestion day to read."),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option("--until", formats=["%Y-%m-%d"], help="Last UTC ingestion day to read."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Every version of a profile in the Delta archive, newest first (unsealed with the subject's key)."""
    settings = get_settings()
    with subject_key_store(settings, enabled=True) as key_store:
        assert key_store is not None  # enabled=True always gives a store
        data_key = key_store.keys_for([uuid]).get(uuid)
        erased = bool(key_store.erased([uuid]))
    spark = build_spark_session(settings, app_name="userpulse-profile-history")
    try:
        versions = profile_history(spark, settings, uuid, data_key, utc_day(since), utc_day(until))
    finally:
        spark.stop()
    if not versions:
        fail(f"no version of {uuid} in the archive {settings.paths.archive_table}")
    if as_json:
        typer.echo(json_text([asdict(version) for version in versions]))
        return
    table = Table(title=f"Versions of {uuid}, newest first")
    for column in ("fetched at", "source", "envelope", "partition:offset", "ingested", "read", "changed"):
        table.add_column(column)
    table.add_column("profile", overflow="fold")
    for version, changes in zip(versions, version_changes(versions), strict=True):
        table.add_row(
            version.fetched_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if version.fetched_at else "?",
            version.source or "?",
            f"v{version.schema_version}" if version.schema_version is not None else "?",
            f"{version.partition}:{version.offset}",
            str(version.ingestion_date),
            version.status,
            changes,
            version_summary(version),
        )
    output.print(table)
    if erased or any(version.status == "erased" for version in versions):
        output.print("[yellow]the subject was erased: its sealed versions are unreadable[/yellow]")


@profile_app.command()
def create(file: FileOption = None) -> None:
    """Publish a new profile (validated, sealed) to the profiles topic; its uuid must be new."""
    settings = get_settings()
    try:
        user = read_profile_input(file)
    except ProfileEditError as error:
        fail(str(error))
    problems = validation_problems(user, settings)
    if problems:
        fail("not a valid profile, nothing was published:", problems)
    uuid = profile_uuid(user)
    with subject_key_store(settings, enabled=True) as key_store:
        assert key_store is not None
        if key_store.erased([uuid]):
            fail(f"subject {uuid} was erased: nothing of theirs is published again")
        with profile_store(settings) as store:
            stored = store.read(uuid)
        # A key without stored copies is a profile already published that the layers have not stored
        # yet (or whose copies expired): either way the uuid is taken.
        if stored.found or key_store.keys_for([uuid]):
            fail(f"profile {uuid} already exists: use `userpulse profile update {uuid}`")
        publish_profile(settings, user, key_store, "created")


@profile_app.command()
def update(
    uuid: UuidArgument,
    assignments: Annotated[
        list[str] | None,
        typer.Option("--set", help="path=value to change, e.g. --set location.city=Lyon (repeatable)."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="The whole new profile (JSON) instead of the stored one."),
    ] = None,
) -> None:
    """Publish a changed version of a profile: the stored one with each --set applied, or --file."""
    settings = get_settings()
    if not assignments and file is None:
        raise typer.BadParameter("nothing to change: give --set path=value (repeatable) or --file FILE")
    try:
        parsed = [parse_assignment(text) for text in assignments or []]
    except ProfileEditError as error:
        raise typer.BadParameter(str(error), param_hint="--set") from error
    try:
        base = read_profile_input(file) if file is not None else None
    except ProfileEditError as error:
        fail(str(error))
    with subject_key_store(settings, enabled=True) as key_store:
        assert key_store is not None
        if key_store.erased([uuid]):
            fail(f"subject {uuid} was erased: nothing of theirs is published again")
        data_key = key_store.keys_for([uuid]).get(uuid)
        with profile_store(settings) as store:
            stored = store.read(uuid)
        if not stored.found and data_key is None:
            fail(f"no profile {uuid}: create it with `userpulse profile create`")
        if base is None:
            if stored.raw_document is None:
                fail(f"no raw document of {uuid} to start from (expired or not processed yet): "
                     "give the whole profile with --file")  # fmt: skip
            try:
                base = user_in_clear(stored.raw_document, data_key)
            except ErasedSubjectError as error:
                fail(str(error))
        try:
            user = apply_assignments(base, parsed)
        except ProfileEditError as error:
            fail(str(error))
        problems = validation_problems(user, settings)
        if problems:
            fail("the changed profile is not a valid profile, nothing was published:", problems)
        if profile_uuid(user) != uuid:
            fail(f"the profile's login.uuid is {profile_uuid(user)}, not {uuid}: the uuid cannot change")
        publish_profile(settings, user, key_store, "updated")


@profile_app.command()
def delete(
    uuid: UuidArgument,
    requested_by: Annotated[
        str, typer.Option(help="Who asked (a name or a ticket): kept in the erasure log.")
    ] = "operator",
    force: Annotated[
        bool, typer.Option("--force", help="Erase even a uuid that no store has seen yet (it is recorded).")
    ] = False,
) -> None:
    """Erase the profile's subject from every store: the same as `userpulse forget <uuid>`."""
    forget(uuid=uuid, email=None, requested_by=requested_by, force=force)
