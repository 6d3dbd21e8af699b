"""``userpulse dashboard``: serve the live dashboard (``panel serve`` underneath) until stopped."""

from __future__ import annotations

from typing import Annotated

import typer

from core.logs import configure_logging
from core.settings import get_settings
from serving.server import console, quiet_gone_browsers, serve_dashboard
from userpulse.commands.params import log_level as log_level_name


def dashboard(
    show: Annotated[bool, typer.Option("--show", help="Open the dashboard in a browser.")] = False,
    log_level: Annotated[
        str, typer.Option(callback=log_level_name, help="Logging level of the dashboard's own messages.")
    ] = "INFO",
) -> None:
    """Serve the live dashboard (merged batch + speed views). Address, port and auth come from settings."""
    configure_logging(console, {"serving": log_level})
    quiet_gone_browsers()
    serve_dashboard(get_settings(), show=show)
