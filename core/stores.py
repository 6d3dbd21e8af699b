"""Connections to the serving stores, built from the settings: one place, used by every layer."""

from __future__ import annotations

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import DCAwareRoundRobinPolicy
from pymongo import MongoClient
from pymongo.database import Database

from core.settings import Settings


def cassandra_cluster(settings: Settings) -> Cluster:
    """A driver cluster object for the configured contact point (call ``shutdown()`` when done)."""
    cassandra = settings.cassandra
    profile = ExecutionProfile(
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=cassandra.local_datacenter),
        request_timeout=cassandra.request_timeout_s,
    )
    return Cluster(
        [cassandra.host],
        port=cassandra.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        protocol_version=5,
    )


def cassandra_session(settings: Settings) -> tuple[Cluster, Session]:
    """A connected session (no keyspace set: statements name theirs) and its cluster."""
    cluster = cassandra_cluster(settings)
    return cluster, cluster.connect()


def mongo_client(settings: Settings) -> MongoClient:
    """A pymongo client for the configured server (FerretDB locally, MongoDB elsewhere)."""
    timeout_ms = int(settings.mongo.server_selection_timeout_s * 1000)
    return MongoClient(settings.mongo.uri, serverSelectionTimeoutMS=timeout_ms, tz_aware=True)


def mongo_database(client: MongoClient, settings: Settings) -> Database:
    """The database holding the raw profile documents and dead letters."""
    return client[settings.mongo.database]
