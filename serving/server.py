"""The dashboard's server: the stores shared by every browser session, the two pages, authentication,
and ``pn.serve`` until stopped (``userpulse dashboard`` runs it)."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import panel as pn
from rich.console import Console
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from core.settings import DEVELOPMENT_COOKIE_SECRET, InsecureSettingsError, Settings
from orchestration.runs import RunHistory
from serving.dashboard import UserPulseDashboard
from serving.operations import OperationsSources, TopicReader
from serving.operations_page import operations_page_factory
from serving.profile_store import ProfileStore, profile_store_of
from serving.profiles import ProfileDocuments, profile_documents
from serving.snapshot import SharedSnapshots
from serving.views import ServingViews, serving_views
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session, mongo_client, mongo_database

console = Console(stderr=True)


@contextmanager
def serving_stores(settings: Settings) -> Iterator[tuple[ServingViews, ProfileDocuments, ProfileStore]]:
    """The read side of both stores, shared by every browser session; connections closed on exit.

    The schema is applied first (idempotently), so a dashboard started before either layer ran shows
    empty figures rather than errors about missing tables.
    """
    cluster, session = cassandra_session(settings)
    client = mongo_client(settings)
    try:
        apply_schema(session, settings.cassandra.keyspace, settings.cassandra.keyspace_replication)
        views = serving_views(session, settings)
        database = mongo_database(client, settings)
        documents = profile_documents(database, settings)
        profiles = profile_store_of(session, database, settings)
        yield views, documents, profiles
    finally:
        client.close()
        cluster.shutdown()


class GoneBrowserFilter(logging.Filter):
    """Drops the records of a browser that went away while a message to it was being sent (a tab
    closed mid-refresh): Tornado and Bokeh log them as warnings and tracebacks, yet nothing is wrong and
    nobody is waiting, and a few closed tabs would bury what an operator must read."""

    GONE = (WebSocketClosedError, StreamClosedError)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.GONE):
            return False
        message = record.getMessage()
        if "Failed sending message as connection was closed" in message:
            return False
        # asyncio reports a task that died of it without exc_info, the exception in its message.
        return not ("Task exception was never retrieved" in message and "WebSocketClosedError" in message)


def quiet_gone_browsers() -> None:
    gone = GoneBrowserFilter()
    for name in ("asyncio", "bokeh.server.views.ws", "tornado.application"):
        logging.getLogger(name).addFilter(gone)


def page_factory(
    settings: Settings, views: ServingViews, documents: ProfileDocuments, profiles: ProfileStore | None = None
) -> Callable[[], pn.viewable.Viewable]:
    """What ``pn.serve`` calls for each new browser session: a fresh dashboard, refreshing itself (the
    sessions share their snapshots)."""
    shared = SharedSnapshots()

    def page() -> pn.viewable.Viewable:
        pn.extension()
        dashboard = UserPulseDashboard(settings, views, documents, profiles, shared)
        dashboard.start_refreshing()
        return dashboard.__panel__()

    return page


def serve_dashboard(settings: Settings, show: bool = False) -> None:
    """Serve the dashboard on the configured address until interrupted (blocks)."""
    serving = settings.serving
    auth: dict[str, object] = {}
    if serving.basic_auth_username and serving.basic_auth_password:
        if serving.cookie_secret.get_secret_value() in ("", DEVELOPMENT_COOKIE_SECRET):
            # Anyone can sign a login cookie with the public default: basic auth would be a facade.
            raise InsecureSettingsError(
                "basic auth needs a cookie secret of your own: set USERPULSE_SERVING__COOKIE_SECRET "
                "(e.g. `openssl rand -hex 32`)"
            )
        auth = {
            "basic_auth": {serving.basic_auth_username: serving.basic_auth_password.get_secret_value()},
            "cookie_secret": serving.cookie_secret.get_secret_value(),
        }
    elif serving.host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/yellow] dashboard exposed on {serving.host} without basic auth")
    # SIGTERM (e.g. from ``userpulse demo``) stops the server as Ctrl-C does: connections closed, exit 0.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with (
        serving_stores(settings) as (views, documents, profiles),
        TopicReader(settings) as topic_reader,
        RunHistory(settings.paths.dagster_home) as run_history,
    ):
        operations = OperationsSources(topic_reader, documents, views, run_history)
        console.print(f"dashboard: http://{serving.host}:{serving.port}/")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM: a normal stop
            pn.serve(
                {
                    "/": page_factory(settings, views, documents, profiles),
                    "/operations": operations_page_factory(settings, operations),
                },
                address=serving.host,
                port=serving.port,
                websocket_origin=[f"{serving.host}:{serving.port}", f"localhost:{serving.port}"],
                show=show,
                title="UserPulse",
                **auth,
            )
