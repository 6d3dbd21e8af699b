"""Where profiles come from: the interface every profile source implements, and argument checks.

A source returns raw user records in the randomuser.me 1.4 shape (credentials included, as the API
sends them); validation and data minimization happen once, in the producer, for every source alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from core.profile import Source
from core.schema import NATIONALITIES

MAX_RESULTS_PER_REQUEST = 5000
"""The API serves 1..5000 users per request and silently turns anything else into 1."""


class SourceUnavailableError(RuntimeError):
    """A source gave up after its retry budget; the message says what failed last and how often."""


class ProfileSource(Protocol):
    """Anything that yields batches of raw randomuser.me 1.4 user records."""

    name: Source
    api_version: str | None
    """The randomuser.me API version of the records' shape (``core.schema.API_VERSIONS``)."""

    def next_batch(self, count: int, nationalities: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """``count`` users (1..5000) of the given nationalities (any when empty)."""
        ...


def check_nationalities(codes: Iterable[str], required: bool = False) -> tuple[str, ...]:
    """Upper-cased nationality codes; ``ValueError`` naming the unknown ones (the API would silently
    ignore the whole filter), or when ``required`` and there are none (an empty filter means all)."""
    normalized = tuple(dict.fromkeys(code.strip().upper() for code in codes if code.strip()))
    if required and not normalized:
        raise ValueError("no nationality code given (e.g. US,FR)")
    unknown = [code for code in normalized if code not in NATIONALITIES]
    if unknown:
        raise ValueError(
            f"unknown nationality codes {unknown}; randomuser.me 1.4 knows {', '.join(NATIONALITIES)}"
        )
    return normalized


def check_batch_size(count: int) -> int:
    """``count`` if it is a valid per-request size, else ``ValueError`` (the API would send 1 user)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_RESULTS_PER_REQUEST:
        raise ValueError(f"results must be between 1 and {MAX_RESULTS_PER_REQUEST}, got {count}")
    return count
