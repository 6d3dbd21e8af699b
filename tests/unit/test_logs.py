"""Command-line logs: Rich on a terminal, one line per event anywhere else (log files, pipes)."""

from __future__ import annotations

import io
import logging

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
