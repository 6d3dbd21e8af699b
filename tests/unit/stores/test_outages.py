"""Riding out outages: which errors are retried, and the one line the job stops with."""

from __future__ import annotations

import pytest
from cassandra import InvalidRequest, OperationTimedOut
from pymongo.errors import AutoReconnect, BulkWriteError

from core.settings import ReliabilitySettings, Settings
from core.streaming import failure_line
from stores.outages import StoreUnavailableError, first_line, ride_out

FAST = Settings(
    reliability=ReliabilitySettings(
        outage_tolerance_s=0.3, retry_initial_delay_s=0.01, retry_max_delay_s=0.02
    )
)


class Flaky:
    """Raises the given errors in turn, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_a_store_that_answers_again_within_the_tolerance_is_waited_for() -> None:
    work = Flaky(AutoReconnect("connection reset"), OperationTimedOut("no reply"))
    assert ride_out(work, "speed batch 3", "resumes", FAST) == "done"
    assert work.calls == 3


def test_past_the_tolerance_the_job_stops_with_one_line_naming_the_store() -> None:
    work = Flaky(*[AutoReconnect("timed out")] * 1000)
    with pytest.raises(StoreUnavailableError) as stopped:
        ride_out(work, "speed batch 3", "the job resumes from checkpoint /cp at that batch", FAST)
    message = str(stopped.value)
    assert message == (
        "MongoDB at 127.0.0.1:27017 did not answer for 0.3 s (AutoReconnect): speed batch 3 stopped; "
        "the job resumes from checkpoint /cp at that batch"
    )
    assert work.calls > 1


@pytest.mark.parametrize("error", [InvalidRequest("bad statement"), BulkWriteError({"writeErrors": []})])
def test_errors_that_are_not_outages_fail_at_once(error: Exception) -> None:
    work = Flaky(error)
    with pytest.raises(type(error)):
        ride_out(work, "speed batch 3", "resumes", FAST)
    assert work.calls == 1


def test_the_stop_line_is_found_in_sparks_wrapped_traceback() -> None:
    wrapped = RuntimeError(
        "An exception was raised by the Python Proxy.\nTraceback (most recent call last):\n  File ...\n"
        "stores.outages.StoreUnavailableError: Cassandra at h:9042 did not answer for 120 s "
        "(NoHostAvailable): speed batch 7 stopped; resumes\n\n\tat org.apache.spark..."
    )
    assert failure_line(wrapped) == (
        "Cassandra at h:9042 did not answer for 120 s (NoHostAvailable): speed batch 7 stopped; resumes"
    )
    assert failure_line(ValueError("other")) == "other"


def test_driver_messages_are_put_on_one_short_line() -> None:
    assert first_line(RuntimeError("a\n  b")) == "a b"
    assert len(first_line(RuntimeError("x" * 500))) == 200
