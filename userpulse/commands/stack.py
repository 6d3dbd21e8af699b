"""``userpulse stack up|down|status|reset``: the local services without Docker; ``userpulse demo``."""

from __future__ import annotations

import signal

import typer
from rich.console import Console
from rich.table import Table

from core.settings import get_settings
from infra.demo import Demo, DemoError
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


def demo() -> None:
    """Run the whole pipeline: stack, producer, speed layer, Dagster (UI, schedule, sensor), dashboard.

    Prints the URLs; Ctrl-C stops everything the demo started.
    """
    runner = Demo(get_settings(), say=lambda message: console.print(message, highlight=False))
    signal.signal(signal.SIGINT, runner.request_stop)
    signal.signal(signal.SIGTERM, runner.request_stop)
    try:
        runner.start()
        if not runner.stop_requested:
            table = Table(title="UserPulse demo: running (Ctrl-C stops everything)")
            table.add_column("what")
            table.add_column("where")
            for name, url in runner.urls().items():
                table.add_row(name, url)
            for process in runner.processes:
                table.add_row(f"{process.name} log", str(process.log_path))
            console.print(table)
            expected = Table(title="What appears on the dashboard, and when")
            expected.add_column("what")
            expected.add_column("when")
            for what, when in runner.what_appears_when():
                expected.add_row(what, when)
            console.print(expected)
            runner.watch()
    except (DemoError, StackError) as error:
        console.print(f"[red]demo failed:[/red] {error}")
        raise typer.Exit(1) from None
    finally:
        runner.stop()
