"""The randomuser.me client and the profile source built on it.

The client checks its arguments (the API silently ignores bad ones), applies timeouts, retries transient
failures with exponential backoff and full jitter (tenacity), honours ``Retry-After``, stays under the
service's rate limit on its own side, and writes one log line per request attempt. When it gives up it
raises ``SourceUnavailableError`` saying how often it tried, for how long, and what failed last.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception, wait_random_exponential

from core.profile import Source
from core.schema import API_VERSIONS
from core.settings import RandomUserSettings
from ingestion.sources import SourceUnavailableError, check_batch_size, check_nationalities

logger = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = (
    "gender", "name", "location", "email", "login", "registered",
    "dob", "phone", "cell", "id", "picture", "nat",
)  # fmt: skip
"""Top-level user fields the API's ``inc``/``exc`` parameters accept."""

MAX_PAGE = 10_000
"""Highest page of a seed the API serves (it silently turns a higher one into page 1)."""

REQUEST_EVENT = "randomuser request"
"""Event name of the log line written for every request attempt."""

RATE_LIMIT_EVENT = "randomuser rate limit wait"
"""Event name of the log line written when the client-side rate limit makes a request wait."""

_BODY_SNIPPET_CHARS = 160

_MIN_TIMEOUT_S = 0.05
"""Shortest timeout an attempt gets when little of the retry budget is left."""

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class UserRateLimiter:
    """A sliding-window limit on users requested: at most ``limit_users`` in any ``window_s`` seconds."""

    def __init__(
        self, limit_users: int, window_s: float, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> None:
        if limit_users < 1 or window_s <= 0:
            raise ValueError(
                f"rate limit needs limit_users >= 1 and window_s > 0, got {limit_users}, {window_s}"
            )
        self.limit_users = limit_users
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._granted: deque[tuple[float, int]] = deque()  # (when, users), oldest first
        self._in_window = 0
        # Held while waiting, so that concurrent callers are served one after the other.
        self._lock = threading.Lock()

    def acquire(self, users: int) -> float:
        """Block until ``users`` more fit in the window, count them, and return the seconds waited."""
        if not 1 <= users <= self.limit_users:
            raise ValueError(f"cannot request {users} users under a limit of {self.limit_users} per window")
        waited = 0.0
        with self._lock:
            while True:
                now = self._clock()
                self._forget_before(now - self.window_s)
                if self._in_window + users <= self.limit_users:
                    self._granted.append((now, users))
                    self._in_window += users
                    return waited
                delay = self._seconds_until_fits(users, now)
                logger.info(
                    "%s waiting_s=%.3f users=%d in_window=%d limit=%d window_s=%g",
                    *(RATE_LIMIT_EVENT, delay, users, self._in_window, self.limit_users, self.window_s),
                    extra={
                        "event": RATE_LIMIT_EVENT,
                        "waiting_s": delay,
                        "users": users,
                        "in_window": self._in_window,
                        "limit": self.limit_users,
                        "window_s": self.window_s,
                    },
                )
                self._sleep(delay)
                waited += delay

    def _forget_before(self, horizon: float) -> None:
        while self._granted and self._granted[0][0] <= horizon:
            self._in_window -= self._granted.popleft()[1]

    def _seconds_until_fits(self, users: int, now: float) -> float:
        # The oldest grants leave the window first; wait until enough of them have left.
        remaining = self._in_window
        for when, granted in self._granted:
            remaining -= granted
            if remaining + users <= self.limit_users:
                return max(0.0, when + self.window_s - now)
        raise AssertionError("unreachable: an empty window fits any allowed request")


class _TransientResponseError(Exception):
    """A response that may be fine when asked again: 429, 5xx, an error body, a body without users."""

    def __init__(self, description: str, retry_after_s: float | None = None) -> None:
        super().__init__(description)
        self.retry_after_s = retry_after_s


class _RefusedRequestError(Exception):
    """A client error (4xx other than 429, 1xx, 3xx): asking again would get the same answer."""


def _is_retryable(error: BaseException) -> bool:
    """Whether a failed attempt is worth repeating (transient network trouble or a transient answer)."""
    if isinstance(error, _TransientResponseError | httpx.DecodingError):
        return True
    # UnsupportedProtocol is a bad base_url, not a network problem.
    return isinstance(error, httpx.TransportError) and not isinstance(error, httpx.UnsupportedProtocol)


def _describe(error: BaseException) -> str:
    """A one-line account of a failed attempt for logs and the give-up message."""
    if isinstance(error, _TransientResponseError | _RefusedRequestError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _snippet(response: httpx.Response) -> str:
    """The start of a response body on one line (error pages can be long HTML)."""
    text = " ".join(response.content[: _BODY_SNIPPET_CHARS * 4].decode("utf-8", "replace").split())
    return text[:_BODY_SNIPPET_CHARS] or "<empty body>"


def _parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or HTTP-date); None when absent or
    unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _users_in(response: httpx.Response) -> list[dict[str, Any]]:
    """The ``results`` of a response; a transient or refused-request error saying why there are none."""
    status = response.status_code
    if status == 429:
        raise _TransientResponseError(
            f"HTTP 429 (rate limited): {_snippet(response)}",
            retry_after_s=_parse_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500:
        raise _TransientResponseError(f"HTTP {status}: {_snippet(response)}")
    try:
        body: Any = json.loads(response.content)
        valid_json = True
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        body, valid_json = None, False
    if isinstance(body, dict) and "error" in body:
        # The API's documented error body; its status is undocumented, so it is retried at any status.
        raise _TransientResponseError(f"HTTP {status} error body: {body['error']}")
    if not 200 <= status < 300:
        raise _RefusedRequestError(f"HTTP {status}: {_snippet(response)}")
    if not valid_json:
        # Large responses have been seen cut short; the next attempt usually arrives whole.
        raise _TransientResponseError(
            f"HTTP {status} invalid JSON ({len(response.content)} bytes): {_snippet(response)}"
        )
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise _TransientResponseError(f"HTTP {status} body without a results list: {_snippet(response)}")
    if not results:
        # The API has served empty pages for weeks at a time: that is an outage, not "no users".
        raise _TransientResponseError(f"HTTP {status} with an empty results list")
    return results


_VERSIONED_PATH = re.compile(r"/api/(?P<version>[^/]+)/?$")


def api_version_of(base_url: str) -> str | None:
    """The API version of a base URL such as ``https://randomuser.me/api/1.3/`` (None for ``/api/``,
    the latest); ``ValueError`` for a version whose profiles the platform does not take."""
    match = _VERSIONED_PATH.search(httpx.URL(base_url).path)
    if match is None or match["version"] == "api":
        return None
    version = match["version"]
    if version not in API_VERSIONS:
        raise ValueError(
            f"randomuser.me API version {version!r} in {base_url} is not one the platform takes: "
            f"{', '.join(API_VERSIONS)}"
        )
    return version


def _checked_fields(kind: str, fields: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased, de-duplicated field names for ``inc``/``exc``; ``ValueError`` naming unknown ones."""
    normalized = tuple(dict.fromkeys(name.strip().lower() for name in fields if name.strip()))
    unknown = [name for name in normalized if name not in FIELDS]
    if unknown:
        raise ValueError(f"unknown {kind} fields {unknown}; randomuser.me 1.4 knows {', '.join(FIELDS)}")
    return normalized


def _request_params(
    results: int,
    nationalities: Iterable[str] = (),
    seed: str | None = None,
    page: int | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> dict[str, str]:
    """The query of one request, every argument checked (``ValueError``): the API would ignore bad ones."""
    if not isinstance(results, int) or isinstance(results, bool):
        raise ValueError(f"results must be an int, got {results!r}")  # the API turns 2.5 into 1
    params = {"results": str(check_batch_size(results))}
    nat = check_nationalities(nationalities)
    if nat:
        params["nat"] = ",".join(nat)
    if seed is not None:
        if not seed.strip():
            raise ValueError("seed must not be empty")
        params["seed"] = seed
    if page is not None:
        if not isinstance(page, int) or isinstance(page, bool) or not 1 <= page <= MAX_PAGE:
            raise ValueError(f"page must be an int between 1 and {MAX_PAGE}, got {page!r}")
        if seed is None:
            raise ValueError("page needs a seed: without one every page is random")
        params["page"] = str(page)
    inc = _checked_fields("include", include)
    if inc:
        params["inc"] = ",".join(inc)
    exc = _checked_fields("exclude", exclude)
    if exc:
        params["exc"] = ",".join(exc)
    return params


@dataclass
class _Call:
    """The state of one ``fetch_users`` call across its attempts."""

    params: dict[str, str]
    settings: RandomUserSettings
    clock: Clock
    started: float
    attempts: int = 0
    rate_limit_wait_s: float = 0.0
    last_failure: str = ""
    stop_reason: str = ""

    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def budget_left_s(self) -> float:
        # Waiting for our own rate limit is pacing, not failure: it does not spend the retry budget.
        return self.settings.retry_budget_s - (self.elapsed_s() - self.rate_limit_wait_s)

    def attempt_timeout(self) -> httpx.Timeout:
        """The timeout of the next attempt: ``timeout_s``, shortened so the attempt ends within the budget."""
        return httpx.Timeout(max(_MIN_TIMEOUT_S, min(self.settings.timeout_s, self.budget_left_s())))

    def should_stop(self, retry_state: RetryCallState) -> bool:
        """Tenacity stop (run after the wait is chosen): attempts used up, or no budget left after it."""
        max_attempts = self.settings.max_attempts
        if retry_state.attempt_number >= max_attempts:
            self.stop_reason = f"max_attempts={max_attempts} reached"
            return True
        budget = self.settings.retry_budget_s
        budget_left = self.budget_left_s()
        if budget_left <= 0:
            self.stop_reason = f"retry budget of {budget:g} s spent"
            return True
        retry_after = _retry_after_of(retry_state)
        if retry_after is not None and retry_after >= budget_left:
            # Asking again before the service allows would only be refused again: give up now, not later.
            self.stop_reason = (
                f"Retry-After of {retry_after:g} s exceeds the {budget_left:.2f} s left of the retry budget "
                f"of {budget:g} s"
            )
            return True
        if retry_state.upcoming_sleep >= budget_left:
            # Sleeping to the very end of the budget would leave no time for the attempt itself.
            self.stop_reason = (
                f"retry budget of {budget:g} s spent: {budget_left:.2f} s left, "
                f"less than the next wait of {retry_state.upcoming_sleep:.2f} s"
            )
            return True
        return False

    def wait_s(self, retry_state: RetryCallState) -> float:
        """Tenacity wait: exponential backoff with full jitter, and at least the ``Retry-After`` asked for."""
        backoff = wait_random_exponential(
            multiplier=self.settings.backoff_initial_s, max=self.settings.backoff_max_s
        )(retry_state)
        return max(backoff, _retry_after_of(retry_state) or 0.0)

    def give_up_message(self, reason: str) -> str:
        waited = f", {self.rate_limit_wait_s:.2f} s of it rate-limited" if self.rate_limit_wait_s else ""
        return (
            f"randomuser.me unavailable: gave up after {self.attempts} attempt(s) in "
            f"{self.elapsed_s():.2f} s{waited} ({reason}); last failure: {self.last_failure}"
        )


def _retry_after_of(retry_state: RetryCallState) -> float | None:
    """The ``Retry-After`` of the failure that ended the last attempt, if it had one."""
    error = retry_state.outcome.exception() if retry_state.outcome else None
    return error.retry_after_s if isinstance(error, _TransientResponseError) else None


class RandomUserClient:
    """An HTTP client of the randomuser.me 1.4 API that returns raw user records (credentials included)."""

    def __init__(
        self,
        settings: RandomUserSettings,
        http: httpx.Client | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        rate_limiter: UserRateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.api_version = api_version_of(settings.base_url)
        """The API version the base URL asks for (None when it asks for the latest)."""
        self._owns_http = http is None
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(settings.timeout_s),
            follow_redirects=True,
            headers={"User-Agent": "userpulse-ingestion"},
        )
        self._clock = clock
        self._sleep = sleep
        self._rate_limiter = rate_limiter or UserRateLimiter(
            settings.rate_limit_users, settings.rate_limit_window_s, clock=clock, sleep=sleep
        )

    def fetch_users(
        self,
        results: int,
        nationalities: tuple[str, ...] = (),
        seed: str | None = None,
        page: int | None = None,
        include: tuple[str, ...] = (),
        exclude: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        """``results`` raw user records (1..5000), retried until they arrive or the client gives up.

        ``ValueError`` for bad arguments (no request is sent); ``SourceUnavailableError`` when attempts or
        the retry budget run out, or the service refuses the request (a 4xx other than 429).
        """
        params = _request_params(results, nationalities, seed, page, include, exclude)
        call = _Call(params=params, settings=self.settings, clock=self._clock, started=self._clock())
        retrying = Retrying(
            retry=retry_if_exception(_is_retryable),
            stop=call.should_stop,
            wait=call.wait_s,
            sleep=self._sleep,
            before_sleep=self._log_backoff,
        )
        try:
            return retrying(self._attempt, call)
        except RetryError as error:
            message = call.give_up_message(call.stop_reason)
            raise SourceUnavailableError(message) from error.last_attempt.exception()
        except (_RefusedRequestError, httpx.HTTPError) as error:
            message = call.give_up_message("not retried: the service refuses this request")
            raise SourceUnavailableError(message) from error

    def _attempt(self, call: _Call) -> list[dict[str, Any]]:
        """One request: wait for the rate limit, GET, check the answer, log one line."""
        call.rate_limit_wait_s += self._rate_limiter.acquire(int(call.params["results"]))
        call.attempts += 1
        status: int | None = None
        started = time.perf_counter()  # latency is a real-time measurement whatever clock is injected
        try:
            response = self._http.get(
                self.settings.base_url, params=call.params, timeout=call.attempt_timeout()
            )
            status = response.status_code
            users = _users_in(response)
        except (_TransientResponseError, _RefusedRequestError, httpx.HTTPError) as error:
            call.last_failure = _describe(error)
            outcome = "retryable" if _is_retryable(error) else "not_retryable"
            self._log_attempt(call, status, started, 0, outcome, call.last_failure, logging.WARNING)
            raise
        self._log_attempt(call, status, started, len(users), "ok", None, logging.INFO)
        return users

    def _log_attempt(
        self,
        call: _Call,
        status: int | None,
        started: float,
        users: int,
        outcome: str,
        error: str | None,
        level: int,
    ) -> None:
        latency_ms = round((time.perf_counter() - started) * 1000)
        fields = {
            "event": REQUEST_EVENT,
            "status": status,
            "latency_ms": latency_ms,
            "users": users,
            "attempt": call.attempts,
            "outcome": outcome,
            "error": error,
            "requested": int(call.params["results"]),
            "page": int(call.params["page"]) if "page" in call.params else None,
        }
        message = "%s status=%s latency_ms=%d users=%d attempt=%d outcome=%s requested=%d"
        args: list[object] = [REQUEST_EVENT, status if status is not None else "-", latency_ms, users]
        args += [call.attempts, outcome, fields["requested"]]
        if error is not None:
            message += " error=%r"
            args.append(error)
        logger.log(level, message, *args, extra=fields)

    @staticmethod
    def _log_backoff(retry_state: RetryCallState) -> None:
        logger.debug(
            "randomuser backoff sleep_s=%.3f after attempt=%d",
            retry_state.upcoming_sleep,
            retry_state.attempt_number,
            extra={"event": "randomuser backoff", "sleep_s": retry_state.upcoming_sleep},
        )

    def close(self) -> None:
        """Release the connection pool (only when this client created it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> RandomUserClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class RandomUserSource:
    """Profiles from randomuser.me: successive stable pages of one seed, or random users without a seed."""

    name: Source = "randomuser"

    def __init__(self, client: RandomUserClient, seed: str | None = None, *, start_page: int = 1) -> None:
        if seed is not None and not seed.strip():
            raise ValueError("seed must not be empty")
        if not 1 <= start_page <= MAX_PAGE:
            raise ValueError(f"start_page must be between 1 and {MAX_PAGE}, got {start_page}")
        self._client = client
        self.api_version = client.api_version
        self.seed = seed
        self.next_page = start_page
        """The page of ``seed`` the next batch comes from (a failed batch does not advance it)."""

    def next_batch(self, count: int, nationalities: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """``count`` users (1..5000) of the given nationalities (any when empty)."""
        if self.seed is None:
            return self._client.fetch_users(count, nationalities)
        if self.next_page > MAX_PAGE:
            # Page 10001 would silently be page 1 again: say so instead of replaying old users.
            raise SourceUnavailableError(f"seed {self.seed!r} has served all {MAX_PAGE} pages")
        users = self._client.fetch_users(count, nationalities, seed=self.seed, page=self.next_page)
        self.next_page += 1
        return users
