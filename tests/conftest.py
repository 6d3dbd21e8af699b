"""Shared fixtures: one service stack and one Spark session per test run, unique names per test.

The stack comes from testcontainers when a Docker engine answers a ping, otherwise from the local
stack (``infra/stack.py``), which the fixture starts if it is not running and stops afterwards only if
it started it. Unit tests never request these fixtures, so they never start a service.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from core.settings import Settings, get_settings
from core.spark import build_spark_session
from infra.isolation import drop_own_stores, own_settings
from infra.stack import CassandraService, FerretDBService, KafkaService, LocalStack

# The tests run on synthetic and recorded public data: the public default secrets are allowed (with a
# warning), in this process, its Spark workers and the ``userpulse`` commands the tests start.
os.environ.setdefault("USERPULSE_SECRETS__DEVELOPMENT_MODE", "true")

_CONTAINERS: dict[str, Any] = {}
"""The containers of the stack, by service ("kafka", "cassandra", "mongo"), when testcontainers runs it."""


def docker_engine_answers() -> bool:
    """Whether a Docker engine answers a ping (the ``docker`` client alone is not enough)."""
    try:
        import docker

        return bool(docker.from_env(timeout=3).ping())
    except Exception:  # no socket, no permission, no daemon: all mean "no engine"
        return False


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings pointing at a running Kafka, Cassandra and MongoDB-compatible server."""
    base = get_settings()
    if docker_engine_answers():
        from tests.integration.support.containers import containers_settings  # testcontainers: dev only

        with ExitStack() as resources:
            settings, containers = containers_settings(base, resources)
            _CONTAINERS.update(containers)
            yield settings
        return
    stack = LocalStack(base)
    already_running = stack.all_answering()
    if not already_running:
        stack.up()
    try:
        yield base
    finally:
        if not already_running:
            stack.down()


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """The one Spark session of the test run (local mode, no service needed), warehouse in a temp folder.

    Unit tests of DataFrame transformations use it on tiny frames; integration tests add the services.
    """
    base = get_settings()
    lake_dir = tmp_path_factory.mktemp("lake")
    settings = base.model_copy(update={"paths": base.paths.model_copy(update={"lake_dir": str(lake_dir)})})
    session = build_spark_session(settings, app_name="userpulse-tests")
    yield session
    session.stop()


@contextlib.contextmanager
def _frozen(settings: Settings, service: str) -> Iterator[None]:
    if service in _CONTAINERS:
        container = _CONTAINERS[service].get_wrapped_container()
        container.pause()
        try:
            yield
        finally:
            container.unpause()
        return
    pid = _SERVICES[service](settings).pid()
    assert pid is not None, f"{service} of the local stack is not running"
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


_SERVICES = {"kafka": KafkaService, "cassandra": CassandraService, "mongo": FerretDBService}


@contextlib.contextmanager
def _down(settings: Settings, service: str, kill: bool) -> Iterator[None]:
    if service in _CONTAINERS:
        # Untested here (no Docker engine on the CI machine); Docker keeps a stopped container's ports.
        container = _CONTAINERS[service].get_wrapped_container()
        container.kill() if kill else container.stop()
        try:
            yield
        finally:
            container.start()
            _wait_answering(settings, service)
        return
    local = _SERVICES[service](settings)
    pid = local.pid()
    assert pid is not None, f"{service} of the local stack is not running"
    if kill:
        os.killpg(pid, signal.SIGKILL)
    local.stop()  # SIGTERM (a clean stop), or, after the SIGKILL above, only the wait for the port
    try:
        yield
    finally:
        LocalStack(settings, [local]).up()  # waits until it answers again


def _wait_answering(settings: Settings, service: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not _SERVICES[service](settings).answers()[0]:
        assert time.monotonic() < deadline, f"{service} did not answer within {timeout_s:.0f} s of a restart"
        time.sleep(1)


@pytest.fixture
def stopped(stack_settings: Settings) -> Callable[..., AbstractContextManager[None]]:
    """``with stopped("cassandra"): ...`` stops a service of the stack for the block, as an operator
    would (SIGTERM), or, with ``kill=True``, crashes it (SIGKILL of its process group: no clean
    shutdown, nothing flushed); it is started again when the block ends and answers when it returns."""
    return lambda service, kill=False: _down(stack_settings, service, kill)


@pytest.fixture
def freeze(stack_settings: Settings) -> Callable[[str], AbstractContextManager[None]]:
    """``with freeze("mongo"): ...`` stops a service of the stack without closing anything (SIGSTOP of
    the local process group, or ``docker pause``): its sockets stay open and nothing answers, as when a
    server hangs. It runs again when the block ends."""
    return lambda service: _frozen(stack_settings, service)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names for topics, keyspaces and collections that no other test (or earlier run) uses.

    Letters, digits and underscores only, so the same name is valid for Kafka, CQL and MongoDB.
    """
    test_name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:20]

    def make(prefix: str) -> str:
        return f"{prefix}_{test_name}_{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder under ``test-output/`` for artefacts a test leaves for people (screenshots, reports)."""
    folder = Path(__file__).resolve().parents[1] / "test-output" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def own_stores(
    stack_settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Callable[..., Settings]]:
    """A factory of settings with a topic, keyspace, MongoDB database, lake and checkpoints of their
    own on the running stack (``own_settings``, more fields per section as keyword arguments), all
    removed when the test ends."""
    names: list[str] = []

    def make(prefix: str, **sections: dict[str, Any]) -> Settings:
        name = unique_name(prefix)
        names.append(name)
        return own_settings(stack_settings, name, tmp_path / name, **sections)

    yield make
    for name in names:
        drop_own_stores(stack_settings, name)
