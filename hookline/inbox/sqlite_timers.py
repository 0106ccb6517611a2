"""Timers on SQLite (the rules are in `hookline.inbox.base`). Runs on the inbox's writer,
inside its transaction: a start (cancel the key's pending timer, insert the new one) and a
cancel are each atomic, and never interleave with a claim."""

from __future__ import annotations

import sqlite3

from hookline.inbox.base import TIMER_SOURCE
from hookline.inbox.sqlite_lanes import leave_lanes


def start_timer(
    conn: sqlite3.Connection,
    key: str,
    event_id: str,
    event_type: str,
    body: bytes,
    due: float,
    now: float,
) -> tuple[int, bool]:
    """Replace the pending timer ``key`` with a new entry due at ``due``; (its id, replaced)."""
    replaced = _cancel(conn, key, now, f"replaced by {TIMER_SOURCE}:{event_id}")
    cur = conn.execute(
        "INSERT INTO inbox (source, event_id, event_type, received_at, event_time, body,"
        " headers, status, not_before, updated_at, timer_key)"
        " VALUES (?,?,?,?,?,?,'{}','pending',?,?,?)",
        (TIMER_SOURCE, event_id, event_type, now, due, body, due, now, key),
    )
    return int(cur.lastrowid or 0), replaced


def cancel_timer(conn: sqlite3.Connection, key: str, now: float) -> bool:
    """End the pending, unleased timer ``key`` ``cancelled``; whether there was one."""
    return _cancel(conn, key, now, "cancelled by timer.cancel")


def _cancel(conn: sqlite3.Connection, key: str, now: float, note: str) -> bool:
    ids = [
        i
        for (i,) in conn.execute(
            "SELECT id FROM inbox WHERE timer_key = ? AND status = 'pending'"
            " AND lease_until IS NULL",
            (key,),
        )
    ]
    for i in ids:
        conn.execute(
            "UPDATE inbox SET status = 'cancelled', note = ?, lease_until = NULL,"
            " updated_at = ? WHERE id = ?",
            (note, now, i),
        )
        leave_lanes(conn, i)
    return bool(ids)
