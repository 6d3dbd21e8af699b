"""Readiness probes: one real request per service, the same one a client of ours would make first.

Each probe returns a short description of what answered and raises when the service does not answer.
They take host and port explicitly so that they work for the local stack, Docker Compose and
testcontainers alike, and the security settings (login, TLS) of the service's section when it has them.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import WhiteListRoundRobinPolicy
from cassandra.query import SimpleStatement
from kafka import KafkaAdminClient
from pyarrow import fs
from pymongo import MongoClient

from core.settings import CassandraSettings, KafkaSettings, ObjectStoreSettings
from stores.connections import cassandra_security
from stores.object_store import s3_options

PROBE_TIMEOUT_S = 3.0


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def probe_kafka(host: str, port: int, kafka: KafkaSettings | None = None, brokers: int = 1) -> str:
    """A Kafka metadata request (DescribeCluster); returns the cluster id. Raises until ``brokers``
    brokers have registered (a cluster: before that, a topic with as many copies cannot be created)."""
    timeout_ms = int(PROBE_TIMEOUT_S * 1000)
    admin = KafkaAdminClient(
        **{
            **(kafka or KafkaSettings()).client_options(),  # its security settings
            "bootstrap_servers": f"{host}:{port}",
            "bootstrap_timeout_ms": timeout_ms,
        },
        client_id="userpulse-probe",
        request_timeout_ms=timeout_ms,
        reconnect_backoff_max_ms=500,
    )
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    registered = len(cluster["brokers"])
    if registered < brokers:
        raise RuntimeError(f"{registered} of {brokers} brokers have registered")
    return f"cluster {cluster['cluster_id']}" + (f", {registered} brokers" if brokers > 1 else "")


def probe_cassandra(host: str, port: int, cassandra: CassandraSettings | None = None) -> str:
    """A CQL query against ``system.local``; returns the server's release version."""
    security = cassandra_security(cassandra or CassandraSettings())
    row = _on_cassandra(host, port, security, "SELECT release_version FROM system.local")
    return f"Cassandra {row.release_version}"


def probe_cassandra_ring(host: str, port: int, cassandra: CassandraSettings, addresses: list[str]) -> str:
    """Like ``probe_cassandra``, and raises until the node at ``host`` sees every other node of
    ``addresses`` in its ring and alive: its peers table lists them all, and a read of every range of
    ``system_traces`` (two copies of each) at consistency ALL succeeds. Until then a keyspace created
    through this node may be placed on fewer nodes than its replication asks, and a quorum write fails.
    """
    security = cassandra_security(cassandra)
    with _cassandra_session(host, port, security) as session:
        release = session.execute("SELECT release_version FROM system.local", timeout=PROBE_TIMEOUT_S).one()
        peers = {str(row.peer) for row in session.execute("SELECT peer FROM system.peers_v2")}
        missing = sorted(set(addresses) - peers - {host})
        if missing:
            raise RuntimeError(f"{host} does not see {', '.join(missing)} in its ring yet")
        every_copy = SimpleStatement(
            "SELECT session_id FROM system_traces.sessions LIMIT 1", consistency_level=ConsistencyLevel.ALL
        )
        session.execute(every_copy, timeout=PROBE_TIMEOUT_S)
    return f"Cassandra {release.release_version}, {len(addresses)} nodes up"


DEFAULT_CASSANDRA_SUPERUSER = ("cassandra", "cassandra")
"""The superuser a Cassandra node with ``PasswordAuthenticator`` creates on its first start."""


def create_cassandra_login(host: str, port: int, cassandra: CassandraSettings) -> None:
    """Create the settings' user on a new node, logged in as its default superuser (the local stack
    with authentication on: the platform creates keyspaces, so its user is a superuser)."""
    assert cassandra.username is not None
    password = cassandra.password.get_secret_value() if cassandra.password else ""
    _on_cassandra(
        host, port, {"auth_provider": PlainTextAuthProvider(*DEFAULT_CASSANDRA_SUPERUSER)},
        "CREATE ROLE IF NOT EXISTS %s WITH PASSWORD = %s AND LOGIN = true AND SUPERUSER = true",
        (cassandra.username, password),
    )  # fmt: skip


@contextmanager
def _cassandra_session(host: str, port: int, security: dict[str, Any]) -> Iterator[Session]:
    """A session whose requests all go to the node at ``host`` (a probe asks that node, not another
    one the driver discovered)."""
    profile = ExecutionProfile(
        load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=PROBE_TIMEOUT_S
    )
    cluster = Cluster(
        [host],
        port=port,
        connect_timeout=PROBE_TIMEOUT_S,
        control_connection_timeout=PROBE_TIMEOUT_S,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        **security,
    )
    # A node that is still starting refuses connections; the driver logs each refusal as an error,
    # which is expected while polling.
    driver_logger = logging.getLogger("cassandra.cluster")
    previous_level = driver_logger.level
    driver_logger.setLevel(logging.CRITICAL)
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()
        driver_logger.setLevel(previous_level)


def _on_cassandra(
    host: str, port: int, security: dict[str, Any], statement: str, parameters: tuple[str, ...] = ()
) -> Any:
    with _cassandra_session(host, port, security) as session:
        return session.execute(statement, parameters or None, timeout=PROBE_TIMEOUT_S).one()


def probe_mongo(host: str, port: int) -> str:
    """A MongoDB ``ping`` command; returns the server's version (FerretDB reports a MongoDB version)."""
    timeout_ms = int(PROBE_TIMEOUT_S * 1000)
    with MongoClient(
        host, port, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, directConnection=True
    ) as client:
        client.admin.command("ping")
        build_info = client.admin.command("buildInfo")
    if "ferretdbVersion" in build_info:
        return f"FerretDB {build_info['ferretdbVersion']} (MongoDB {build_info['version']} protocol)"
    return f"MongoDB {build_info['version']}"


def probe_object_store(store: ObjectStoreSettings) -> str:
    """An S3 ListBuckets request, signed with the settings' keys; returns the buckets."""
    s3 = fs.S3FileSystem(
        **s3_options(store), connect_timeout=PROBE_TIMEOUT_S, request_timeout=PROBE_TIMEOUT_S
    )
    buckets = sorted(info.base_name for info in s3.get_file_info(fs.FileSelector("")))
    return f"S3 API, buckets: {', '.join(buckets) or 'none'}"
