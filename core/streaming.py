"""Running Structured Streaming queries from the Kafka source, shared by the speed and batch layers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from kafka import KafkaAdminClient
from pyspark.errors import StreamingQueryException
from pyspark.sql.streaming import StreamingQuery

from core.settings import KafkaSettings

logger = logging.getLogger(__name__)

MAX_REPLAY_RESTARTS = 3
"""Restarts allowed after SPARK-55271 (see ``is_replay_metrics_failure``); each follows a committed batch."""


def failure_line(error: BaseException) -> str:
    """What to tell the operator about a failed query: the store outage's own line when a micro-batch
    gave up on a store (Spark wraps it in the Python traceback of the batch function), else the error."""
    text = str(error)
    marker = "StoreUnavailableError: "
    if marker in text:
        return text.split(marker, 1)[1].splitlines()[0]
    return text


def is_replay_metrics_failure(error: BaseException) -> bool:
    """Whether a query died of SPARK-55271 (Spark 4.1.1): after a restart that replays an uncommitted
    batch, the Kafka source's progress metrics throw a NullPointerException.

    It is thrown while reporting progress, after the batch's writes and its commit-log entry, so
    restarting the query loses and repeats nothing. Fixed upstream (apache/spark#58133), not in 4.1.1.
    """
    texts = []
    current: BaseException | None = error
    while current is not None and len(texts) < 10:  # the JVM stack of the cause names the source
        texts += [str(current), str(getattr(current, "_stackTrace", ""))]
        current = getattr(current, "_cause", None)
    text = "\n".join(texts)
    return '"scala.Option.get()" is null' in text and "KafkaMicroBatchStream" in text


def run_until_consumed(
    start: Callable[[], StreamingQuery], timeout_s: float = 3600.0
) -> list[StreamingQuery]:
    """Run an ``availableNow`` query (started by ``start``) to its end; returns the query runs.

    Restarts it after SPARK-55271 (at most ``MAX_REPLAY_RESTARTS`` times); any other failure, or not
    finishing within ``timeout_s``, raises.
    """
    runs: list[StreamingQuery] = []
    error: BaseException | None = None
    for _ in range(MAX_REPLAY_RESTARTS + 1):
        query = start()
        runs.append(query)
        with contextlib.suppress(StreamingQueryException):  # the same error is examined below
            query.awaitTermination(timeout_s)
        error = query.exception()
        if error is None:
            if query.isActive:
                query.stop()
                raise TimeoutError(f"query {query.name} did not finish within {timeout_s:.0f} s")
            return runs
        if not is_replay_metrics_failure(error):
            raise error
        logger.warning("restarting query %s after SPARK-55271 on a replayed, committed batch", query.name)
    assert error is not None
    raise error


class MissingTopicError(RuntimeError):
    """The topic a streaming job should read does not exist (Spark would retry it without end)."""


def require_topic(kafka: KafkaSettings, topic: str) -> None:
    """Raise ``MissingTopicError`` with the fix when ``topic`` does not exist."""
    admin = KafkaAdminClient(**kafka.client_options(), client_id="userpulse-topic-check")
    try:
        exists = topic in set(admin.list_topics())
    finally:
        admin.close()
    if not exists:
        raise MissingTopicError(
            f"Kafka topic {topic!r} does not exist on {kafka.bootstrap_servers}: "
            "produce to it first (`userpulse produce`), which creates it"
        )
