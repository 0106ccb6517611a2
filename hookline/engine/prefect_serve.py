"""`prefect server start` for the embedded profile, with SQLite write transactions that queue.

Run as ``python -m hookline.engine.prefect_serve server start --host H --port P``; it takes
the same arguments as the ``prefect`` command.

Why: Prefect opens most of its SQLite write transactions ``DEFERRED``: they read first and
take the write lock at their first write. When another connection commits in between (the
task-run recorder, a flow-run create, a state change), SQLite cannot upgrade the stale read
snapshot and answers SQLITE_BUSY at once, without waiting on ``busy_timeout``. The API turns
that into 503 "database is locked" and the Prefect client sleeps 2^n s before its retry, so a
run that takes 0.3 s costs 2.3 s. Prefect itself opens the transactions it found most
contended with ``BEGIN IMMEDIATE`` (``with_for_update=True``: the write lock first, then the
reads). Doing that for every transaction turns each collision into a wait of milliseconds for
the lock, which is what one writer at a time on one SQLite file amounts to anyway. Read-only
requests that do not open a transaction are unaffected (WAL readers never wait).

Measured with bench/e2e.py and bench/prefect_ceiling.py; see docs/architecture.md.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from hookline.engine.app import freeze_startup_heap
from hookline.engine.prefect_internals import immediate_sqlite_transactions

IMMEDIATE_ENV = "HOOKLINE_PREFECT_SQLITE_IMMEDIATE"
"""Set to 1 in the server's environment to apply `immediate_sqlite_transactions`."""


def main() -> None:
    """Apply the profile's patches, then run the ``prefect`` CLI with this process's argv."""
    if os.environ.get(IMMEDIATE_ENV) == "1" and not immediate_sqlite_transactions():
        print(
            "hookline: this Prefect version has no AioSqliteConfiguration.begin_transaction; "
            "SQLite transactions stay DEFERRED",
            file=sys.stderr,
        )
    freeze_once_started()
    from prefect.cli import app

    app()


def freeze_once_started() -> None:
    """Freeze the server's heap (`freeze_startup_heap`) once uvicorn has started it.

    Prefect's server holds ~290,000 objects from its imports and as many again from its
    startup (its database's SQLAlchemy tables, set up in the app's lifespan). Full
    collections walked all of them, stopping the server 0.2-0.3 s every ~6 s under load;
    frozen after the import alone, the second half was still walked."""
    import uvicorn

    started = uvicorn.Server.startup

    async def startup(self: uvicorn.Server, sockets: Any = None) -> None:
        await started(self, sockets=sockets)
        freeze_startup_heap()

    uvicorn.Server.startup = startup  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
