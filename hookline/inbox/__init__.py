"""The durable inbox: every verified webhook is stored here before it is answered.

- `hookline.inbox.base`: the interface (`Inbox`), `InboxEntry`, the statuses, lanes.
- `hookline.inbox.sqlite`: `SQLiteInbox` (default), one file under ``HOOKLINE_HOME``.
- `hookline.inbox.postgres`: `PostgresInbox` (``HOOKLINE_DATABASE_URL=postgresql://...``).

`open_inbox` picks the backend from the settings.
"""

from __future__ import annotations

from hookline.config import CoreSettings, get_settings
from hookline.inbox.base import (
    FINAL_STATUSES,
    STATUSES,
    Clock,
    Inbox,
    InboxEntry,
    InboxError,
    Sequenced,
    Sequencer,
    Status,
)
from hookline.inbox.postgres import PG_SCHEMA_VERSION, PostgresInbox
from hookline.inbox.sqlite import SQLiteInbox

__all__ = [
    "FINAL_STATUSES",
    "PG_SCHEMA_VERSION",
    "STATUSES",
    "Clock",
    "Inbox",
    "InboxEntry",
    "InboxError",
    "PostgresInbox",
    "SQLiteInbox",
    "Sequenced",
    "Sequencer",
    "Status",
    "open_inbox",
]


def open_inbox(
    settings: CoreSettings | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
) -> Inbox:
    """The inbox the settings point at: PostgreSQL if ``database_url`` is set, else SQLite.

    The PostgreSQL schema is ``schema``, else the URL's ``?schema=`` parameter, else
    ``hookline``. The result connects on first use; ``await open_inbox()`` connects at once.

    Raises:
        ConfigError: ``HOOKLINE_DATABASE_URL`` is neither empty nor a postgresql:// URL.
    """
    import urllib.parse

    from hookline.errors import ConfigError

    s = settings if settings is not None else get_settings()
    url = s.database_url
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"HOOKLINE_DATABASE_URL={url.split('://')[0]}://...: only postgresql:// URLs "
                "are supported; unset it to use SQLite under HOOKLINE_HOME"
            )
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        url_schema = next((v for k, v in query if k == "schema"), None)
        rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
        dsn = urllib.parse.urlunsplit(parts._replace(query=rest))
        try:
            return PostgresInbox(dsn, schema=schema or url_schema or "hookline", clock=clock)
        except ValueError as exc:
            raise ConfigError(f"HOOKLINE_DATABASE_URL: {exc}") from None
    return SQLiteInbox(s.sqlite_path, clock=clock)
