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


def log_handler(console: Console, show_time: bool = True) -> logging.Handler:
    """Rich's handler when ``console`` writes to a terminal, a one-line-per-event handler otherwise."""
    if console.is_terminal:
        return RichHandler(console=console, show_time=show_time, show_path=False, markup=False)
    handler = logging.StreamHandler(console.file)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    return handler


def configure_logging(console: Console, packages: dict[str, str], show_time: bool = True) -> None:
    """Warnings and above from every library; ``packages`` (name -> level) log at their own level."""
    logging.basicConfig(level=logging.WARNING, handlers=[log_handler(console, show_time)], force=True)
    for package, level in packages.items():
        logging.getLogger(package).setLevel(level.upper())
