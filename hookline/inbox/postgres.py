"""The PostgreSQL inbox (``HOOKLINE_DATABASE_URL=postgresql://...``): an asyncpg pool, the
tables in one schema (`hookline.inbox.postgres_schema`), claiming in
`hookline.inbox.postgres_lanes`. Every statement but a put autocommits; puts are
group-committed: all puts queued on the loop go in one multi-row INSERT.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from hookline.inbox.base import (
    COLUMNS,
    COUNTED,
    SCHEDULED,
    UNTRIED_TIMER,
    Clock,
    Inbox,
    InboxEntry,
    InboxError,
    NewEntry,
    check_status,
    to_epoch,
)
from hookline.inbox.batching import (
    Gathered,
    PutKey,
    PutResult,
    cannot_store,
    missing,
    put_results,
    settle,
)
from hookline.inbox.lanes import Sequencer
from hookline.inbox.postgres_lanes import claim_due, leave_lanes
from hookline.inbox.postgres_schema import PG_SCHEMA_VERSION, create_or_upgrade, dt, to_entry
from hookline.inbox.postgres_timers import cancel_timer, start_timer
from hookline.inbox.transition import Transition

__all__ = ["PG_SCHEMA_VERSION", "PostgresInbox"]

T = TypeVar("T")
_PUTS_PER_INSERT = 1000


class PostgresInbox(Inbox):
    """PostgreSQL through an asyncpg pool; tables live in ``schema`` (created if missing).

    Args:
        dsn: ``postgresql://user:pass@host:port/db``.
        schema: the PostgreSQL schema holding the tables (tests use one per run).
        min_size, max_size: the pool's connections.
        max_inflight: put batches written at once (the next one gathers meanwhile).

    Raises:
        ValueError: ``schema`` is not made of letters, digits and '_'.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "hookline",
        min_size: int = 2,
        max_size: int = 16,
        max_inflight: int = 2,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        if not schema.replace("_", "").isalnum():
            raise ValueError(f"schema {schema!r}: use letters, digits and '_' only")
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.max_inflight = max_inflight
        self._pool: Any = None
        self._t = f'"{schema}".inbox'
        u = urllib.parse.urlsplit(dsn)  # every put with a timeout names it: made once
        self._description = f"postgresql://{u.hostname or 'localhost'}:{u.port or 5432}{u.path}"
        self._description += f" schema {schema}"
        self._puts: Gathered[NewEntry] = Gathered()
        self._inflight = 0
        self._flushers: set[asyncio.Task[None]] = set()

    @property
    def description(self) -> str:
        return self._description

    async def _open(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_size, max_size=self.max_size
            )
            async with self._pool.acquire() as conn:
                await create_or_upgrade(conn, self.schema)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise InboxError(f"cannot open the inbox at {self.description}: {exc}") from exc

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

    # -- puts: group commit -----------------------------------------------------------------
    def _queue_put(self, row: NewEntry) -> asyncio.Future[PutResult]:
        loop = asyncio.get_running_loop()
        request = self._puts.add(row, loop)
        if self._inflight < self.max_inflight:
            self._inflight += 1
            self._flushers.add(loop.create_task(self._flush()))
        return request.future

    async def _flush(self) -> None:
        """Every put queued so far in one INSERT (one round trip, one commit); up to
        ``max_inflight`` batches in flight, so the next one gathers meanwhile."""
        import asyncpg

        try:
            await asyncio.sleep(0)  # let this turn of the loop queue its puts first
            while self._puts.waiting():
                batch = self._puts.take(_PUTS_PER_INSERT)
                rows = [r.item for r in batch]
                results: list[PutResult | InboxError]
                try:
                    results = list(await self._insert(rows))
                except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
                    err = InboxError(f"inbox {self.description}: {type(exc).__name__}: {exc}")
                    results = [err] * len(batch)  # unreachable: every put of the batch retries
                except Exception:  # whatever it is, every caller's future must be settled
                    # One bad row (a NUL in a text column, say) fails the whole INSERT: retry
                    # the rows one by one, so it fails alone instead of 503-ing its batch.
                    results = [await self._insert_one(row) for row in rows]
                for r, result in zip(batch, results, strict=True):
                    if isinstance(result, InboxError):
                        r.error = result
                    else:
                        r.result = result
                settle(batch)
        finally:
            self._inflight -= 1
            self._flushers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _insert_one(self, row: NewEntry) -> PutResult | InboxError:
        """One row on its own (after its batch failed): its result, or its own error."""
        try:
            [result] = await self._insert([row])
        except Exception as exc:  # becomes this put's error, never a hang
            return cannot_store(f"inbox {self.description}", row, exc)
        return result

    async def _insert(self, rows: list[NewEntry]) -> list[PutResult]:
        cols: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
        cols[3] = [dt(t) for t in cols[3]]  # received_at
        cols[4] = [None if t is None else dt(t) for t in cols[4]]  # event_time
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
                    *cols,
                )
            }
            keys = missing(rows, inserted)
            existing: dict[PutKey, int] = {}
            if keys:
                for r in await conn.fetch(
                    f"SELECT id, source, event_id FROM {self._t} WHERE (source, event_id) IN"
                    " (SELECT * FROM unnest($1::text[], $2::text[]))",
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                ):
                    existing[(r["source"], r["event_id"])] = int(r["id"])
        return put_results(rows, inserted, existing)

    # -- timers (hookline.inbox.postgres_timers) -------------------------------------------
    async def start_timer(
        self, key: str, event_id: str, event_type: str, body: bytes, due: float
    ) -> tuple[int, bool]:
        now = self._clock()
        return await self._call(
            lambda conn: start_timer(conn, self.schema, key, event_id, event_type, body, due, now)
        )

    async def cancel_timer(self, key: str) -> bool:
        now = self._clock()
        return await self._call(lambda conn: cancel_timer(conn, self.schema, key, now))

    # -- the rest of the API ----------------------------------------------------------------
    async def claim(
        self, limit: int, *, lease_seconds: float, sequencer: Sequencer | None = None
    ) -> list[InboxEntry]:
        now = self._clock()

        async def fn(conn: Any) -> list[InboxEntry]:
            return await claim_due(
                conn,
                self.schema,
                now=now,
                limit=limit,
                lease_seconds=lease_seconds,
                sequencer=sequencer,
            )

        return await self._call(fn)

    async def _exec(self, sql: str, *args: Any) -> None:
        async def fn(conn: Any) -> None:
            await conn.execute(sql, *args)

        await self._call(fn)

    async def _transition(self, entry_id: int, change: Transition, expect: str | None) -> bool:
        sets, values = change.sets(lambda n: f"${n}", dt, "flow_runs || {}::jsonb")
        values.append(entry_id)
        sql = f"UPDATE {self._t} SET {sets} WHERE id = ${len(values)}"
        if expect is not None:
            values.append(expect)
            sql += f" AND status = ${len(values)}"

        async def fn(conn: Any) -> bool:
            async with conn.transaction():
                status = await conn.execute(sql, *values)
                changed = bool(status.split()[-1] != "0")
                if changed and change.leave_lanes:
                    await leave_lanes(conn, self.schema, entry_id)
                return changed

        return await self._call(fn)

    async def requeue(self, entry_id: int) -> None:
        now = dt(self._clock())
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
                await leave_lanes(conn, self.schema, entry_id)
                await conn.execute(
                    f"DELETE FROM {s}.inbox_steps st USING {self._t} i WHERE i.id = $1"
                    " AND st.source = i.source AND st.event_id = i.event_id"
                    " AND st.step LIKE 'on_failure.%'",
                    entry_id,
                )

        await self._call(fn)

    async def reopen(self, entry_id: int, recipe: str, flow_run_id: str) -> bool:
        now = dt(self._clock())
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
                dt(self._clock()),
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
            return [to_entry(r) for r in rows]

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
            args.append(dt(to_epoch(since) or 0.0))
            clauses.append(f"received_at >= ${len(args)}")
        args.append(limit)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return await self._select(f"{where} ORDER BY id DESC LIMIT ${len(args)}", *args)

    async def counts(self) -> dict[str, int]:
        now = self._clock()

        async def fn(conn: Any) -> dict[str, int]:
            out = dict.fromkeys(COUNTED, 0)
            for r in await conn.fetch(
                f"SELECT status, COUNT(*) AS n FROM {self._t} GROUP BY status"
            ):
                out[r["status"]] = int(r["n"])
            timers = await conn.fetchval(
                f"SELECT COUNT(*) FROM {self._t} WHERE {UNTRIED_TIMER}"
                " AND status = 'pending' AND not_before > $1",
                dt(now),
            )
            out[SCHEDULED] = int(timers)
            out["pending"] -= int(timers)
            return out

        return await self._call(fn)

    async def oldest(self) -> dict[str, float]:
        now = self._clock()

        async def fn(conn: Any) -> dict[str, float]:
            out = {"pending": 0.0, "dispatched": 0.0}
            for status in out:
                # a timer waits from its due time, not from when it was started
                t = await conn.fetchval(
                    f"SELECT MIN(CASE WHEN {UNTRIED_TIMER} THEN GREATEST(updated_at, not_before)"
                    f" ELSE updated_at END) FROM {self._t}"
                    f" WHERE status = $1 AND NOT ({UNTRIED_TIMER} AND not_before > $2)",
                    status,
                    dt(now),
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
            dt(self._clock()),
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

    # -- retention --------------------------------------------------------------------------
    async def _count_unchanged(self, statuses: tuple[str, ...], before: float) -> int:
        async def fn(conn: Any) -> int:
            n = await conn.fetchval(
                f"SELECT COUNT(*) FROM {self._t}"
                " WHERE status = ANY($1::text[]) AND updated_at < $2",
                list(statuses),
                dt(before),
            )
            return int(n)

        return await self._call(fn)

    async def _delete_unchanged(self, statuses: tuple[str, ...], before: float, limit: int) -> int:
        async def fn(conn: Any) -> int:
            n = await conn.fetchval(
                f"WITH gone AS (DELETE FROM {self._t} WHERE id IN (SELECT id FROM {self._t}"
                " WHERE status = ANY($1::text[]) AND updated_at < $2 ORDER BY id LIMIT $3)"
                " RETURNING source, event_id),"
                f' steps AS (DELETE FROM "{self.schema}".inbox_steps s USING gone g'
                " WHERE s.source = g.source AND s.event_id = g.event_id RETURNING 1)"
                " SELECT COUNT(*) FROM gone",
                list(statuses),
                dt(before),
                limit,
            )
            return int(n)

        return await self._call(fn)
