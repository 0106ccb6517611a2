"""The PostgreSQL inbox: an asyncpg pool, tables in one schema, group-committed puts."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from hookline.inbox.base import (
    COLUMNS,
    SEQUENCE_BATCH,
    STATUSES,
    Clock,
    Inbox,
    InboxEntry,
    InboxError,
    Sequenced,
    Sequencer,
    check_status,
    entry_time,
    expire,
    is_late,
    sequence_all,
    to_epoch,
)

T = TypeVar("T")

PG_SCHEMA_VERSION = "3"
"""Bump when `_pg_schema` changes: processes then apply it (idempotently) once."""


def _pg_schema(schema: str) -> str:
    return f"""
CREATE SCHEMA IF NOT EXISTS "{schema}";
CREATE TABLE IF NOT EXISTS "{schema}".inbox (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT        NOT NULL,
    event_id    TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    event_time  TIMESTAMPTZ,
    body        BYTEA       NOT NULL,
    headers     TEXT        NOT NULL,
    status      TEXT        NOT NULL,
    attempts    INTEGER     NOT NULL DEFAULT 0,
    last_error  TEXT,
    flow_runs   JSONB       NOT NULL DEFAULT '{{}}'::jsonb,
    not_before  TIMESTAMPTZ NOT NULL,
    lease_until TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (source, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_due ON "{schema}".inbox (status, not_before, id);
CREATE INDEX IF NOT EXISTS inbox_event ON "{schema}".inbox (event_id);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_steps (
    source      TEXT        NOT NULL,
    event_id    TEXT        NOT NULL,
    recipe      TEXT        NOT NULL,
    step        TEXT        NOT NULL,
    outputs     TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, event_id, recipe, step)
);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
ALTER TABLE "{schema}".inbox ADD COLUMN IF NOT EXISTS seq SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE "{schema}".inbox ADD COLUMN IF NOT EXISTS superseded_by BIGINT;
ALTER TABLE "{schema}".inbox ADD COLUMN IF NOT EXISTS note TEXT;
CREATE TABLE IF NOT EXISTS "{schema}".inbox_coalesce (
    key         TEXT             NOT NULL,
    entry_id    BIGINT           NOT NULL,
    event_time  DOUBLE PRECISION NOT NULL,
    received    DOUBLE PRECISION NOT NULL,
    quiet       DOUBLE PRECISION NOT NULL,
    max_wait    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key, entry_id)
);
CREATE INDEX IF NOT EXISTS inbox_coalesce_entry ON "{schema}".inbox_coalesce (entry_id);
CREATE INDEX IF NOT EXISTS inbox_unsequenced ON "{schema}".inbox (id)
    WHERE status = 'pending' AND seq <> 1;
CREATE TABLE IF NOT EXISTS "{schema}".inbox_lanes (
    lane        TEXT             NOT NULL,
    entry_id    BIGINT           NOT NULL,
    event_time  DOUBLE PRECISION NOT NULL,
    started     BOOLEAN          NOT NULL DEFAULT FALSE,
    PRIMARY KEY (lane, entry_id)
);
CREATE INDEX IF NOT EXISTS inbox_lanes_entry ON "{schema}".inbox_lanes (entry_id);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_lane_marks (
    lane        TEXT             PRIMARY KEY,
    event_time  DOUBLE PRECISION NOT NULL,
    entry_id    BIGINT           NOT NULL
);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_run_claims (
    flow_run_id TEXT        NOT NULL,
    state_id    TEXT        NOT NULL,
    worker      TEXT        NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flow_run_id, state_id)
);
"""


def _pg_row(row: Mapping[str, Any]) -> InboxEntry:
    flow_runs = row["flow_runs"]
    return InboxEntry(
        id=row["id"],
        source=row["source"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        received_at=row["received_at"],
        event_time=row["event_time"],
        body=bytes(row["body"]),
        headers=json.loads(row["headers"]),
        status=row["status"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        flow_runs=json.loads(flow_runs) if isinstance(flow_runs, str) else dict(flow_runs),
        not_before=row["not_before"],
        lease_until=row["lease_until"],
        updated_at=row["updated_at"],
        seq=row["seq"],
        superseded_by=row["superseded_by"],
        note=row["note"],
    )


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class PostgresInbox(Inbox):
    """PostgreSQL through an asyncpg pool; tables live in ``schema`` (created if missing).

    Args:
        dsn: ``postgresql://user:pass@host:port/db``.
        schema: the PostgreSQL schema holding the tables (tests use one per run).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "hookline",
        min_size: int = 2,
        max_size: int = 16,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        if not schema.replace("_", "").isalnum():
            raise ValueError(f"schema {schema!r}: use letters, digits and '_' only")
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self._pool: Any = None
        self._t = f'"{schema}".inbox'
        self.max_inflight = 2
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[tuple[bool, int]]]] = []
        self._inflight = 0
        self._flushers: set[asyncio.Task[None]] = set()

    @property
    def description(self) -> str:
        import urllib.parse

        u = urllib.parse.urlsplit(self.dsn)
        host = u.hostname or "localhost"
        return f"postgresql://{host}:{u.port or 5432}{u.path} schema {self.schema}"

    async def _open(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_size, max_size=self.max_size
            )
            async with self._pool.acquire() as conn:
                # Serialise schema creation between processes starting at the same time.
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(7201155)")
                    # DDL takes table locks even when there is nothing to do (ALTER TABLE an
                    # ACCESS EXCLUSIVE one): a process starting next to running ones could
                    # deadlock with their claims. Run it only when the schema is not current.
                    if await self._schema_version(conn) != PG_SCHEMA_VERSION:
                        await conn.execute(_pg_schema(self.schema))
                        await conn.execute(
                            f'INSERT INTO "{self.schema}".inbox_meta (key, value)'
                            " VALUES ('schema_version', $1) ON CONFLICT (key)"
                            " DO UPDATE SET value = excluded.value",
                            PG_SCHEMA_VERSION,
                        )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise InboxError(f"cannot open the inbox at {self.description}: {exc}") from exc

    async def _schema_version(self, conn: Any) -> str | None:
        if await conn.fetchval("SELECT to_regclass($1)", f'"{self.schema}".inbox_meta') is None:
            return None
        value: str | None = await conn.fetchval(
            f"SELECT value FROM \"{self.schema}\".inbox_meta WHERE key = 'schema_version'"
        )
        return value

    async def _close(self) -> None:
        if self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        import asyncpg

        await self.open()
        try:
            async with self._pool.acquire() as conn:
                return await fn(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise InboxError(f"inbox {self.description}: {type(exc).__name__}: {exc}") from exc

    async def put(
        self,
        source: str,
        event_id: str,
        event_type: str,
        body: bytes,
        headers: Mapping[str, str],
        event_time: datetime | None,
        *,
        status: str = "pending",
        timeout: float | None = None,
    ) -> tuple[bool, int]:
        check_status(status)
        if not self._opened:
            await self.open()
        et = to_epoch(event_time)
        row = (
            source,
            event_id,
            event_type,
            _dt(self._clock()),
            None if et is None else _dt(et),
            body,
            json.dumps(dict(headers), separators=(",", ":")),
            status,
        )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[bool, int]] = loop.create_future()
        self._pending.append((row, fut))
        if self._inflight < self.max_inflight:
            self._inflight += 1
            self._flushers.add(loop.create_task(self._flush()))
        timer = (
            None
            if timeout is None
            else loop.call_later(timeout, expire, fut, timeout, self.description)
        )
        try:
            return await fut
        finally:
            if timer is not None:
                timer.cancel()

    async def _flush(self) -> None:
        """Group commit: every put queued so far in one INSERT (one round trip, one commit);
        up to ``max_inflight`` batches in flight, so the next one gathers meanwhile."""
        import asyncpg

        try:
            await asyncio.sleep(0)  # let this turn of the loop queue its puts first
            while self._pending:
                batch = [(r, f) for r, f in self._pending[:1000] if not f.done()]
                del self._pending[:1000]
                if not batch:
                    continue
                results: list[tuple[bool, int] | InboxError]
                try:
                    results = list(await self._insert_batch([r for r, _ in batch]))
                except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
                    err = InboxError(f"inbox {self.description}: {type(exc).__name__}: {exc}")
                    results = [err] * len(batch)  # unreachable: every put of the batch retries
                except Exception:  # whatever it is, every caller's future must be settled
                    # One bad row (a NUL in a text column, say) fails the whole INSERT: retry
                    # the rows one by one, so it fails alone instead of 503-ing its batch.
                    results = [await self._insert_one(r) for r, _ in batch]
                for (_, f), result in zip(batch, results, strict=True):
                    if f.done():
                        continue
                    if isinstance(result, InboxError):
                        f.set_exception(result)
                    else:
                        f.set_result(result)
        finally:
            self._inflight -= 1
            self._flushers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _insert_one(self, row: tuple[Any, ...]) -> tuple[bool, int] | InboxError:
        """One row on its own (after its batch failed): its result, or its own error."""
        try:
            [result] = await self._insert_batch([row])
        except Exception as exc:  # becomes this put's error, never a hang
            return InboxError(
                f"inbox {self.description}: cannot store {row[0]}/{row[1]!r}:"
                f" {type(exc).__name__}: {exc}"
            )
        return result

    async def _insert_batch(self, rows: list[tuple[Any, ...]]) -> list[tuple[bool, int]]:
        cols = list(zip(*rows, strict=True))
        async with self._pool.acquire() as conn:
            inserted = {
                (r["source"], r["event_id"]): int(r["id"])
                for r in await conn.fetch(
                    f"INSERT INTO {self._t} (source, event_id, event_type, received_at,"
                    " event_time, body, headers, status, not_before, updated_at)"
                    " SELECT s, e, t, r, et, b, h, st, r, r FROM unnest($1::text[], $2::text[],"
                    " $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bytea[],"
                    " $7::text[], $8::text[]) AS u(s, e, t, r, et, b, h, st)"
                    " ON CONFLICT (source, event_id) DO NOTHING RETURNING id, source, event_id",
                    *[list(c) for c in cols],
                )
            }
            missing = [(r[0], r[1]) for r in rows if (r[0], r[1]) not in inserted]
            existing: dict[tuple[str, str], int] = {}
            if missing:
                for r in await conn.fetch(
                    f"SELECT id, source, event_id FROM {self._t} WHERE (source, event_id) IN"
                    " (SELECT * FROM unnest($1::text[], $2::text[]))",
                    [m[0] for m in missing],
                    [m[1] for m in missing],
                ):
                    existing[(r["source"], r["event_id"])] = int(r["id"])
        out: list[tuple[bool, int]] = []
        for r in rows:
            key = (r[0], r[1])
            entry_id = inserted.pop(key, None)  # the first put of a key in the batch inserted it
            if entry_id is not None:
                existing[key] = entry_id
                out.append((True, entry_id))
            else:
                out.append((False, existing[key]))
        return out

    def _lock_key(self) -> int:
        """The advisory lock that serialises sequencing and claiming in this schema."""
        return 7201156 + zlib.crc32(self.schema.encode()) % 1_000_000

    async def claim(
        self, limit: int, *, lease_seconds: float, sequencer: Sequencer | None = None
    ) -> list[InboxEntry]:
        now = self._clock()
        s = f'"{self.schema}"'

        async def fn(conn: Any) -> list[InboxEntry]:
            if sequencer is None:
                rows = await conn.fetch(
                    f"UPDATE {self._t} SET lease_until = $2, updated_at = $1, seq = 1"
                    f" WHERE id IN (SELECT id FROM {self._t} WHERE status = 'pending'"
                    " AND not_before <= $1 AND (lease_until IS NULL OR lease_until <= $1)"
                    f" ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}",
                    _dt(now),
                    _dt(now + lease_seconds),
                    limit,
                )
                return sorted((_pg_row(r) for r in rows), key=lambda e: e.id)
            async with conn.transaction():
                # one sequencer/claimer at a time per inbox: lanes stay ordered with any
                # number of dispatchers (claims are short; creating runs happens outside)
                await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key())
                fresh = [
                    _pg_row(r)
                    for r in await conn.fetch(
                        f"SELECT {COLUMNS} FROM {self._t} WHERE status = 'pending'"
                        " AND seq <> 1 ORDER BY id LIMIT $1",
                        SEQUENCE_BATCH,
                    )
                ]
                if fresh:
                    plan = await asyncio.to_thread(sequence_all, fresh, sequencer)
                    await self._sequence(conn, plan, now)
                rows = await conn.fetch(
                    f"UPDATE {self._t} SET lease_until = $2, updated_at = $1"
                    f" WHERE id IN (SELECT id FROM {self._t} i WHERE status = 'pending'"
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
                    _dt(now),
                    _dt(now + lease_seconds),
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
                        f"UPDATE {s}.inbox_lanes SET started = TRUE"
                        " WHERE entry_id = ANY($1::bigint[])",
                        ids,
                    )
                    for i in ids:
                        await self._supersede(conn, i, now)
            return sorted((_pg_row(r) for r in rows), key=lambda e: e.id)

        return await self._call(fn)

    async def _sequence(
        self, conn: Any, plan: list[tuple[InboxEntry, Sequenced]], now: float
    ) -> None:
        s = f'"{self.schema}"'
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
                f"UPDATE {self._t} SET status = 'late', seq = 1, last_error = $1,"
                " lease_until = NULL, updated_at = $3 WHERE id = $2",
                [(msg, i, _dt(now)) for msg, i in late],
            )
        if done:
            await conn.execute(
                f"DELETE FROM {s}.inbox_lanes WHERE entry_id = ANY($1::bigint[])", done
            )
            await conn.execute(f"UPDATE {self._t} SET seq = 1 WHERE id = ANY($1::bigint[])", done)
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

    async def _supersede(self, conn: Any, entry_id: int, now: float) -> None:
        """``entry_id`` was claimed: the rest of its burst is superseded by it."""
        s = f'"{self.schema}"'
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
                    f"UPDATE {self._t} SET status = 'superseded', superseded_by = $1,"
                    " lease_until = NULL, updated_at = $2"
                    " WHERE id = ANY($3::bigint[]) AND status = 'pending'",
                    entry_id,
                    _dt(now),
                    covered,
                )
                await conn.execute(
                    f"DELETE FROM {s}.inbox_lanes WHERE entry_id = ANY($1::bigint[])", covered
                )
            await conn.execute(f"DELETE FROM {s}.inbox_coalesce WHERE key = $1", key)

    async def _exec(self, sql: str, *args: Any) -> None:
        async def fn(conn: Any) -> None:
            await conn.execute(sql, *args)

        await self._call(fn)

    async def _transition(
        self,
        entry_id: int,
        sets: str,
        args: tuple[Any, ...],
        expect: str | None,
        *,
        leave_lanes: bool = False,
    ) -> bool:
        """``sets`` uses $1..$n for ``args``; the entry id and ``expect`` follow them."""
        n = len(args)
        sql = f"UPDATE {self._t} SET {sets} WHERE id = ${n + 1}"
        params: tuple[Any, ...] = (*args, entry_id)
        if expect is not None:
            sql += f" AND status = ${n + 2}"
            params = (*params, expect)

        async def fn(conn: Any) -> bool:
            async with conn.transaction():
                status = await conn.execute(sql, *params)
                changed = bool(status.split()[-1] != "0")
                if changed and leave_lanes:
                    for table in ("inbox_lanes", "inbox_coalesce"):
                        await conn.execute(
                            f'DELETE FROM "{self.schema}".{table} WHERE entry_id = $1', entry_id
                        )
                return changed

        return await self._call(fn)

    async def mark_dispatched(
        self, entry_id: int, flow_runs: Mapping[str, str], *, expect: str | None = None
    ) -> bool:
        return await self._transition(
            entry_id,
            "status = 'dispatched', lease_until = NULL, updated_at = $1,"
            " flow_runs = flow_runs || $2::jsonb",
            (_dt(self._clock()), json.dumps(dict(flow_runs))),
            expect,
        )

    async def mark_done(
        self, entry_id: int, *, expect: str | None = None, note: str | None = None
    ) -> bool:
        return await self._transition(
            entry_id,
            "status = 'done', lease_until = NULL, updated_at = $1, note = $2",
            (_dt(self._clock()), note),
            expect,
            leave_lanes=True,
        )

    async def mark_failed(self, entry_id: int, error: str, *, expect: str | None = None) -> bool:
        return await self._transition(
            entry_id,
            "status = 'failed', lease_until = NULL, last_error = $1, attempts = attempts + 1,"
            " updated_at = $2",
            (error, _dt(self._clock())),
            expect,
            leave_lanes=True,
        )

    async def retry_later(
        self, entry_id: int, error: str, delay_seconds: float, *, expect: str | None = None
    ) -> bool:
        now = self._clock()
        return await self._transition(
            entry_id,
            "status = 'pending', lease_until = NULL, last_error = $1, attempts = attempts + 1,"
            " not_before = $2, updated_at = $3",
            (error, _dt(now + max(0.0, delay_seconds)), _dt(now)),
            expect,
        )

    async def requeue(self, entry_id: int) -> None:
        now = _dt(self._clock())
        s = f'"{self.schema}"'

        async def fn(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(
                    f"UPDATE {self._t} SET status = 'pending', lease_until = NULL,"
                    " not_before = $1, updated_at = $1, seq = 2, superseded_by = NULL"
                    " WHERE id = $2",
                    now,
                    entry_id,
                )
                await conn.execute(f"DELETE FROM {s}.inbox_lanes WHERE entry_id = $1", entry_id)
                await conn.execute(f"DELETE FROM {s}.inbox_coalesce WHERE entry_id = $1", entry_id)
                await conn.execute(
                    f"DELETE FROM {s}.inbox_steps st USING {self._t} i WHERE i.id = $1"
                    " AND st.source = i.source AND st.event_id = i.event_id"
                    " AND st.step LIKE 'on_failure.%'",
                    entry_id,
                )

        await self._call(fn)

    async def reopen(self, entry_id: int, recipe: str, flow_run_id: str) -> bool:
        now = _dt(self._clock())
        s = f'"{self.schema}"'

        async def fn(conn: Any) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    f"UPDATE {self._t} SET status = 'dispatched', lease_until = NULL,"
                    " updated_at = $1 WHERE id = $2 AND status IN ('done', 'failed')"
                    " AND flow_runs ->> $3 = $4",
                    now,
                    entry_id,
                    recipe,
                    flow_run_id,
                )
                if status.split()[-1] == "0":
                    return False
                await conn.execute(
                    f"DELETE FROM {s}.inbox_steps st USING {self._t} i WHERE i.id = $1"
                    " AND st.source = i.source AND st.event_id = i.event_id"
                    " AND st.recipe = $2 AND st.step LIKE 'on_failure.%'",
                    entry_id,
                    recipe,
                )
                return True

        return await self._call(fn)

    async def dispatched(self, after_id: int = 0, limit: int = 500) -> list[InboxEntry]:
        return await self._select(
            "WHERE status = 'dispatched' AND id > $1 ORDER BY id LIMIT $2", after_id, limit
        )

    async def settled(self, after_id: int, limit: int, *, done_since: datetime) -> list[InboxEntry]:
        return await self._select(
            "WHERE id > $1 AND flow_runs <> '{}'::jsonb AND (status = 'failed'"
            " OR (status = 'done' AND updated_at >= $2)) ORDER BY id LIMIT $3",
            after_id,
            done_since,
            limit,
        )

    async def covered(self, entry_id: int) -> list[InboxEntry]:
        return await self._select(
            "WHERE superseded_by = $1 ORDER BY COALESCE(event_time, received_at), id", entry_id
        )

    async def claim_run(self, flow_run_id: str, state_id: str, worker: str) -> bool:
        async def fn(conn: Any) -> bool:
            status = await conn.execute(
                f'INSERT INTO "{self.schema}".inbox_run_claims'
                " (flow_run_id, state_id, worker, claimed_at) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT DO NOTHING",
                flow_run_id,
                state_id,
                worker,
                _dt(self._clock()),
            )
            return bool(status.split()[-1] != "0")

        return await self._call(fn)

    async def run_claims(self, flow_run_ids: Iterable[str]) -> dict[str, str]:
        ids = list(flow_run_ids)

        async def fn(conn: Any) -> dict[str, str]:
            rows = await conn.fetch(
                f'SELECT flow_run_id, worker FROM "{self.schema}".inbox_run_claims'
                " WHERE flow_run_id = ANY($1::text[]) ORDER BY claimed_at",
                ids,
            )
            return {r["flow_run_id"]: r["worker"] for r in rows}

        return await self._call(fn)

    async def _select(self, where: str, *args: Any) -> list[InboxEntry]:
        async def fn(conn: Any) -> list[InboxEntry]:
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM {self._t} {where}", *args)
            return [_pg_row(r) for r in rows]

        return await self._call(fn)

    async def get(self, entry_id: int) -> InboxEntry | None:
        rows = await self._select("WHERE id = $1", entry_id)
        return rows[0] if rows else None

    async def find(self, source: str, event_id: str) -> InboxEntry | None:
        rows = await self._select("WHERE source = $1 AND event_id = $2", source, event_id)
        return rows[0] if rows else None

    async def find_event(self, event_id: str) -> list[InboxEntry]:
        return await self._select("WHERE event_id = $1 ORDER BY id", event_id)

    async def list(
        self, status: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[InboxEntry]:
        check_status(status)
        clauses: list[str] = []
        args: list[Any] = []
        if status is not None:
            args.append(status)
            clauses.append(f"status = ${len(args)}")
        if since is not None:
            args.append(_dt(to_epoch(since) or 0.0))
            clauses.append(f"received_at >= ${len(args)}")
        args.append(limit)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return await self._select(f"{where} ORDER BY id DESC LIMIT ${len(args)}", *args)

    async def counts(self) -> dict[str, int]:
        async def fn(conn: Any) -> dict[str, int]:
            out = dict.fromkeys(STATUSES, 0)
            for r in await conn.fetch(
                f"SELECT status, COUNT(*) AS n FROM {self._t} GROUP BY status"
            ):
                out[r["status"]] = int(r["n"])
            return out

        return await self._call(fn)

    async def oldest(self) -> dict[str, float]:
        now = self._clock()

        async def fn(conn: Any) -> dict[str, float]:
            out = {"pending": 0.0, "dispatched": 0.0}
            for status in out:
                t = await conn.fetchval(
                    f"SELECT MIN(updated_at) FROM {self._t} WHERE status = $1", status
                )
                out[status] = 0.0 if t is None else max(0.0, now - t.timestamp())
            return out

        return await self._call(fn)

    async def ping(self) -> None:
        await self._exec(
            f"INSERT INTO \"{self.schema}\".inbox_meta (key, value) VALUES ('ping', $1)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            str(self._clock()),
        )

    async def record_step(
        self, source: str, event_id: str, recipe: str, step: str, outputs: Mapping[str, Any]
    ) -> None:
        await self._exec(
            f'INSERT INTO "{self.schema}".inbox_steps'
            " (source, event_id, recipe, step, outputs, recorded_at) VALUES ($1,$2,$3,$4,$5,$6)"
            " ON CONFLICT (source, event_id, recipe, step)"
            " DO UPDATE SET outputs = excluded.outputs, recorded_at = excluded.recorded_at",
            source,
            event_id,
            recipe,
            step,
            json.dumps(dict(outputs)),
            _dt(self._clock()),
        )

    async def completed_steps(
        self, source: str, event_id: str, recipe: str
    ) -> dict[str, dict[str, Any]]:
        async def fn(conn: Any) -> dict[str, dict[str, Any]]:
            rows = await conn.fetch(
                f'SELECT step, outputs FROM "{self.schema}".inbox_steps WHERE source = $1'
                " AND event_id = $2 AND recipe = $3 ORDER BY recorded_at",
                source,
                event_id,
                recipe,
            )
            return {r["step"]: json.loads(r["outputs"]) for r in rows}

        return await self._call(fn)
