"""``userpulse register``: render the register of processing (``privacy/register.py``) as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from privacy.register import REGISTER_PATH, is_stale, write_register

console = Console(stderr=True)


def register(
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 if the file is stale (for CI)."),
    ] = False,
    path: Annotated[Path, typer.Option(help="Where the register is written.")] = REGISTER_PATH,
) -> None:
    """Write the register of processing (GDPR art. 30) to docs/register.md, or check it is current."""
    if check:
        if is_stale(path):
            console.print(f"[red]{path} is stale:[/red] run `userpulse register` and commit the result")
            raise typer.Exit(1)
        console.print(f"{path} is up to date")
        return
    changed = write_register(path)
    console.print(f"{'wrote' if changed else 'unchanged:'} {path}")
