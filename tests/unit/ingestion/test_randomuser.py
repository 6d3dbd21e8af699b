"""The randomuser.me client against a real local HTTP server replaying recorded responses and failures."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from core.settings import RandomUserSettings
from ingestion.randomuser import (
    MAX_PAGE,
    RATE_LIMIT_EVENT,
    REQUEST_EVENT,
    RandomUserClient,
    RandomUserSource,
    UserRateLimiter,
)
from ingestion.sources import ProfileSource, SourceUnavailableError
from tests.randomuser_server import (
    ERROR_FIXTURE,
    Reply,
    ScriptedServer,
    fixture_bytes,
    fixture_users,
    scripted_server,
)

MANY = "codeacademyuz__randomuser_me_project__randomusers.json"  # 111 users, all nationalities
ONE = "gargi17692__shell__randomuser.json"  # 1 user


class FakeTime:
    """A clock that only moves when something sleeps on it; sleeps are recorded, never waited."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as running:
        yield running


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def settings_for(base_url: str, **overrides: Any) -> RandomUserSettings:
    values: dict[str, Any] = {
        "base_url": base_url,
        "timeout_s": 1.0,
        "max_attempts": 4,
        "retry_budget_s": 10.0,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    return RandomUserSettings(**(values | overrides))


@pytest.fixture
def make_client(server: ScriptedServer, fake_time: FakeTime) -> Iterator[Callable[..., RandomUserClient]]:
    """Clients of the local server with tiny backoffs and the fake clock; closed after the test."""
    clients: list[RandomUserClient] = []

    def make(**overrides: Any) -> RandomUserClient:
        settings = settings_for(server.base_url, **overrides)
        client = RandomUserClient(settings, clock=fake_time.clock, sleep=fake_time.sleep)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def request_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ingestion.randomuser" and r.event == REQUEST_EVENT]


# --- success and the query sent ---------------------------------------------------------------------


def test_returns_the_recorded_users_as_sent(server: ScriptedServer, make_client) -> None:
    server.script(Reply.fixture(MANY))

    users = make_client().fetch_users(111)

    assert users == fixture_users(MANY)
    assert len(users) == 111
    assert users[0]["login"]["sha256"]  # raw: credentials are stripped later, by the producer
    assert [(r.path, r.query) for r in server.requests] == [("/api/1.4/", {"results": "111"})]


def test_sends_every_checked_parameter(server: ScriptedServer, make_client) -> None:
    server.script(Reply.fixture(ONE))

    make_client().fetch_users(
        5,
        nationalities=("us", " gb", "US"),
        seed="abc",
        page=7,
        include=("name", "LOGIN", "nat"),
        exclude=("picture",),
    )

    assert server.requests[0].query == {
        "results": "5",
        "nat": "US,GB",
        "seed": "abc",
        "page": "7",
        "inc": "name,login,nat",
        "exc": "picture",
    }  # and no noinfo: the info block is wanted


@pytest.mark.parametrize(
    "kwargs",
    [
        {"results": 0},
        {"results": 5001},
        {"results": 2.5},
        {"results": 10, "nationalities": ("US", "XX")},
        {"results": 10, "seed": "s", "page": 0},
        {"results": 10, "seed": "s", "page": MAX_PAGE + 1},
        {"results": 10, "page": 2},  # a page without a seed is random anyway
        {"results": 10, "seed": " "},
        {"results": 10, "include": ("name", "password")},
        {"results": 10, "exclude": ("age",)},
    ],
    ids=lambda kwargs: ",".join(f"{k}={v}" for k, v in kwargs.items()),
)
def test_bad_arguments_raise_before_any_request(server: ScriptedServer, make_client, kwargs) -> None:
    with pytest.raises(ValueError):
        make_client().fetch_users(**kwargs)

    assert server.requests == []


# --- transient failures are retried -----------------------------------------------------------------

TRUNCATED = fixture_bytes(ONE)[:700]
FAILURES = {
    "500": Reply(500, b"Internal Server Error"),
    "502 cloudflare": Reply(502, b"<html><body><h1>502 Bad Gateway</h1>cloudflare</body></html>"),
    "503": Reply(503, b"Service Not Available"),
    "504": Reply(504, b"Gateway Timeout"),
    "429": Reply.fixture(ERROR_FIXTURE, status=429, headers={"Retry-After": "0"}),
    "error body 200": Reply.fixture(ERROR_FIXTURE),
    "error body 500": Reply.fixture(ERROR_FIXTURE, status=500),
    "error body 400": Reply.fixture(ERROR_FIXTURE, status=400),
    "truncated json": Reply(200, TRUNCATED, {"Content-Type": "application/json"}),
    "connection cut mid-body": Reply.fixture(ONE, cut_after=300),
    "html instead of json": Reply(200, b"<html>maintenance</html>", {"Content-Type": "text/html"}),
    "empty results": Reply.json({"results": [], "info": {"seed": "x", "results": 0, "page": 1}}),
    "no results key": Reply.json({"info": {"seed": "x", "results": 1, "page": 1, "version": "1.4"}}),
    "results not a list": Reply.json({"results": {"gender": "male"}}),
    "slow past the timeout": Reply.fixture(ONE, delay_s=1.0),
}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_a_transient_failure_is_retried_then_succeeds(
    server: ScriptedServer, make_client, fake_time: FakeTime, failure: Reply
) -> None:
    server.script(failure, Reply.fixture(ONE))
    client = make_client(timeout_s=0.3)

    started = time.perf_counter()
    users = client.fetch_users(1)

    assert users == fixture_users(ONE)
    assert len(server.requests) == 2
    assert server.requests[0].query == server.requests[1].query
    assert len(fake_time.sleeps) == 1
    assert time.perf_counter() - started < 1.0  # the slow reply is abandoned after the 0.3 s timeout


def test_connection_errors_are_retried_then_reported(fake_time: FakeTime) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_for(f"http://127.0.0.1:{port}/api/1.4/", max_attempts=3)

    client = RandomUserClient(settings, clock=fake_time.clock, sleep=fake_time.sleep)
    with client, pytest.raises(SourceUnavailableError, match=r"3 attempt\(s\).*last failure: ConnectError"):
        client.fetch_users(10)

    assert len(fake_time.sleeps) == 2


# --- giving up --------------------------------------------------------------------------------------


def test_gives_up_after_max_attempts_naming_the_last_failure(
    server: ScriptedServer, make_client, fake_time: FakeTime
) -> None:
    server.script(Reply(503, b"Service Not Available"), Reply(502, b"Bad Gateway"), Reply(500, b"boom"))

    with pytest.raises(SourceUnavailableError) as raised:
        make_client(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.015).fetch_users(10)

    message = str(raised.value)
    assert "gave up after 3 attempt(s)" in message
    assert "max_attempts=3 reached" in message
    assert message.endswith("last failure: HTTP 500: boom")
    assert re.search(r"in \d+\.\d\d s", message)
    assert len(server.requests) == 3
    # Full jitter: each delay is drawn from [0, initial * 2**n], capped by backoff_max_s.
    assert len(fake_time.sleeps) == 2
    assert 0 <= fake_time.sleeps[0] <= 0.01
    assert 0 <= fake_time.sleeps[1] <= 0.015


def test_the_retry_budget_stops_before_max_attempts(server: ScriptedServer) -> None:
    server.fallback = Reply(503, b"Service Not Available")
    settings = settings_for(
        server.base_url, max_attempts=1000, retry_budget_s=0.25, backoff_initial_s=0.05, backoff_max_s=0.05
    )

    started = time.monotonic()
    with RandomUserClient(settings) as client, pytest.raises(SourceUnavailableError) as raised:
        client.fetch_users(10)
    elapsed = time.monotonic() - started

    assert "retry budget of 0.25 s spent" in str(raised.value)
    assert "last failure: HTTP 503" in str(raised.value)
    assert 2 <= len(server.requests) < 100
    assert 0.2 <= elapsed < 1.0  # it stops once the next wait (<= 0.05 s) would not fit in the budget


def test_the_retry_budget_also_bounds_a_slow_service(server: ScriptedServer) -> None:
    server.fallback = Reply.fixture(ONE, delay_s=1.5)
    settings = settings_for(server.base_url, timeout_s=5.0, retry_budget_s=0.4, max_attempts=10)

    started = time.monotonic()
    with RandomUserClient(settings) as client, pytest.raises(SourceUnavailableError) as raised:
        client.fetch_users(1)

    assert "last failure: ReadTimeout" in str(raised.value)
    assert time.monotonic() - started < 0.9  # not the 5 s timeout: attempts end within the budget


def test_a_client_error_fails_at_once(server: ScriptedServer, make_client, fake_time: FakeTime) -> None:
    server.script(Reply(404, b"Not Found", {"Content-Type": "text/plain"}), Reply.fixture(ONE))

    with pytest.raises(SourceUnavailableError) as raised:
        make_client().fetch_users(10)

    assert "1 attempt(s)" in str(raised.value)
    assert "not retried" in str(raised.value)
    assert "last failure: HTTP 404: Not Found" in str(raised.value)
    assert len(server.requests) == 1
    assert fake_time.sleeps == []


# --- Retry-After ------------------------------------------------------------------------------------


def test_retry_after_is_honoured(server: ScriptedServer, make_client, fake_time: FakeTime) -> None:
    server.script(Reply.fixture(ERROR_FIXTURE, status=429, headers={"Retry-After": "3"}), Reply.fixture(ONE))

    users = make_client(retry_budget_s=10.0, backoff_max_s=0.05).fetch_users(1)

    assert users == fixture_users(ONE)
    assert fake_time.sleeps == [3.0]  # the server's wait, not the (much shorter) backoff


def test_retry_after_as_an_http_date_is_honoured(
    server: ScriptedServer, make_client, fake_time: FakeTime
) -> None:
    retry_at = formatdate(time.time() + 4, usegmt=True)  # whole seconds: between 3 and 4 s from now
    server.script(Reply(429, b"slow down", {"Retry-After": retry_at}), Reply.fixture(ONE))

    make_client().fetch_users(1)

    assert len(fake_time.sleeps) == 1
    assert 2.5 < fake_time.sleeps[0] <= 4.0


def test_an_unreadable_retry_after_falls_back_to_backoff(
    server: ScriptedServer, make_client, fake_time: FakeTime
) -> None:
    server.script(Reply(429, b"slow down", {"Retry-After": "soon"}), Reply.fixture(ONE))

    make_client(backoff_initial_s=0.01).fetch_users(1)

    assert len(fake_time.sleeps) == 1
    assert 0 <= fake_time.sleeps[0] <= 0.01


def test_a_retry_after_beyond_the_budget_gives_up_without_waiting(
    server: ScriptedServer, make_client, fake_time: FakeTime
) -> None:
    server.script(Reply.fixture(ERROR_FIXTURE, status=429, headers={"Retry-After": "300"}))

    with pytest.raises(SourceUnavailableError) as raised:
        make_client(retry_budget_s=10.0).fetch_users(10)

    assert "Retry-After of 300 s exceeds" in str(raised.value)
    assert "last failure: HTTP 429 (rate limited)" in str(raised.value)
    assert "Uh oh, something has gone wrong" in str(raised.value)  # the error body's own words
    assert len(server.requests) == 1
    assert fake_time.sleeps == []


def test_the_budget_counts_waits_on_the_fake_clock(
    server: ScriptedServer, make_client, fake_time: FakeTime
) -> None:
    wait_2s = Reply(429, b"slow down", {"Retry-After": "2"})
    server.script(wait_2s, wait_2s, wait_2s, Reply.fixture(ONE))

    with pytest.raises(SourceUnavailableError) as raised:
        make_client(max_attempts=10, retry_budget_s=5.0).fetch_users(1)

    # t=0 fails, sleeps 2; t=2 fails, sleeps 2; t=4 fails and 1 s of budget is left: less than 2 s.
    assert fake_time.sleeps == [2.0, 2.0]
    assert len(server.requests) == 3
    assert "Retry-After of 2 s exceeds the 1.00 s left" in str(raised.value)


# --- logging ----------------------------------------------------------------------------------------


def test_one_structured_log_line_per_attempt(
    server: ScriptedServer, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingestion.randomuser")
    server.script(Reply(503, b"Service Not Available"), Reply.fixture(MANY))

    make_client().fetch_users(111)

    failed, succeeded = request_records(caplog)
    assert (failed.levelno, failed.status, failed.attempt, failed.users, failed.outcome) == (
        logging.WARNING, 503, 1, 0, "retryable",
    )  # fmt: skip
    assert "status=503" in failed.getMessage()
    assert "attempt=1" in failed.getMessage()
    assert "error='HTTP 503: Service Not Available'" in failed.getMessage()
    assert (succeeded.levelno, succeeded.status, succeeded.attempt, succeeded.users) == (
        logging.INFO,
        200,
        2,
        111,
    )
    assert isinstance(succeeded.latency_ms, int)
    assert re.search(r"status=200 latency_ms=\d+ users=111 attempt=2 outcome=ok", succeeded.getMessage())


def test_every_attempt_is_logged_when_giving_up(
    server: ScriptedServer, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingestion.randomuser")
    server.fallback = Reply(502, b"Bad Gateway")

    with pytest.raises(SourceUnavailableError):
        make_client(max_attempts=3).fetch_users(10)

    records = request_records(caplog)
    assert [(r.attempt, r.status, r.outcome) for r in records] == [(n, 502, "retryable") for n in (1, 2, 3)]


def test_a_transport_error_is_logged_without_a_status(
    server: ScriptedServer, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingestion.randomuser")
    server.script(Reply.fixture(ONE, delay_s=1.0), Reply.fixture(ONE))

    make_client(timeout_s=0.2).fetch_users(1)

    timed_out = request_records(caplog)[0]
    assert timed_out.status is None
    assert "status=- " in timed_out.getMessage()
    assert "ReadTimeout" in timed_out.error


# --- rate limit -------------------------------------------------------------------------------------


def test_the_rate_limiter_does_not_wait_under_the_limit(fake_time: FakeTime) -> None:
    limiter = UserRateLimiter(100, 10.0, clock=fake_time.clock, sleep=fake_time.sleep)

    waits = [limiter.acquire(25) for _ in range(4)]

    assert waits == [0.0] * 4
    assert fake_time.sleeps == []


def test_the_rate_limiter_waits_until_the_oldest_users_leave_the_window(
    fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingestion.randomuser")
    limiter = UserRateLimiter(100, 10.0, clock=fake_time.clock, sleep=fake_time.sleep)
    start = fake_time.now

    limiter.acquire(60)  # t=0
    fake_time.now = start + 3
    limiter.acquire(30)  # t=3: 90 in the window
    fake_time.now = start + 5
    assert limiter.acquire(20) == 5.0  # 110 > 100: wait until the 60 of t=0 leave, at t=10
    assert fake_time.now == start + 10
    assert limiter.acquire(60) == 3.0  # 30 + 20 + 60 > 100: wait until the 30 of t=3 leave, at t=13
    assert fake_time.sleeps == [5.0, 3.0]
    waits = [r for r in caplog.records if r.event == RATE_LIMIT_EVENT]
    assert [r.waiting_s for r in waits] == [5.0, 3.0]
    assert "waiting_s=5.000" in waits[0].getMessage()


def test_the_rate_limiter_refuses_a_request_larger_than_the_limit(fake_time: FakeTime) -> None:
    limiter = UserRateLimiter(100, 10.0, clock=fake_time.clock, sleep=fake_time.sleep)

    with pytest.raises(ValueError, match="101 users"):
        limiter.acquire(101)


def test_the_client_sends_at_once_while_under_the_rate_limit(
    server: ScriptedServer, make_client, fake_time: FakeTime
) -> None:
    server.fallback = Reply.fixture(ONE)
    client = make_client(rate_limit_users=10, rate_limit_window_s=60.0)

    client.fetch_users(6)
    client.fetch_users(4)

    assert fake_time.sleeps == []
    assert len(server.requests) == 2


def test_the_client_waits_for_the_window_then_still_retries(
    server: ScriptedServer, make_client, fake_time: FakeTime
) -> None:
    server.script(Reply.fixture(ONE), Reply(503, b"Service Not Available"), Reply.fixture(ONE))
    client = make_client(rate_limit_users=10, rate_limit_window_s=60.0, retry_budget_s=5.0, max_attempts=3)

    client.fetch_users(6)
    users = client.fetch_users(6)  # 6 + 6 > 10: waits 60 s for the first 6 to leave the window

    # Every attempt asks for its users again, so the retry after the 503 waits for the window too:
    # 60 s, a backoff b, then 60 - b. Two minutes of pacing did not spend the 5 s retry budget.
    assert users == fixture_users(ONE)
    assert len(server.requests) == 3
    pacing, backoff, pacing_again = fake_time.sleeps
    assert pacing == 60.0
    assert 0 <= backoff <= 0.01
    assert backoff + pacing_again == pytest.approx(60.0)


# --- the profile source -----------------------------------------------------------------------------


def test_a_seeded_source_walks_the_pages_of_its_seed(server: ScriptedServer, make_client) -> None:
    server.fallback = Reply.fixture(ONE)
    source: ProfileSource = RandomUserSource(make_client(), seed="userpulse")

    batches = [source.next_batch(50, ("de", "FR")) for _ in range(3)]

    assert source.name == "randomuser"
    assert batches == [fixture_users(ONE)] * 3
    assert [r.query for r in server.requests] == [
        {"results": "50", "nat": "DE,FR", "seed": "userpulse", "page": str(page)} for page in (1, 2, 3)
    ]


def test_a_failed_batch_does_not_advance_the_page(server: ScriptedServer, make_client) -> None:
    server.script(Reply.fixture(ONE), Reply(404, b"Not Found"), Reply.fixture(ONE))
    source = RandomUserSource(make_client(), seed="userpulse")

    source.next_batch(10)
    with pytest.raises(SourceUnavailableError):
        source.next_batch(10)
    source.next_batch(10)

    assert [r.query["page"] for r in server.requests] == ["1", "2", "2"]


def test_an_unseeded_source_asks_for_random_users(server: ScriptedServer, make_client) -> None:
    server.fallback = Reply.fixture(ONE)
    source = RandomUserSource(make_client())

    source.next_batch(10)
    source.next_batch(10, ("US",))

    assert [r.query for r in server.requests] == [{"results": "10"}, {"results": "10", "nat": "US"}]


def test_a_seeded_source_stops_after_the_last_page(server: ScriptedServer, make_client) -> None:
    server.fallback = Reply.fixture(ONE)
    source = RandomUserSource(make_client(), seed="userpulse", start_page=MAX_PAGE)

    source.next_batch(10)
    with pytest.raises(SourceUnavailableError, match="all 10000 pages"):
        source.next_batch(10)

    assert [r.query["page"] for r in server.requests] == [str(MAX_PAGE)]


# --- lifecycle --------------------------------------------------------------------------------------


def test_close_releases_only_a_connection_pool_the_client_created(server: ScriptedServer) -> None:
    settings = settings_for(server.base_url)
    shared = httpx.Client()

    with RandomUserClient(settings, http=shared):
        pass
    with RandomUserClient(settings) as owning:
        pass

    assert not shared.is_closed
    assert owning._http.is_closed
    shared.close()
