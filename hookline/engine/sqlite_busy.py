"""A busy handler for SQLite connections that tries for the write lock every millisecond.

SQLite's own busy handler (``busy_timeout``: what ``sqlite3.connect(timeout=...)`` and
``PRAGMA busy_timeout`` install) sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and then 100 ms
between tries. Under a burst the embedded Prefect server's write lock is held 75-80 % of the
time, in transactions of ~20 ms. A connection that has waited 0.3 s looks again only every
100 ms, and loses the lock each time to newer waiters that look every few milliseconds.
Measured in the server (bench/README.md, "The embedded server's SQLite write lock"): holds p99
61 ms, waits p99 1.43 s and max 3.6 s. Trying at a constant interval makes the oldest waiter
as quick as the newest, so a wait is a few holds long, not a matter of luck.

Python's `sqlite3` does not expose ``sqlite3_busy_handler``; `install` calls it through
`ctypes`, on the ``sqlite3 *`` CPython keeps as the first field of its connection object, from
the library the `sqlite3` module is linked with. It checks that pointer first: SQLite must
name, for it, the database file the caller says the connection has open. Anything unexpected
(another Python, another layout, no such symbol) keeps SQLite's own handler and returns False.
The callback runs in the thread that waits (aiosqlite's, in Prefect's server), and holds the
GIL only to look at the clock.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("hookline.engine")

POLL_SECONDS = 0.001
"""The sleep between two tries for a lock (SQLite's own handler: up to 0.1 s)."""

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
_CPYTHON_LAYOUTS = {(3, 11), (3, 12), (3, 13)}
"""CPython releases whose ``pysqlite_Connection`` starts with ``sqlite3 *db``."""


@dataclass
class BusyWait:
    """SQLite's busy callback: try again every ``poll`` seconds, for up to the timeout (in ms)
    the connection was installed with; then give up, and the statement fails with
    SQLITE_BUSY ("database is locked"), as with SQLite's own handler."""

    poll: float = POLL_SECONDS
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _since: threading.local = field(default_factory=threading.local)

    def __call__(self, timeout_ms: int | None, count: int) -> int:
        now = self.clock()
        if count == 0:  # a new wait, in this thread
            self._since.at = now
        elif (now - self._since.at) * 1000 >= (timeout_ms or 0):
            return 0
        self.sleep(self.poll)
        return 1


_wait = BusyWait()
_callback = _CALLBACK(_wait)  # referenced for as long as SQLite may call it
_lib: Any = None


def _sqlite() -> Any:
    global _lib
    if _lib is None:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)  # resolves sqlite3_* as the module itself does
        lib.sqlite3_busy_handler.argtypes = [ctypes.c_void_p, _CALLBACK, ctypes.c_void_p]
        lib.sqlite3_busy_handler.restype = ctypes.c_int
        lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.sqlite3_db_filename.restype = ctypes.c_char_p
        _lib = lib
    return _lib


def install(connection: Any, database: str, *, timeout: float) -> bool:
    """Make ``connection``, a `sqlite3.Connection` with the file ``database`` open as
    ``main``, wait for a lock by trying every `POLL_SECONDS`, for up to ``timeout`` seconds.
    False: it keeps the handler it had (see the module docstring)."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] not in _CPYTHON_LAYOUTS:
        return False
    try:
        lib = _sqlite()
    except (OSError, AttributeError, ImportError) as exc:
        log.debug("no sqlite3_busy_handler: %s", exc)
        return False
    db = ctypes.c_void_p.from_address(id(connection) + object.__basicsize__).value
    if not db or not database:
        return False
    named = lib.sqlite3_db_filename(db, b"main")
    if not named or Path(named.decode()).resolve() != Path(database).resolve():
        return False
    import os

    if os.environ.get("HOOKLINE_BUSY_NATIVE") == "1":
        fn = ctypes.cast(lib.sqlite3_sleep, ctypes.c_void_p)
        lib.sqlite3_busy_handler.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        return int(lib.sqlite3_busy_handler(db, fn, 1)) == 0
    timeout_ms = max(1, round(timeout * 1000))  # carried in the callback's user-data pointer
    return int(lib.sqlite3_busy_handler(db, _callback, timeout_ms)) == 0
