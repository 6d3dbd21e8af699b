"""Versioned CQL schema: the files in ``stores/cql/`` applied once each, in order, idempotently.

Each file's statements use ``IF NOT EXISTS``, and the keyspace's ``schema_migrations`` table records
which files were applied, so starting a job applies only what is new and applying twice is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args

from core.settings import RetentionSettings

CQL_DIR = Path(__file__).resolve().parent / "cql"
_KEYSPACE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_REPLICATION_TERM = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""A replication class, data-centre name or count: nothing that could end the CQL literal."""


def cql_statements(cql: str) -> list[str]:
    """The statements of a CQL file: ``--`` comments removed, split on ``;``."""
    without_comments = "\n".join(line.split("--", 1)[0] for line in cql.splitlines())
    return [statement.strip() for statement in without_comments.split(";") if statement.strip()]


def migration_files() -> list[Path]:
    """The schema files in the order they apply (their names start with a version number)."""
    return sorted(CQL_DIR.glob("*.cql"))


SINGLE_NODE: Mapping[str, str | int] = {"class": "SimpleStrategy", "replication_factor": 1}


def replication_cql(replication: Mapping[str, str | int]) -> str:
    """A keyspace's ``replication`` map as a CQL literal, e.g. ``{'class': 'SimpleStrategy', ...}``."""
    for key, value in replication.items():
        if not _REPLICATION_TERM.match(key) or not _REPLICATION_TERM.match(str(value)):
            raise ValueError(f"invalid replication option {key!r}: {value!r}")
    return "{" + ", ".join(f"'{key}': '{value}'" for key, value in replication.items()) + "}"


def _checked_keyspace(keyspace: str) -> str:
    """``keyspace`` if it is a legal name; a name goes into the CQL text (it cannot be a bound value)."""
    if not _KEYSPACE_NAME.match(keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r}: letters, digits, underscores, at most 48")
    return keyspace


def drop_keyspace(session: Session, keyspace: str) -> None:
    """Drop a keyspace and everything in it, if it exists (a test's or a benchmark's own)."""
    session.execute(f"DROP KEYSPACE IF EXISTS {_checked_keyspace(keyspace)}")


def apply_schema(
    session: Session, keyspace: str, replication: Mapping[str, str | int] = SINGLE_NODE
) -> list[str]:
    """Create the keyspace if needed (with ``replication``: ``CassandraSettings.keyspace_replication``)
    and apply the schema files it has not seen; returns those applied."""
    _checked_keyspace(keyspace)
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication_cql(replication)}"
    )
    session.execute(
        f"CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations "
        "(version text PRIMARY KEY, applied_at timestamp)"
    )
    applied = {row.version for row in session.execute(f"SELECT version FROM {keyspace}.schema_migrations")}
    newly_applied = []
    for path in migration_files():
        if path.name in applied:
            continue
        for statement in cql_statements(Template(path.read_text()).substitute(keyspace=keyspace)):
            session.execute(statement)
        session.execute(
            f"INSERT INTO {keyspace}.schema_migrations (version, applied_at) VALUES (%s, %s)",
            (path.name, datetime.now(UTC)),
        )
        newly_applied.append(path.name)
    return newly_applied


# -- row expiry (the retention job's) ------------------------------------------------------------------


@dataclass(frozen=True)
class CassandraTable:
    """A table whose rows expire: its retention setting, the column aging its rows, its primary key."""

    name: str
    days_setting: str
    """The ``RetentionSettings`` field giving its retention."""
    time_column: str
    key_columns: tuple[str, ...]


CASSANDRA_TABLES: tuple[CassandraTable, ...] = (
    CassandraTable("profiles", "profiles_days", "fetched_at", ("uuid",)),
    CassandraTable(
        "speed_partials",
        "speed_views_days",
        "window_start",
        ("dimension", "window_start", "value", "batch_id", "task"),
    ),
    CassandraTable("speed_windows", "speed_views_days", "window_start", ("dimension", "window_start")),
    CassandraTable("stream_batches", "speed_views_days", "processed_at", ("job", "batch_id")),
)
"""The Cassandra tables under retention; the batch views and ``schema_migrations`` are not."""

SECONDS_PER_DAY = 86_400


def table_ttls(retention: RetentionSettings) -> dict[str, int]:
    """The ``default_time_to_live`` (seconds) each table under retention should have."""
    return {
        table.name: getattr(retention, table.days_setting) * SECONDS_PER_DAY for table in CASSANDRA_TABLES
    }


def current_ttls(session: Session, keyspace: str) -> dict[str, int]:
    """``default_time_to_live`` of each table of the keyspace, as the schema has it now."""
    rows = session.execute(
        "SELECT table_name, default_time_to_live FROM system_schema.tables WHERE keyspace_name = %s",
        (keyspace,),
    )
    return {row.table_name: row.default_time_to_live for row in rows}


def set_table_ttls(session: Session, keyspace: str, wanted: Mapping[str, int]) -> list[str]:
    """Alter the tables whose default TTL differs from ``wanted``; returns those altered.

    Only rows written afterwards get the new TTL: the caller deletes older rows by their timestamp.
    """
    present = current_ttls(session, keyspace)
    changed = [name for name, ttl in wanted.items() if name in present and present[name] != ttl]
    for name in changed:
        session.execute(f"ALTER TABLE {keyspace}.{name} WITH default_time_to_live = {int(wanted[name])}")
    return changed


def delete_rows_older_than(session: Session, keyspace: str, table: CassandraTable, cutoff: datetime) -> int:
    """Delete the rows of ``table`` whose time column is before ``cutoff``; returns how many.

    A filtering scan (``ALLOW FILTERING``), read page by page: the TTL bounds these tables, so the scan
    is over a bounded table once a day, and it is the only way to reach rows written without a TTL.
    """
    keys = ", ".join(table.key_columns)
    rows = session.execute(
        f"SELECT {keys} FROM {keyspace}.{table.name} WHERE {table.time_column} < %s ALLOW FILTERING",
        (cutoff,),
    )
    old = [tuple(getattr(row, column) for column in table.key_columns) for row in rows]
    if old:
        where = " AND ".join(f"{column} = ?" for column in table.key_columns)
        delete = session.prepare(f"DELETE FROM {keyspace}.{table.name} WHERE {where}")
        execute_concurrent_with_args(session, delete, old, concurrency=64, raise_on_first_error=True)
    return len(old)
