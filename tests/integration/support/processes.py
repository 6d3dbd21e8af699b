"""Driving ``userpulse`` subprocesses in integration tests."""

from __future__ import annotations

import json
import os
import random
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.settings import Settings


def free_port() -> int:
    """A TCP port nothing listens on right now, for a server a test starts.

    Below the kernel's ephemeral range: a port from that range (what binding port 0 gives) may be handed
    to any other process before the test's server binds it, as Dagster's code server once took the
    webserver port a test had chosen.
    """
    try:
        first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    while True:
        port = random.randrange(max(1024, first_ephemeral - 12000), first_ephemeral)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: try another
            return port


def cli_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of a ``userpulse`` subprocess that uses the test's services, topic and stores."""
    environment = {
        **os.environ,
        "USERPULSE_KAFKA__HOST": settings.kafka.host,
        "USERPULSE_KAFKA__PORT": str(settings.kafka.port),
        "USERPULSE_KAFKA__PROFILES_TOPIC": settings.kafka.profiles_topic,
        "USERPULSE_KAFKA__DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
        "USERPULSE_CASSANDRA__HOST": settings.cassandra.host,
        "USERPULSE_CASSANDRA__PORT": str(settings.cassandra.port),
        "USERPULSE_CASSANDRA__KEYSPACE": settings.cassandra.keyspace,
        "USERPULSE_MONGO__HOST": settings.mongo.host,
        "USERPULSE_MONGO__PORT": str(settings.mongo.port),
        "USERPULSE_MONGO__DATABASE": settings.mongo.database,
        "USERPULSE_MONGO__RAW_PROFILES_COLLECTION": settings.mongo.raw_profiles_collection,
        "USERPULSE_MONGO__DEAD_LETTERS_COLLECTION": settings.mongo.dead_letters_collection,
        "USERPULSE_MONGO__LATEST_PROFILES_COLLECTION": settings.mongo.latest_profiles_collection,
        "USERPULSE_PATHS__LAKE_DIR": settings.paths.lake_dir,
        "USERPULSE_PATHS__CHECKPOINTS_DIR": settings.paths.checkpoints_dir,
        "USERPULSE_OBJECT_STORE__ENDPOINT": settings.object_store.endpoint,
        "USERPULSE_OBJECT_STORE__REGION": settings.object_store.region,
        "USERPULSE_OBJECT_STORE__PATH_STYLE_ACCESS": str(settings.object_store.path_style_access).lower(),
    }
    store = settings.object_store
    if store.access_key is not None and store.secret_key is not None:
        environment["USERPULSE_OBJECT_STORE__ACCESS_KEY"] = store.access_key
        environment["USERPULSE_OBJECT_STORE__SECRET_KEY"] = store.secret_key.get_secret_value()
    if settings.mongo.username and settings.mongo.password:
        environment["USERPULSE_MONGO__USERNAME"] = settings.mongo.username
        environment["USERPULSE_MONGO__PASSWORD"] = settings.mongo.password.get_secret_value()
    kafka, cassandra = settings.kafka, settings.cassandra
    if kafka.servers:  # a cluster's brokers
        environment["USERPULSE_KAFKA__SERVERS"] = ",".join(kafka.servers)
    if cassandra.contact_points:  # a cluster's nodes, and the keyspace's copies on them
        environment["USERPULSE_CASSANDRA__CONTACT_POINTS"] = ",".join(cassandra.contact_points)
    if cassandra.datacenter_replication:
        copies = json.dumps(cassandra.datacenter_replication)
        environment["USERPULSE_CASSANDRA__DATACENTER_REPLICATION"] = copies
    if kafka.sasl_username and kafka.sasl_password:
        environment["USERPULSE_KAFKA__SECURITY_PROTOCOL"] = kafka.security_protocol
        environment["USERPULSE_KAFKA__SASL_MECHANISM"] = kafka.sasl_mechanism
        environment["USERPULSE_KAFKA__SASL_USERNAME"] = kafka.sasl_username
        environment["USERPULSE_KAFKA__SASL_PASSWORD"] = kafka.sasl_password.get_secret_value()
    if cassandra.username and cassandra.password:
        environment["USERPULSE_CASSANDRA__USERNAME"] = cassandra.username
        environment["USERPULSE_CASSANDRA__PASSWORD"] = cassandra.password.get_secret_value()
    return {**environment, **overrides}


def sigterm_once(process: subprocess.Popen[str], ready: Callable[[], bool], timeout_s: float = 240) -> str:
    """Wait until ``ready()`` (the process must stay alive meanwhile), send SIGTERM, wait for the exit.

    Returns the process's stderr. The process is killed if it is still running when this returns.
    """
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert process.poll() is None, "the process exited before it was stopped"
            assert time.monotonic() < deadline, f"not ready within {timeout_s:.0f} s"
            time.sleep(0.3)
        process.terminate()
        _, stderr = process.communicate(timeout=120)
        return stderr
    finally:
        if process.poll() is None:
            process.kill()


def run_json(settings: Settings, command: str, **overrides: str) -> Any:
    """``userpulse <command> --json`` run as a user runs it, on the test's services and stores (more
    ``USERPULSE_*`` variables as keyword arguments); its output parsed."""
    result = subprocess.run(
        [sys.executable, "-m", "userpulse.cli", *shlex.split(command), "--json"],
        env=cli_environment(settings, **overrides),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_cli(settings: Settings, *arguments: str, **overrides: str) -> str:
    """``userpulse <arguments>`` run as a user runs it, on the test's services and stores (more
    ``USERPULSE_*`` variables as keyword arguments), no standard input; fails the test with the end of
    its error output unless it exits 0, and returns its standard output."""
    finished = subprocess.run(
        [sys.executable, "-m", "userpulse.cli", *arguments],
        env=cli_environment(settings, **overrides),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout
