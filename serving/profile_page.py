"""The dashboard's profile lookup: one uuid -> what the serving stores hold for it, masked.

The raw MongoDB document is shown through the same masking as the latest-profiles table
(``serving.profiles.profile_row``: initials, ``j***@example.com``, ``***67``); the Cassandra row holds
pseudonyms only and is shown as stored, its long pseudonyms shortened to stay readable.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import asdict
from datetime import datetime
from typing import Any

import panel as pn
import param

from serving.off_loop import read_within
from serving.profile_store import ProfileStore, StoredProfile

logger = logging.getLogger(__name__)

UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
"""The shape of ``login.uuid`` (``core.profile.Login``)."""

PSEUDONYM_SHOWN = 12
"""Leading hex digits of a pseudonym the page shows: enough to compare two rows by eye."""

MASKED_FIELDS: tuple[str, ...] = (
    "uuid", "fetched_at", "source", "name", "gender", "age", "country", "nationality", "email", "phone",
)  # fmt: skip
"""Fields of the masked raw document, in display order (``serving.profiles.ProfileRow``)."""


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    text = str(value)
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", text):  # an HMAC-SHA256 pseudonym
        return f"{text[:PSEUDONYM_SHOWN]}…"
    return text


def fields_table(test_id: str, title: str, fields: list[tuple[str, Any]]) -> str:
    """A two-column HTML table (field, value), every value escaped."""
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(_cell(value))}</td></tr>" for name, value in fields
    )
    return f'<div data-testid="{test_id}"><h4>{html.escape(title)}</h4><table>{rows}</table></div>'


def profile_html(uuid: str, stored: StoredProfile) -> str:
    """What the lookup shows for ``uuid``: the masked raw document and the pseudonymized row."""
    if not stored.found:
        return f'<p data-testid="profile-not-found">No profile {html.escape(uuid)} in the serving stores.</p>'
    parts = []
    masked = stored.masked()
    if masked is None:
        parts.append("<p>No raw document in MongoDB (expired by retention, or not processed yet).</p>")
    else:
        row = asdict(masked)
        parts.append(
            fields_table(
                "profile-raw",
                "MongoDB raw document (direct identifiers masked)",
                [(name, row[name]) for name in MASKED_FIELDS],
            )
        )
    if stored.cassandra_row is None:
        parts.append("<p>No row in Cassandra <code>profiles</code>.</p>")
    else:
        title = "Cassandra profiles row (pseudonymized)"
        parts.append(fields_table("profile-cassandra", title, list(stored.cassandra_row.items())))
    return "".join(parts)


CSS = """
table { border-collapse: collapse; }
th { text-align: left; padding: 2px 12px 2px 0; color: #556; font-weight: normal; }
td { padding: 2px 0; font-family: monospace; }
"""


class ProfileLookup(pn.viewable.Viewer):
    """A uuid field and what the serving stores hold for it; looked up when the field is submitted."""

    uuid = param.String(default="", doc="login.uuid of the profile to show.")

    def __init__(self, store: ProfileStore, timeout_s: float) -> None:
        super().__init__()
        self.store = store
        self.timeout_s = timeout_s
        self.result = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[CSS])
        self.param.watch(self._uuid_changed, ["uuid"])

    async def look_up(self) -> None:
        """Read the stores off the event loop, with the dashboard's deadline, and show the answer."""
        uuid = self.uuid.strip().lower()
        if not uuid:
            self.result.object = ""
            return
        if not UUID_PATTERN.match(uuid):
            self.result.object = f"<p>{html.escape(uuid)} is not a uuid (8-4-4-4-12 hex digits).</p>"
            return
        answer = await read_within(lambda: self.store.read(uuid), self.timeout_s, "profile lookup", logger)
        if answer.failure is not None:
            self.result.object = f"<p>{html.escape(answer.failure.capitalize())}.</p>"
            return
        self.result.object = profile_html(uuid, answer.value)

    async def _uuid_changed(self, *_events: param.parameterized.Event) -> None:
        await self.look_up()

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("### Look up a profile"),
            pn.widgets.TextInput.from_param(
                self.param.uuid, name="uuid", placeholder="login.uuid, then Enter", width=420
            ),
            self.result,
            sizing_mode="stretch_width",
        )
