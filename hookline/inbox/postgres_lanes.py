"""Claiming on PostgreSQL: leases, lanes and bursts (the rules are in `hookline.inbox.base`).

Without a sequencer a claim is one ``UPDATE ... FOR UPDATE SKIP LOCKED``; with one,
sequencing and claiming run under one advisory lock per schema, so several dispatchers share
lanes safely.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from hookline.inbox.base import COLUMNS, InboxEntry
from hookline.inbox.lanes import (
    SEQUENCE_BATCH,
    Sequenced,
    Sequencer,
    entry_time,
    is_late,
    sequence_all,
)
from hookline.inbox.postgres_schema import dt, to_entry


def lock_key(schema: str) -> int:
    """The advisory lock that serialises sequencing and claiming in ``schema``."""
    return 7201156 + zlib.crc32(schema.encode()) % 1_000_000


async def claim_due(
    conn: Any,
    schema: str,
    *,
    now: float,
    limit: int,
    lease_seconds: float,
    sequencer: Sequencer | None,
) -> list[InboxEntry]:
    """Lease up to ``limit`` due pending entries of ``schema``, oldest first. With
    ``sequencer``, sequence the entries not sequenced yet first and lease only entries no
    other entry of their lanes or burst waits for (`hookline.inbox.base`)."""
    s = f'"{schema}"'
    t = f"{s}.inbox"
    if sequencer is None:
        rows = await conn.fetch(
            f"UPDATE {t} SET lease_until = $2, updated_at = $1, seq = 1"
            f" WHERE id IN (SELECT id FROM {t} WHERE status = 'pending'"
            " AND not_before <= $1 AND (lease_until IS NULL OR lease_until <= $1)"
            f" ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}",
            dt(now),
            dt(now + lease_seconds),
            limit,
        )
        return sorted((to_entry(r) for r in rows), key=lambda e: e.id)
    async with conn.transaction():
        # one sequencer/claimer at a time per inbox: lanes stay ordered with any
        # number of dispatchers (claims are short; creating runs happens outside)
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema))
        fresh = [
            to_entry(r)
            for r in await conn.fetch(
                f"SELECT {COLUMNS} FROM {t} WHERE status = 'pending'"
                " AND seq <> 1 ORDER BY id LIMIT $1",
                SEQUENCE_BATCH,
            )
        ]
        if fresh:
            plan = await asyncio.to_thread(sequence_all, fresh, sequencer)
            await _sequence(conn, s, plan, now)
        rows = await conn.fetch(
            f"UPDATE {t} SET lease_until = $2, updated_at = $1"
            f" WHERE id IN (SELECT id FROM {t} i WHERE status = 'pending'"
            " AND not_before <= $1 AND (lease_until IS NULL OR lease_until <= $1)"
            f" AND seq = 1 AND NOT EXISTS (SELECT 1 FROM {s}.inbox_lanes a"
            f" JOIN {s}.inbox_lanes b ON b.lane = a.lane WHERE a.entry_id = i.id"
            " AND b.entry_id <> a.entry_id AND (b.started"
            " OR (b.event_time, b.entry_id) < (a.event_time, a.entry_id))"
            f" AND NOT EXISTS (SELECT 1 FROM {s}.inbox_coalesce ca"
            f" JOIN {s}.inbox_coalesce cb ON cb.key = ca.key"
            " WHERE ca.entry_id = a.entry_id AND cb.entry_id = b.entry_id))"
            f" AND NOT EXISTS (SELECT 1 FROM {s}.inbox_coalesce c WHERE c.entry_id = i.id"
            f" AND (EXISTS (SELECT 1 FROM {s}.inbox_coalesce m WHERE m.key = c.key"
            " AND m.entry_id <> c.entry_id"
            " AND (m.event_time, m.entry_id) > (c.event_time, c.entry_id))"
            f" OR ((SELECT MAX(m.received) FROM {s}.inbox_coalesce m WHERE m.key = c.key)"
            " > $4 - c.quiet"
            f" AND (SELECT MIN(m.received) FROM {s}.inbox_coalesce m WHERE m.key = c.key)"
            " > $4 - c.max_wait)))"
            f" ORDER BY id LIMIT $3) RETURNING {COLUMNS}",
            dt(now),
            dt(now + lease_seconds),
            limit,
            now,
        )
        ids = [r["id"] for r in rows]
        if ids:
            await conn.execute(
                f"INSERT INTO {s}.inbox_lane_marks AS m (lane, event_time, entry_id)"
                f" SELECT lane, event_time, entry_id FROM {s}.inbox_lanes"
                " WHERE entry_id = ANY($1::bigint[]) ORDER BY lane, event_time, entry_id"
                " ON CONFLICT (lane) DO UPDATE SET event_time = excluded.event_time,"
                " entry_id = excluded.entry_id"
                " WHERE (excluded.event_time, excluded.entry_id)"
                " > (m.event_time, m.entry_id)",
                ids,
            )
            await conn.execute(
                f"UPDATE {s}.inbox_lanes SET started = TRUE WHERE entry_id = ANY($1::bigint[])",
                ids,
            )
            for i in ids:
                await _supersede(conn, s, i, now)
    return sorted((to_entry(r) for r in rows), key=lambda e: e.id)


async def _sequence(
    conn: Any, s: str, plan: list[tuple[InboxEntry, Sequenced]], now: float
) -> None:
    """Enter the entries of ``plan`` into their lanes and bursts, or end them ``late`` (the
    lane already ran a later event); ``s`` is the quoted schema."""
    t = f"{s}.inbox"
    lanes = sorted({lane for _, q in plan for lane in q.lanes})
    marks = {
        r["lane"]: (float(r["event_time"]), int(r["entry_id"]))
        for r in await conn.fetch(
            f"SELECT lane, event_time, entry_id FROM {s}.inbox_lane_marks"
            " WHERE lane = ANY($1::text[])",
            lanes,
        )
    }
    late: list[tuple[str, int]] = []
    joined: list[tuple[str, int, float]] = []
    bursts: list[tuple[str, int, float, float, float, float]] = []
    done: list[int] = []
    for entry, q in plan:
        msg = is_late(entry, q, marks) if entry.seq == 0 else None
        if msg is not None:
            late.append((msg, entry.id))
            continue
        done.append(entry.id)
        joined += [(lane, entry.id, entry_time(entry)) for lane in q.lanes]
        if q.coalesce is not None and entry.seq == 0:  # a replay runs alone
            bursts.append(
                (
                    q.coalesce,
                    entry.id,
                    entry_time(entry),
                    entry.received_at.timestamp(),
                    q.quiet,
                    q.max_wait,
                )
            )
    if late:
        await conn.executemany(
            f"UPDATE {t} SET status = 'late', seq = 1, last_error = $1,"
            " lease_until = NULL, updated_at = $3 WHERE id = $2",
            [(msg, i, dt(now)) for msg, i in late],
        )
    if done:
        await conn.execute(f"DELETE FROM {s}.inbox_lanes WHERE entry_id = ANY($1::bigint[])", done)
        await conn.execute(f"UPDATE {t} SET seq = 1 WHERE id = ANY($1::bigint[])", done)
    if joined:
        await conn.executemany(
            f"INSERT INTO {s}.inbox_lanes (lane, entry_id, event_time) VALUES ($1,$2,$3)"
            " ON CONFLICT DO NOTHING",
            joined,
        )
    if bursts:
        await conn.executemany(
            f"INSERT INTO {s}.inbox_coalesce"
            " (key, entry_id, event_time, received, quiet, max_wait)"
            " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING",
            bursts,
        )


async def _supersede(conn: Any, s: str, entry_id: int, now: float) -> None:
    """``entry_id`` was claimed: the rest of its burst is superseded by it."""
    keys = [
        r["key"]
        for r in await conn.fetch(
            f"SELECT key FROM {s}.inbox_coalesce WHERE entry_id = $1", entry_id
        )
    ]
    for key in keys:
        covered = [
            r["entry_id"]
            for r in await conn.fetch(
                f"SELECT entry_id FROM {s}.inbox_coalesce WHERE key = $1 AND entry_id <> $2",
                key,
                entry_id,
            )
        ]
        if covered:
            await conn.execute(
                f"UPDATE {s}.inbox SET status = 'superseded', superseded_by = $1,"
                " lease_until = NULL, updated_at = $2"
                " WHERE id = ANY($3::bigint[]) AND status = 'pending'",
                entry_id,
                dt(now),
                covered,
            )
            await conn.execute(
                f"DELETE FROM {s}.inbox_lanes WHERE entry_id = ANY($1::bigint[])", covered
            )
        await conn.execute(f"DELETE FROM {s}.inbox_coalesce WHERE key = $1", key)


async def leave_lanes(conn: Any, schema: str, entry_id: int) -> None:
    """The entry leaves its lanes and its burst (it is final, or replayed)."""
    for table in ("inbox_lanes", "inbox_coalesce"):
        await conn.execute(f'DELETE FROM "{schema}".{table} WHERE entry_id = $1', entry_id)
