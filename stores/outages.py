"""Riding out store outages: a unit of idempotent work (a micro-batch) is retried whole, with backoff,
while a store does not answer; past the tolerance the job stops with one line that names the store.

Only errors that say "the store did not answer" are retried (connection refused or reset, timeouts, no
host available, not enough replicas). Anything else (a bad statement, a bulk write refused) is a bug or
bad data and fails at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from cassandra import OperationTimedOut, Timeout, Unavailable
from cassandra.cluster import NoHostAvailable
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from pymongo.errors import ConnectionFailure, ExecutionTimeout
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from core.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

MONGO_UNAVAILABLE: tuple[type[BaseException], ...] = (ConnectionFailure, ExecutionTimeout)
"""pymongo's errors of a server that cannot be reached or did not reply in time."""
CASSANDRA_UNAVAILABLE: tuple[type[BaseException], ...] = (
    NoHostAvailable,
    OperationTimedOut,
    Timeout,
    Unavailable,
)
"""The Cassandra driver's errors of nodes that cannot be reached, did not reply, or lack replicas."""
STORE_UNAVAILABLE = MONGO_UNAVAILABLE + CASSANDRA_UNAVAILABLE
KAFKA_UNAVAILABLE: tuple[type[BaseException], ...] = (
    KafkaConnectionError,
    KafkaTimeoutError,
)
"""kafka-python's errors of brokers that cannot be reached or did not answer in time."""


class StoreUnavailableError(RuntimeError):
    """A store did not answer for longer than the outage tolerance."""


def store_name(error: BaseException, settings: Settings) -> str:
    """The store an availability error came from, with its address (for the operator's one line)."""
    if isinstance(error, MONGO_UNAVAILABLE):
        return f"MongoDB at {settings.mongo.address}"
    if isinstance(error, KAFKA_UNAVAILABLE):
        return f"Kafka at {settings.kafka.bootstrap_servers}"
    cassandra = settings.cassandra
    return "Cassandra at " + ",".join(f"{node}:{cassandra.port}" for node in cassandra.nodes)


def unreachable_line(error: BaseException, settings: Settings) -> str:
    """One line for an operator when a service did not answer a command: which, where, and the cause."""
    return (
        f"{store_name(error, settings)} did not answer ({type(error).__name__}: {first_line(error)}); "
        "is it running? (`userpulse stack status`)"
    )


def first_line(error: BaseException) -> str:
    """An error's message on one line, shortened: drivers put whole host maps in theirs."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def ride_out(work: Callable[[], T], what: str, resume: str, settings: Settings) -> T:
    """Run ``work``; while it fails because a store does not answer, run it again after a growing pause,
    for up to ``reliability.outage_tolerance_s``. Then raise ``StoreUnavailableError`` saying which
    store, what was stopped (``what``) and where the job will resume (``resume``).

    ``work`` must be idempotent as a whole: it may have written part of its output before failing.
    """
    reliability = settings.reliability

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if error is not None:
            logger.warning(
                "%s does not answer (%s: %s): %s again in %.0f s",
                store_name(error, settings),
                type(error).__name__,
                first_line(error),
                what,
                state.next_action.sleep if state.next_action else 0,
            )

    retrying = Retrying(
        retry=retry_if_exception_type(STORE_UNAVAILABLE),
        stop=stop_after_delay(reliability.outage_tolerance_s),
        wait=wait_exponential(
            multiplier=reliability.retry_initial_delay_s,
            min=reliability.retry_initial_delay_s,
            max=reliability.retry_max_delay_s,
        ),
        before_sleep=log_retry,
    )
    try:
        return retrying(work)
    except RetryError as gave_up:
        error = gave_up.last_attempt.exception()
        assert error is not None
        raise StoreUnavailableError(
            f"{store_name(error, settings)} did not answer for {reliability.outage_tolerance_s:g} s "
            f"({type(error).__name__}): {what} stopped; {resume}"
        ) from error
