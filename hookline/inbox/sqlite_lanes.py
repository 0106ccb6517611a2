"""Claiming on SQLite: leases, lanes and bursts (the rules are in `hookline.inbox.base`).

Runs on the inbox's writer, inside its transaction (`hookline.inbox.sqlite_writer`).
"""

from __future__ import annotations

import sqlite3

from hookline.inbox.base import COLUMNS, InboxEntry, from_epoch
from hookline.inbox.lanes import Sequenced, entry_time, is_late
from hookline.inbox.sqlite_schema import to_entry

# seq: 0 = not sequenced yet, 2 = not sequenced yet and never late (a replay), 1 = sequenced
_BLOCKED = (
    "EXISTS (SELECT 1 FROM inbox_lanes a JOIN inbox_lanes b ON b.lane = a.lane"
    " WHERE a.entry_id = inbox.id AND b.entry_id <> a.entry_id AND (b.started = 1"
    " OR b.event_time < a.event_time"
    " OR (b.event_time = a.event_time AND b.entry_id < a.entry_id))"
    # the waiting members of one burst are covered by its latest, not ahead of it
    " AND NOT EXISTS (SELECT 1 FROM inbox_coalesce ca JOIN inbox_coalesce cb"
    " ON cb.key = ca.key WHERE ca.entry_id = a.entry_id AND cb.entry_id = b.entry_id))"
)
_COALESCE_WAIT = (
    "EXISTS (SELECT 1 FROM inbox_coalesce c WHERE c.entry_id = inbox.id AND ("
    " EXISTS (SELECT 1 FROM inbox_coalesce m WHERE m.key = c.key AND m.entry_id <> c.entry_id"
    " AND (m.event_time > c.event_time OR (m.event_time = c.event_time"
    " AND m.entry_id > c.entry_id)))"
    " OR ((SELECT MAX(m.received) FROM inbox_coalesce m WHERE m.key = c.key) > ? - c.quiet"
    " AND (SELECT MIN(m.received) FROM inbox_coalesce m WHERE m.key = c.key) > ? - c.max_wait)))"
)
_MARK = (
    "INSERT INTO inbox_lane_marks (lane, event_time, entry_id)"
    " SELECT lane, event_time, entry_id FROM inbox_lanes WHERE entry_id = ?"
    " ON CONFLICT (lane) DO UPDATE SET event_time = excluded.event_time,"
    " entry_id = excluded.entry_id WHERE excluded.event_time > inbox_lane_marks.event_time"
    " OR (excluded.event_time = inbox_lane_marks.event_time"
    " AND excluded.entry_id > inbox_lane_marks.entry_id)"
)


def claim_due(
    conn: sqlite3.Connection,
    *,
    now: float,
    limit: int,
    lease_seconds: float,
    plan: list[tuple[InboxEntry, Sequenced]] | None,
) -> list[InboxEntry]:
    """Lease up to ``limit`` due pending entries, oldest first. With ``plan`` (a sequencer's
    word on the entries not sequenced yet, maybe none), sequence those first and lease only
    entries no other entry of their lanes or burst waits for (`hookline.inbox.base`)."""
    if plan:
        _sequence(conn, plan, now)
    lanes = plan is not None
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM inbox WHERE status = 'pending' AND not_before <= ?"
        " AND (lease_until IS NULL OR lease_until <= ?)"
        + (f" AND seq = 1 AND NOT {_BLOCKED} AND NOT {_COALESCE_WAIT}" if lanes else "")
        + " ORDER BY id LIMIT ?",
        (now, now, *((now, now) if lanes else ()), limit),
    ).fetchall()
    ids = [r[0] for r in rows]
    conn.executemany(
        "UPDATE inbox SET lease_until = ?, updated_at = ?, seq = 1 WHERE id = ?",
        [(now + lease_seconds, now, i) for i in ids],
    )
    if lanes:
        conn.executemany(_MARK, [(i,) for i in ids])
        conn.executemany(
            "UPDATE inbox_lanes SET started = 1 WHERE entry_id = ?", [(i,) for i in ids]
        )
        for i in ids:
            _supersede(conn, i, now)
    entries = [to_entry(r) for r in rows]
    for e in entries:
        e.lease_until = from_epoch(now + lease_seconds)
    return entries


def _sequence(
    conn: sqlite3.Connection, plan: list[tuple[InboxEntry, Sequenced]], now: float
) -> None:
    """Enter the entries of ``plan`` still unsequenced into their lanes and bursts, or end
    them ``late`` (the lane already ran a later event)."""
    ids = [e.id for e, _ in plan]
    marks_needed = sorted({lane for _, s in plan for lane in s.lanes})
    still = {
        i: seq
        for i, seq in conn.execute(
            "SELECT id, seq FROM inbox WHERE status = 'pending' AND seq <> 1 AND id IN"
            f" ({','.join('?' * len(ids))})",
            ids,
        )
    }
    marks: dict[str, tuple[float, int]] = {}
    for start in range(0, len(marks_needed), 500):
        chunk = marks_needed[start : start + 500]
        for lane, et, eid in conn.execute(
            "SELECT lane, event_time, entry_id FROM inbox_lane_marks WHERE lane IN"
            f" ({','.join('?' * len(chunk))})",
            chunk,
        ):
            marks[lane] = (et, eid)
    for entry, seq in plan:
        if entry.id not in still:
            continue
        late = is_late(entry, seq, marks) if still[entry.id] == 0 else None
        if late is not None:
            conn.execute(
                "UPDATE inbox SET status = 'late', seq = 1, last_error = ?, lease_until = NULL,"
                " updated_at = ? WHERE id = ?",
                (late, now, entry.id),
            )
            continue
        conn.execute("DELETE FROM inbox_lanes WHERE entry_id = ?", (entry.id,))
        conn.executemany(
            "INSERT OR IGNORE INTO inbox_lanes (lane, entry_id, event_time) VALUES (?,?,?)",
            [(lane, entry.id, entry_time(entry)) for lane in seq.lanes],
        )
        if seq.coalesce is not None and still[entry.id] == 0:  # a replay runs alone
            conn.execute(
                "INSERT OR IGNORE INTO inbox_coalesce"
                " (key, entry_id, event_time, received, quiet, max_wait)"
                " VALUES (?,?,?,?,?,?)",
                (
                    seq.coalesce,
                    entry.id,
                    entry_time(entry),
                    entry.received_at.timestamp(),
                    seq.quiet,
                    seq.max_wait,
                ),
            )
        conn.execute("UPDATE inbox SET seq = 1 WHERE id = ?", (entry.id,))


def _supersede(conn: sqlite3.Connection, entry_id: int, now: float) -> None:
    """``entry_id`` was claimed: the rest of its burst is superseded by it."""
    keys = [
        k for (k,) in conn.execute("SELECT key FROM inbox_coalesce WHERE entry_id = ?", (entry_id,))
    ]
    for key in keys:
        covered = [
            i
            for (i,) in conn.execute(
                "SELECT entry_id FROM inbox_coalesce WHERE key = ? AND entry_id <> ?",
                (key, entry_id),
            )
        ]
        for i in covered:
            conn.execute(
                "UPDATE inbox SET status = 'superseded', superseded_by = ?, lease_until = NULL,"
                " updated_at = ? WHERE id = ? AND status = 'pending'",
                (entry_id, now, i),
            )
            conn.execute("DELETE FROM inbox_lanes WHERE entry_id = ?", (i,))
        conn.execute("DELETE FROM inbox_coalesce WHERE key = ?", (key,))


def leave_lanes(conn: sqlite3.Connection, entry_id: int) -> None:
    """The entry leaves its lanes and its burst (it is final, or replayed)."""
    conn.execute("DELETE FROM inbox_lanes WHERE entry_id = ?", (entry_id,))
    conn.execute("DELETE FROM inbox_coalesce WHERE entry_id = ?", (entry_id,))
