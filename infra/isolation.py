"""A run's own topics, keyspace, MongoDB database, lake and checkpoints on a shared stack.

Every integration test (the ``own_stores`` fixture) and benchmark (``own_stores`` here) runs in stores
of its own, named after it, so that one stack serves a whole run: nothing restarts a service between
tests, no test sees another's data, and what a run leaves behind is removed by its name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from kafka import KafkaAdminClient

from core.settings import Settings
from stores.cassandra_schema import drop_keyspace as drop_keyspace_in
from stores.connections import cassandra_session, mongo_client


def delete_topics(settings: Settings, *topics: str) -> None:
    """Delete the topics that exist among ``topics``."""
    admin = KafkaAdminClient(**settings.kafka.client_options())
    try:
        existing = set(admin.list_topics())
        to_delete = [topic for topic in topics if topic in existing]
        if to_delete:
            admin.delete_topics(to_delete)
    finally:
        admin.close()


def drop_keyspace(settings: Settings, keyspace: str) -> None:
    """Drop a run's Cassandra keyspace if it exists."""
    cluster, session = cassandra_session(settings)
    try:
        drop_keyspace_in(session, keyspace)
    finally:
        cluster.shutdown()


def own_stores_overrides(stack_settings: Settings, name: str, folder: Path) -> dict[str, str]:
    """Settings overrides (``section.field`` -> value, as the orchestration's ``PlatformSettings`` takes
    them) that give a run its own topics (``name``, ``name.dlq``), keyspace and MongoDB database
    (``name``), and lake and checkpoints under ``folder``, on the running stack."""
    overrides = {
        "kafka.host": stack_settings.kafka.host,
        "kafka.port": str(stack_settings.kafka.port),
        "kafka.profiles_topic": name,
        "kafka.dead_letter_topic": f"{name}.dlq",  # the dead-letter topic's name, as the producer gives it
        "cassandra.host": stack_settings.cassandra.host,
        "cassandra.port": str(stack_settings.cassandra.port),
        "cassandra.keyspace": name,
        "mongo.host": stack_settings.mongo.host,
        "mongo.port": str(stack_settings.mongo.port),
        "mongo.database": name,
        # As URIs, like a lake on an object store: no code may treat a location as a local path.
        "paths.lake_dir": (folder / "lake").absolute().as_uri(),
        "paths.checkpoints_dir": (folder / "checkpoints").absolute().as_uri(),
    }
    if stack_settings.mongo.username is not None and stack_settings.mongo.password is not None:
        overrides["mongo.username"] = stack_settings.mongo.username
        overrides["mongo.password"] = stack_settings.mongo.password.get_secret_value()
    return overrides


def local_folder(location: str) -> Path:
    """The folder of a location on this machine (a ``file:`` URI or a path), for a test or benchmark
    that looks at the files themselves."""
    return Path(url2pathname(urlsplit(location).path)) if location.startswith("file:") else Path(location)


def drop_own_stores(stack_settings: Settings, name: str) -> None:
    """Remove what ``own_stores_overrides`` gave a run: its topics, keyspace and MongoDB database."""
    delete_topics(stack_settings, name, f"{name}.dlq")
    drop_keyspace(stack_settings, name)
    client = mongo_client(stack_settings)
    try:
        client.drop_database(name)
    finally:
        client.close()


def own_settings(stack_settings: Settings, name: str, folder: Path, **sections: Any) -> Settings:
    """``stack_settings`` with the test's own topics, keyspace, MongoDB database, lake and checkpoints
    (``own_stores_overrides``), and more fields per section (``profiles={"window_duration": ...}``)."""
    overrides = own_stores_overrides(stack_settings, name, folder)
    updates: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        section, field = dotted.split(".", 1)
        updates.setdefault(section, {})[field] = value
    for section, fields in sections.items():
        updates.setdefault(section, {}).update(fields)
    return stack_settings.model_copy(
        update={
            section: type(getattr(stack_settings, section)).model_validate(
                {**getattr(stack_settings, section).model_dump(), **fields}
            )
            for section, fields in updates.items()
        }
    )


@contextmanager
def own_stores(stack_settings: Settings, prefix: str, folder: Path, **sections: Any) -> Iterator[Settings]:
    """Settings with stores of their own (``own_settings``, named ``prefix`` and a random suffix, lake
    and checkpoints under ``folder``), removed on exit: a benchmark's run."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        yield own_settings(stack_settings, name, folder / name, **sections)
    finally:
        drop_own_stores(stack_settings, name)
