"""Readiness probes: one real request per service, the same one a client of ours would make first.

Each probe returns a short description of what answered and raises when the service does not answer.
They take host and port explicitly so that they work for the local stack, Docker Compose and
testcontainers alike.
"""

from __future__ import annotations

import logging
import socket

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import RoundRobinPolicy
from kafka import KafkaAdminClient
from pymongo import MongoClient

PROBE_TIMEOUT_S = 3.0


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def probe_kafka(host: str, port: int) -> str:
    """A Kafka metadata request (DescribeCluster); returns the cluster id."""
    admin = KafkaAdminClient(
        bootstrap_servers=f"{host}:{port}",
        client_id="userpulse-probe",
        request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
        bootstrap_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
        reconnect_backoff_max_ms=500,
    )
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    return f"cluster {cluster['cluster_id']}"


def probe_cassandra(host: str, port: int) -> str:
    """A CQL query against ``system.local``; returns the server's release version."""
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=PROBE_TIMEOUT_S)
    cluster = Cluster(
        [host],
        port=port,
        connect_timeout=PROBE_TIMEOUT_S,
        control_connection_timeout=PROBE_TIMEOUT_S,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    # A node that is still starting refuses connections; the driver logs each refusal as an error,
    # which is expected while polling.
    driver_logger = logging.getLogger("cassandra.cluster")
    previous_level = driver_logger.level
    driver_logger.setLevel(logging.CRITICAL)
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local", timeout=PROBE_TIMEOUT_S).one()
    finally:
        cluster.shutdown()
        driver_logger.setLevel(previous_level)
    return f"Cassandra {row.release_version}"


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
