"""``userpulse stack up|down|status|reset``: the local services without Docker."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from core.settings import get_settings
from infra.stack import LocalStack, ServiceState, ServiceStatus, StackError

stack_app = typer.Typer(
    help="Run the local Kafka, Cassandra and FerretDB (no Docker needed).", no_args_is_help=True
)
console = Console()


def status_table(statuses: list[ServiceStatus]) -> Table:
    table = Table(title="UserPulse local stack")
    for column in ("service", "endpoint", "state", "pid", "ready after", "detail"):
        table.add_column(column)
    for status in statuses:
        colour = "green" if status.state in (ServiceState.ANSWERING, ServiceState.EXTERNAL) else "red"
        table.add_row(
            status.name,
            status.endpoint,
            f"[{colour}]{status.state}[/{colour}]",
            str(status.pid or "-"),
            f"{status.ready_after_s:.1f} s" if status.ready_after_s is not None else "-",
            status.detail,
        )
    return table


@stack_app.command()
def up() -> None:
    """Start every service that is not running and wait until each answers a real request."""
    stack = LocalStack(get_settings())
    try:
        with console.status("starting the local stack..."):
            statuses = stack.up(
                on_ready=lambda s: console.print(f"{s.name} ready after {s.ready_after_s:.1f} s ({s.detail})")
            )
    except StackError as error:
        console.print(f"[red]stack up failed:[/red] {error}")
        raise typer.Exit(1) from error
    console.print(status_table(statuses))


@stack_app.command()
def down() -> None:
    """Stop the services this stack started (services run by others, e.g. Docker, are left alone)."""
    stopped = LocalStack(get_settings()).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")


@stack_app.command()
def status() -> None:
    """Show each service's state; exit code 1 when one does not answer."""
    statuses = LocalStack(get_settings()).status()
    console.print(status_table(statuses))
    if any(s.state not in (ServiceState.ANSWERING, ServiceState.EXTERNAL) for s in statuses):
        raise typer.Exit(1)


@stack_app.command()
def reset(yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Stop the services and delete all their data, logs and the Delta lake under the stack folder."""
    settings = get_settings()
    if not yes:
        typer.confirm(f"Delete everything under {settings.paths.stack_dir}?", abort=True)
    removed = LocalStack(settings).reset()
    console.print(f"removed: {', '.join(removed)}" if removed else "nothing to remove")
