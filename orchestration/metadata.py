"""How archive runs record what they consumed and appended in their materialization metadata (and the
sensors in their cursors): Kafka end offsets and ingestion days as short text."""

from __future__ import annotations

from datetime import date


def offsets_text(offsets: dict[int, int]) -> str:
    """``{0: 12, 1: 7}`` -> ``"0:12,1:7"`` (how end offsets are kept in metadata and sensor cursors)."""
    return ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))


def offsets_from_text(text: str) -> dict[int, int]:
    """The inverse of ``offsets_text``."""
    return {int(p): int(o) for p, o in (pair.split(":") for pair in text.split(",") if pair)}


def days_from_text(text: str) -> list[date]:
    """``"2026-11-22,2026-11-23"`` -> the dates (how appended days are kept in metadata)."""
    return [date.fromisoformat(day) for day in text.split(",") if day]
