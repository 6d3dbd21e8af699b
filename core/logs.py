"""Logging of the command-line processes: readable on a terminal, one line per event in a file.

On a terminal, Rich's handler (colours, aligned columns, long messages wrapped to the width). Anywhere
else (a log file of ``userpulse demo``, a pipe, a container's output), a plain formatter: one line per
event with its time, level and logger, so that ``grep`` and log shippers see whole events.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


OUR_PACKAGES = frozenset(
    [
        "core",
        "stores",
        "ingestion",
        "speed_layer",
        "batch_layer",
        "serving",
        "privacy",
        "orchestration",
        "infra",
        "userpulse",
        "bench",
    ]
)


class LibraryTracebacksInOneLine(logging.Filter):
    """A library's logged exception becomes one line: its type and message after the event.

    The drivers log their own retries with a traceback (the Cassandra driver, for each failed connection
    attempt); the command that called them reports the failure itself, in one line. Our own packages keep
    their tracebacks: there, one means a defect worth reading."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.partition(".")[0] not in OUR_PACKAGES:
            error = record.exc_info[1]
            if error is not None:
                record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
                record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def log_handler(console: Console, show_time: bool = True) -> logging.Handler:
    """Rich's handler when ``console`` writes to a terminal, a one-line-per-event handler otherwise."""
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_time=show_time, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.addFilter(LibraryTracebacksInOneLine())
    return handler


def configure_logging(console: Console, packages: dict[str, str], show_time: bool = True) -> None:
    """Warnings and above from every library; ``packages`` (name -> level) log at their own level."""
    logging.basicConfig(level=logging.WARNING, handlers=[log_handler(console, show_time)], force=True)
    for package, level in packages.items():
        logging.getLogger(package).setLevel(level.upper())
