"""Versioned CQL schema: the files in ``stores/cql/`` applied once each, in order, idempotently.

Each file's statements use ``IF NOT EXISTS``, and the keyspace's ``schema_migrations`` table records
which files were applied, so starting a job applies only what is new and applying twice is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from string import Template

from cassandra.cluster import Session

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


def apply_schema(
    session: Session, keyspace: str, replication: Mapping[str, str | int] = SINGLE_NODE
) -> list[str]:
    """Create the keyspace if needed (with ``replication``: ``CassandraSettings.keyspace_replication``)
    and apply the schema files it has not seen; returns those applied."""
    if not _KEYSPACE_NAME.match(keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r}: letters, digits, underscores, at most 48")
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
