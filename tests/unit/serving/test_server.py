"""The dashboard's log carries what an operator must read, not the noise of closed browser tabs."""

from __future__ import annotations

import logging
import sys

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from serving.server import GoneBrowserFilter


def record(message: str, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = None
    if error is not None:
        try:
            raise error
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, exc_info)


def test_a_browser_that_went_away_is_not_logged() -> None:
    gone = GoneBrowserFilter()
    assert not gone.filter(record("Task exception was never retrieved", WebSocketClosedError()))
    assert not gone.filter(record("Future exception was never retrieved", StreamClosedError()))
    assert not gone.filter(record("Failed sending message as connection was closed"))


def test_everything_else_is_logged() -> None:
    gone = GoneBrowserFilter()
    assert gone.filter(record("Task exception was never retrieved", RuntimeError("a real bug")))
    assert gone.filter(record("dashboard part aggregates failed: NoHostAvailable"))
