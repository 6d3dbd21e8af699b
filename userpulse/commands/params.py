"""Checks of command-line values shared by the commands: a bad value is a usage error (exit 2) in one
line, never a traceback."""

from __future__ import annotations

import logging
import re
from datetime import date, datetime

import typer

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
"""Kafka's legal topic names."""


def log_level(value: str) -> str:
    """A logging level name, any case (typer callback)."""
    level = value.upper()
    if level not in LOG_LEVELS or not isinstance(logging.getLevelName(level), int):
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def topic_name(value: str | None) -> str | None:
    """A Kafka topic name: letters, digits, '.', '_' and '-', at most 249 (typer callback)."""
    if value is not None and (not _TOPIC_NAME.fullmatch(value) or value in (".", "..")):
        raise typer.BadParameter(f"{value!r} is not a Kafka topic name (letters, digits, '.', '_', '-')")
    return value


def utc_day(value: datetime | None) -> date | None:
    """The day of a ``--from``/``--since``-style option (typer parses ``%Y-%m-%d`` into a datetime)."""
    return value.date() if value is not None else None
