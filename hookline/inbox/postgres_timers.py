"""Timers on PostgreSQL (the rules are in `hookline.inbox.base`): each call is one
transaction; starts and cancels of one key queue on an advisory lock of their own, so two
starts never leave two timers, and a claim holding a timer's row wins (the UPDATE re-reads
the row after the claim commits: leased, so not cancelled)."""

from __future__ import annotations

from typing import Any

from hookline.inbox.base import TIMER_SOURCE
from hookline.inbox.postgres_lanes import leave_lanes
from hookline.inbox.postgres_schema import dt

_TIMER_LOCK = 7201157
"""With the hash of (schema, key): the advisory lock of one timer key."""


async def start_timer(
    conn: Any,
    schema: str,
    key: str,
    event_id: str,
    event_type: str,
    body: bytes,
    due: float,
    now: float,
) -> tuple[int, bool]:
    """Replace the pending timer ``key`` with a new entry due at ``due``; (its id, replaced)."""
    async with conn.transaction():
        replaced = await _cancel(conn, schema, key, now, f"replaced by {TIMER_SOURCE}:{event_id}")
        entry_id = await conn.fetchval(
            f'INSERT INTO "{schema}".inbox (source, event_id, event_type, received_at,'
            " event_time, body, headers, status, not_before, updated_at, timer_key)"
            " VALUES ($1, $2, $3, $4, $5, $6, '{}', 'pending', $5, $4, $7) RETURNING id",
            TIMER_SOURCE,
            event_id,
            event_type,
            dt(now),
            dt(due),
            body,
            key,
        )
        return int(entry_id), replaced


async def cancel_timer(conn: Any, schema: str, key: str, now: float) -> bool:
    """End the pending, unleased timer ``key`` ``cancelled``; whether there was one."""
    async with conn.transaction():
        return await _cancel(conn, schema, key, now, "cancelled by timer.cancel")


async def _cancel(conn: Any, schema: str, key: str, now: float, note: str) -> bool:
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", _TIMER_LOCK, f"{schema}:{key}"
    )
    ids = [
        r["id"]
        for r in await conn.fetch(
            f"UPDATE \"{schema}\".inbox SET status = 'cancelled', note = $1, lease_until = NULL,"
            " updated_at = $2 WHERE timer_key = $3 AND status = 'pending'"
            " AND lease_until IS NULL RETURNING id",
            note,
            dt(now),
            key,
        )
    ]
    for i in ids:
        await leave_lanes(conn, schema, i)
    return bool(ids)
