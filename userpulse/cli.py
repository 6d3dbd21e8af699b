"""``userpulse``: the platform's command line. Each layer adds its own sub-command."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.console import Console

from core.settings import InsecureSettingsError, get_settings
from stores.outages import KAFKA_UNAVAILABLE, STORE_UNAVAILABLE, StoreUnavailableError, unreachable_line
from userpulse.commands.batch import batch_app
from userpulse.commands.dashboard import dashboard
from userpulse.commands.forget import forget
from userpulse.commands.operations import batches, dead_letters_app, lag, messages, runs, topics
from userpulse.commands.produce import produce
from userpulse.commands.profile import profile_app
from userpulse.commands.register import register
from userpulse.commands.retention import retention
from userpulse.commands.settings import settings
from userpulse.commands.speed import speed
from userpulse.commands.stack import demo, stack_app
from userpulse.commands.views import views

app = typer.Typer(
    pretty_exceptions_show_locals=False,
    help="UserPulse: real-time user-profile analytics (Lambda architecture).",
    no_args_is_help=True,
)
# In the order a user meets them (``--help`` lists them so).
app.command()(demo)
app.add_typer(stack_app, name="stack")
app.command()(produce)
app.command()(speed)
app.add_typer(batch_app, name="batch")
app.command()(dashboard)
app.command()(views)
app.add_typer(profile_app, name="profile")
app.command()(topics)
app.command()(lag)
app.command()(batches)
app.command()(runs)
app.command()(messages)
app.add_typer(dead_letters_app, name="dead-letters")
app.command()(forget)
app.command()(retention)
app.command()(register)
app.command()(settings)


SECRET_WORDS = ("PASSWORD", "SECRET", "KEY", "URI", "TOKEN")


def is_secret_setting(variable: str) -> bool:
    """Whether a setting may hold a secret, so that an invalid value is not echoed to the terminal."""
    return any(word in variable for word in SECRET_WORDS)


def main() -> None:
    """The ``userpulse`` entry point: settings refused for safety and services that do not answer end in
    one line, not a traceback (exit 2 for what the user must change, 1 for what went wrong at run time)."""
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        app()
    except InsecureSettingsError as error:
        console.print(f"[red]refused:[/red] {error}")
        sys.exit(2)
    except ValidationError as error:  # the settings read from the environment
        for problem in error.errors():
            if not problem["loc"]:  # a rule across settings (e.g. the deployment's)
                console.print(f"[red]invalid settings:[/red] {problem['msg'].removeprefix('Value error, ')}")
                continue
            variable = "USERPULSE_" + "__".join(str(part).upper() for part in problem["loc"])
            shown = "(hidden)" if is_secret_setting(variable) else repr(problem.get("input"))
            console.print(f"[red]invalid setting[/red] {variable}={shown}: {problem['msg']}")
        sys.exit(2)
    except StoreUnavailableError as error:  # a service that stopped answering for longer than tolerated
        console.print(f"[red]stopped:[/red] {error}")
        sys.exit(1)
    except STORE_UNAVAILABLE + KAFKA_UNAVAILABLE as error:
        console.print(f"[red]unreachable:[/red] {unreachable_line(error, get_settings())}")
        sys.exit(1)


if __name__ == "__main__":
    main()
