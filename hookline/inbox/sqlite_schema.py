"""The SQLite inbox's tables: created, upgraded from older versions, and read back."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hookline.config import private_dir, private_file
from hookline.inbox.base import InboxEntry, InboxError, from_epoch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    received_at REAL    NOT NULL,
    event_time  REAL,
    body        BLOB    NOT NULL,
    headers     TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    flow_runs   TEXT    NOT NULL DEFAULT '{}',
    not_before  REAL    NOT NULL,
    lease_until REAL,
    updated_at  REAL    NOT NULL,
    seq         INTEGER NOT NULL DEFAULT 0,
    superseded_by INTEGER,
    note        TEXT,
    timer_key   TEXT,
    UNIQUE (source, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_due ON inbox (status, not_before, id);
CREATE INDEX IF NOT EXISTS inbox_event ON inbox (event_id);
CREATE TABLE IF NOT EXISTS inbox_steps (
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    recipe      TEXT NOT NULL,
    step        TEXT NOT NULL,
    outputs     TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (source, event_id, recipe, step)
);
CREATE TABLE IF NOT EXISTS inbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox_lanes (
    lane        TEXT    NOT NULL,
    entry_id    INTEGER NOT NULL,
    event_time  REAL    NOT NULL,
    started     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (lane, entry_id)
);
CREATE INDEX IF NOT EXISTS inbox_lanes_entry ON inbox_lanes (entry_id);
CREATE TABLE IF NOT EXISTS inbox_lane_marks (
    lane        TEXT    PRIMARY KEY,
    event_time  REAL    NOT NULL,
    entry_id    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox_run_claims (
    flow_run_id TEXT NOT NULL,
    state_id    TEXT NOT NULL,
    worker      TEXT NOT NULL,
    claimed_at  REAL NOT NULL,
    PRIMARY KEY (flow_run_id, state_id)
);
CREATE TABLE IF NOT EXISTS inbox_coalesce (
    key         TEXT    NOT NULL,
    entry_id    INTEGER NOT NULL,
    event_time  REAL    NOT NULL,
    received    REAL    NOT NULL,
    quiet       REAL    NOT NULL,
    max_wait    REAL    NOT NULL,
    PRIMARY KEY (key, entry_id)
);
CREATE INDEX IF NOT EXISTS inbox_coalesce_entry ON inbox_coalesce (entry_id);
"""
# Added to inboxes written before lanes, coalescing, notes or timers were kept here; a new
# inbox has them from CREATE TABLE above.
_ADDED_COLUMNS = (
    ("seq", "INTEGER NOT NULL DEFAULT 0"),
    ("superseded_by", "INTEGER"),
    ("note", "TEXT"),
    ("timer_key", "TEXT"),
)
# After the columns exist (added to inboxes created before lanes or timers were kept here).
_SEQ_INDEX = (
    "CREATE INDEX IF NOT EXISTS inbox_unsequenced ON inbox (id)"
    " WHERE status = 'pending' AND seq <> 1"
)
_TIMER_INDEX = (
    "CREATE INDEX IF NOT EXISTS inbox_timer ON inbox (timer_key, status)"
    " WHERE timer_key IS NOT NULL"
)


def connect(path: Path, *, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection to the inbox at ``path`` (WAL journal), its tables created or upgraded.

    Raises:
        InboxError: the file cannot be created, opened or upgraded.
    """
    try:
        return _connect(path, synchronous, busy_timeout)
    except (sqlite3.Error, OSError) as exc:
        raise InboxError(f"cannot open the SQLite inbox at {path}: {exc}") from exc


def _connect(path: Path, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    # Every payload is in here: owner-only from the start (SQLite gives the -wal and -shm
    # files the database file's mode), and tightened if an older version left it 0644.
    private_dir(path.parent)
    private_file(path)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            private_file(side)
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        _use_wal(conn, busy_timeout)
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        # Columns added since the first version: an older inbox gets them on open. Checked
        # and added under the write lock, as a dispatcher and a worker started together
        # open the same file at once (without it, one fails on "duplicate column name").
        conn.execute("BEGIN IMMEDIATE")
        try:
            columns = {r[1] for r in conn.execute("PRAGMA table_info(inbox)")}
            for column, kind in _ADDED_COLUMNS:
                if column not in columns:
                    conn.execute(f"ALTER TABLE inbox ADD COLUMN {column} {kind}")
            conn.execute(_SEQ_INDEX)
            conn.execute(_TIMER_INDEX)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    # Switching a new file to WAL takes an exclusive lock that SQLite does not wait for (no
    # busy handler): a second process opening the file that moment gets "database is locked"
    # at once. Try again for as long as any other statement would wait.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def to_entry(row: tuple[Any, ...]) -> InboxEntry:
    """The entry of a row of ``SELECT {COLUMNS} FROM inbox``."""
    return InboxEntry(
        id=row[0],
        source=row[1],
        event_id=row[2],
        event_type=row[3],
        received_at=datetime.fromtimestamp(row[4], UTC),
        event_time=from_epoch(row[5]),
        body=bytes(row[6]),
        headers=json.loads(row[7]),
        status=row[8],
        attempts=row[9],
        last_error=row[10],
        flow_runs=json.loads(row[11]),
        not_before=from_epoch(row[12]),
        lease_until=from_epoch(row[13]),
        updated_at=from_epoch(row[14]),
        seq=row[15],
        superseded_by=row[16],
        note=row[17],
        timer_key=row[18],
    )
