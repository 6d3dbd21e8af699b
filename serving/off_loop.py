"""Store reads from a page: off the event loop, within a deadline, and a sentence when they fail.

The event loop of a Panel server serves every session and every page load, so a page never reads a
store on it; a read that does not answer in time, or fails, leaves the page as it was and says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A read's value, or why there is none (``failure``, for the page)."""

    value: T | None = None
    failure: str | None = None


async def read_within(
    read: Callable[[], T], timeout_s: float, what: str, logger: logging.Logger
) -> Answer[T]:
    """Run ``read`` in a worker thread; its value, or ``failure`` saying it timed out or failed (the
    failure is logged with its traceback; a timeout is only reported, the store may just be slow)."""
    try:
        return Answer(value=await asyncio.wait_for(asyncio.to_thread(read), timeout=timeout_s))
    except TimeoutError:
        return Answer(failure=f"no answer from the stores within {timeout_s:.0f} s")
    except Exception as error:  # the page stays; the next attempt reads again
        logger.exception("%s failed", what)
        return Answer(failure=f"{what} failed: {error}")
