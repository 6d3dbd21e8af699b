"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.integration.kafka_helpers import drop_own_stores, own_settings


@pytest.fixture
def own_stores(
    stack_settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Callable[[str], Settings]]:
    """A factory of settings with a topic, keyspace, MongoDB database, lake and checkpoints of their
    own on the running stack (``own_settings``), all removed when the test ends."""
    names: list[str] = []

    def make(prefix: str) -> Settings:
        name = unique_name(prefix)
        names.append(name)
        return own_settings(stack_settings, name, tmp_path / name)

    yield make
    for name in names:
        drop_own_stores(stack_settings, name)
