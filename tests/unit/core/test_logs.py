"""Command-line logs: Rich on a terminal, one line per event anywhere else (log files, pipes)."""

from __future__ import annotations

import io
import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

from core.logs import log_handler


def test_a_log_file_gets_one_line_per_event_however_long() -> None:
    output = io.StringIO()
    handler = log_handler(Console(file=output, width=80))
    message = "batch 12: " + "x" * 200
    handler.handle(logging.LogRecord("speed_layer.job", logging.INFO, __file__, 1, message, None, None))

    lines = output.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(f"INFO speed_layer.job: {message}")


def test_a_terminal_gets_rich() -> None:
    assert isinstance(log_handler(Console(file=io.StringIO(), force_terminal=True)), RichHandler)


def _failed_connection() -> tuple[type[BaseException], BaseException, object]:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError:
        info = sys.exc_info()
    assert info[0] is not None and info[1] is not None
    return info[0], info[1], info[2]


def test_a_library_exception_is_one_line_with_its_type_and_message() -> None:
    output = io.StringIO()
    handler = log_handler(Console(file=output, width=80))
    record = logging.LogRecord(
        "cassandra.cluster", logging.WARNING, __file__, 1, "Error connecting to %s:", ("127.0.0.1:1",), None
    )
    record.exc_info = _failed_connection()
    handler.handle(record)

    [line] = output.getvalue().splitlines()
    assert "Traceback" not in line
    refused = "(ConnectionRefusedError: [Errno 111] Connection refused)"
    assert line.endswith(f"Error connecting to 127.0.0.1:1: {refused}")


def test_our_own_exceptions_keep_their_traceback() -> None:
    output = io.StringIO()
    handler = log_handler(Console(file=output, width=80))
    record = logging.LogRecord("speed_layer.job", logging.ERROR, __file__, 1, "batch failed", None, None)
    record.exc_info = _failed_connection()
    handler.handle(record)

    assert "Traceback (most recent call last)" in output.getvalue()
