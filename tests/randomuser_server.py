"""A local stand-in for randomuser.me: a real HTTP server on 127.0.0.1 that answers from a script.

Each request gets the next scripted ``Reply`` (recorded real responses or failure modes) and is recorded
with its path and query, so tests assert on what the client sent. Requests beyond the script get the
``fallback`` reply, or a 410 that makes the client fail loudly when there is none.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "randomuser"
"""Recorded real randomuser.me responses (sources in its ``SOURCES.md``, shapes by version in
``VERSIONS.md``)."""

API_PATH = "/api/1.4/"

ERROR_FIXTURE = "raxden__android-random-user__error.json"


def fixture_bytes(name: str) -> bytes:
    """The bytes of a recorded response file."""
    return (FIXTURES_DIR / name).read_bytes()


def fixture_users(name: str) -> list[dict[str, Any]]:
    """The ``results`` of a recorded response file."""
    return json.loads(fixture_bytes(name))["results"]


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP response."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Wait this long before answering (to outlast the client's timeout)."""
    cut_after: int | None = None
    """Send only this many body bytes while announcing the full length, then close the connection."""

    @classmethod
    def fixture(
        cls, name: str, status: int = 200, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Reply:
        """A recorded response file served as is (JSON content type, plus ``headers``)."""
        return cls(status, fixture_bytes(name), _json_headers(headers), **kwargs)

    @classmethod
    def json(
        cls, value: Any, status: int = 200, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Reply:
        """A JSON body made from ``value`` (JSON content type, plus ``headers``)."""
        return cls(status, json.dumps(value).encode(), _json_headers(headers), **kwargs)


def _json_headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {"Content-Type": "application/json", **(extra or {})}


@dataclass(frozen=True)
class Request:
    """A request the server received."""

    path: str
    query: dict[str, str]
    """Each query parameter with its (last) value."""


class ScriptedServer:
    """A ThreadingHTTPServer on 127.0.0.1 (free port) answering from a script and recording requests."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.fallback: Reply | None = None
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, client_address: None  # clients hanging up is expected
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def base_url(self) -> str:
        """The API URL of this server (what ``RandomUserSettings.base_url`` should be)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{API_PATH}"

    def script(self, *replies: Reply) -> None:
        """Queue replies, served one per request in order."""
        with self._lock:
            self._script.extend(replies)

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases handlers still delaying a reply
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next_reply(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._script:
                return self._script.popleft()
        return self.fallback or Reply(410, b"unscripted request", {"Content-Type": "text/plain"})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {key: values[-1] for key, values in parse_qs(url.query).items()}
                reply = server._next_reply(Request(url.path, query))
                if reply.delay_s and server._stopping.wait(reply.delay_s):
                    return
                body = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client timed out and hung up: that is the point of a slow reply

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean; requests are recorded instead

        return Handler


@contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    """A started ``ScriptedServer``, stopped on exit."""
    server = ScriptedServer().start()
    try:
        yield server
    finally:
        server.stop()
