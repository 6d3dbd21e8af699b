"""Store reads from a page: the value, or one sentence on why not (timeout or failure)."""

from __future__ import annotations

import asyncio
import logging
import time

from serving.off_loop import read_within

LOGGER = logging.getLogger("test")


def test_a_read_gives_its_value() -> None:
    answer = asyncio.run(read_within(lambda: 42, 1.0, "lookup", LOGGER))
    assert answer.value == 42 and answer.failure is None


def test_a_slow_read_is_reported_not_waited_for() -> None:
    answer = asyncio.run(read_within(lambda: time.sleep(0.5), 0.05, "lookup", LOGGER))
    assert answer.value is None and answer.failure == "no answer from the stores within 0 s"


def test_a_failing_read_says_what_failed() -> None:
    def broken() -> int:
        raise ConnectionError("cassandra unreachable")

    answer = asyncio.run(read_within(broken, 1.0, "lookup", LOGGER))
    assert answer.value is None and answer.failure == "lookup failed: cassandra unreachable"
