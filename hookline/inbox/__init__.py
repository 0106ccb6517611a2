"""The durable inbox: every verified webhook is stored here before it is answered.

Two backends with one async API (`Inbox`; the life cycle is in `hookline.inbox.base`, the
rules of lanes and bursts in `hookline.inbox.lanes`); `open_inbox` picks one from the settings:

- `SQLiteInbox` (default): one file under ``HOOKLINE_HOME``, WAL journal. All statements run
  on one writer that owns the connection; whatever is queued when it wakes up is written in
  **one transaction** (group commit), and each caller's future is resolved only after that
  transaction has committed, so a request is never answered before its event is on disk and
  a commit (and its fsync) is paid once per batch instead of once per request.
- `PostgresInbox` (``HOOKLINE_DATABASE_URL=postgresql://...``): an asyncpg pool; puts are
  group-committed likewise, every other statement autocommits.

Modules:

    base.py             the interface: Inbox, InboxEntry, statuses, InboxError, life cycle
    transition.py       one step of the life cycle (status and columns set), for both backends
    lanes.py            lanes and bursts: the rules, Sequenced, late arrivals
    batching.py         group commit both backends share (requests, timeouts, put results)
    sqlite.py           SQLiteInbox
    sqlite_writer.py    its two writers, chosen at construction: ThreadWriter, LoopWriter
    sqlite_lanes.py     claiming: leases, lanes, bursts
    sqlite_schema.py    tables, upgrades of older files, rows -> InboxEntry
    sqlite_timers.py    timers: start (replacing the key's pending one), cancel
    postgres.py         PostgresInbox (group-committed puts)
    postgres_lanes.py   claiming, under an advisory lock per schema
    postgres_schema.py  tables, PG_SCHEMA_VERSION (DDL runs only when it differs), rows
    postgres_timers.py  timers, under an advisory lock per key
"""

from __future__ import annotations

from hookline.config import CoreSettings, get_settings
from hookline.inbox.base import (
    COUNTED,
    FINAL_STATUSES,
    SCHEDULED,
    STATUSES,
    TIMER_SOURCE,
    Clock,
    Inbox,
    InboxEntry,
    InboxError,
    Status,
)
from hookline.inbox.lanes import Sequenced, Sequencer
from hookline.inbox.postgres import PG_SCHEMA_VERSION, PostgresInbox
from hookline.inbox.sqlite import SQLiteInbox, Synchronous, WriterName

__all__ = [
    "COUNTED",
    "FINAL_STATUSES",
    "PG_SCHEMA_VERSION",
    "SCHEDULED",
    "STATUSES",
    "TIMER_SOURCE",
    "Clock",
    "Inbox",
    "InboxEntry",
    "InboxError",
    "PostgresInbox",
    "SQLiteInbox",
    "Sequenced",
    "Sequencer",
    "Status",
    "Synchronous",
    "WriterName",
    "open_inbox",
]


def open_inbox(
    settings: CoreSettings | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    sqlite_synchronous: Synchronous = "FULL",
    sqlite_writer: WriterName = "thread",
) -> Inbox:
    """The inbox the settings point at: PostgreSQL if ``database_url`` is set, else SQLite.

    The PostgreSQL schema is ``schema``, else the URL's ``?schema=`` parameter, else
    ``hookline``. A SQLite inbox gets ``sqlite_synchronous`` and ``sqlite_writer`` (see
    `SQLiteInbox`; hookline.yaml's ``receiver.sqlite_*`` for the receiver). The result
    connects on first use; ``await open_inbox()`` connects at once.

    Raises:
        ConfigError: ``HOOKLINE_DATABASE_URL`` is neither empty nor a postgresql:// URL.
        ValueError: ``sqlite_synchronous`` or ``sqlite_writer`` is not a valid choice.
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
    return SQLiteInbox(
        s.sqlite_path, synchronous=sqlite_synchronous, writer=sqlite_writer, clock=clock
    )
