"""``userpulse settings``: the effective configuration (secrets masked), or the table of every setting.

Both come from ``core.settings.Settings`` itself (its fields, defaults and docstrings), so the table of
``docs/settings.md`` cannot drift from the code: a unit test compares them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from pydantic import BaseModel, SecretStr
from rich.console import Console
from rich.table import Table

from core.settings import PROJECT_ROOT, Settings, get_settings

ENV_PREFIX = "USERPULSE_"
MASK = "**********"
SETTINGS_TABLE_START = "<!-- settings table: userpulse settings --markdown -->"
SETTINGS_TABLE_END = "<!-- end of settings table -->"


def setting_items(model: BaseModel) -> Iterator[tuple[str, str, Any, str]]:
    """(environment variable, section, value, description) of every field of ``model``'s sections, and
    of its top-level fields (section ``""``)."""
    for section_name, top_field in type(model).model_fields.items():
        section = getattr(model, section_name)
        if not isinstance(section, BaseModel):
            yield f"{ENV_PREFIX}{section_name.upper()}", "", section, top_field.description or ""
            continue
        for field_name, field in type(section).model_fields.items():
            variable = f"{ENV_PREFIX}{section_name.upper()}__{field_name.upper()}"
            yield variable, section_name, getattr(section, field_name), field.description or ""


def shown(value: Any) -> str:
    """A value as a user would write it in the environment; secrets masked."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list):
        return json.dumps(value) if isinstance(value, dict) else ",".join(map(str, value))
    return str(value)


def effective(settings: Settings) -> dict[str, str]:
    """Every setting's environment variable and effective value (secrets masked)."""
    return {variable: shown(value) for variable, _, value, _ in setting_items(settings)}


def settings_markdown() -> str:
    """The table of ``docs/settings.md``: each setting's variable, default (local run) and what it does."""
    defaults = Settings.model_construct(
        **{
            name: field.get_default(call_default_factory=True)
            for name, field in Settings.model_fields.items()
        }
    )
    lines = ["| Variable | Default | What it sets |", "|---|---|---|"]
    for variable, _, value, description in setting_items(defaults):
        default = shown(value).replace(str(PROJECT_ROOT), "<project>")
        text = " ".join(description.split()).replace("|", "\\|")
        lines.append(f"| `{variable}` | {f'`{default}`' if default else '—'} | {text} |")
    return "\n".join(lines) + "\n"


def settings(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object instead of a table.")] = False,
    markdown: Annotated[
        bool,
        typer.Option("--markdown", help="Print every setting's default and description (docs/settings.md)."),
    ] = False,
) -> None:
    """Print the effective configuration: defaults, .env and USERPULSE_* variables (secrets masked)."""
    if markdown:
        typer.echo(settings_markdown(), nl=False)
        return
    values = effective(get_settings())
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    table = Table(title="Effective settings (secrets masked)")
    table.add_column("Variable", no_wrap=True)
    table.add_column("Value", overflow="fold")
    for variable, value in values.items():
        table.add_row(variable, value)
    Console(soft_wrap=True).print(table)
