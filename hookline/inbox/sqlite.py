"""The SQLite inbox: one file under ``HOOKLINE_HOME``, WAL journal, group commit.

`SQLiteInbox` turns each call into a write (a job over the connection, or a put's row) for
its writer (`hookline.inbox.sqlite_writer`), which commits it with whatever else is queued;
claiming lives in `hookline.inbox.sqlite_lanes`, the tables in `hookline.inbox.sqlite_schema`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from hookline.inbox.base import (
    COLUMNS,
    COUNTED,
    SCHEDULED,
    UNTRIED_TIMER,
    Clock,
    Inbox,
    InboxEntry,
    NewEntry,
    check_status,
    committed,
    to_epoch,
)
from hookline.inbox.batching import PutResult
from hookline.inbox.lanes import SEQUENCE_BATCH, Sequenced, Sequencer, sequence_all
from hookline.inbox.sqlite_lanes import claim_due, leave_lanes
from hookline.inbox.sqlite_schema import connect, to_entry
from hookline.inbox.sqlite_timers import cancel_timer, start_timer
from hookline.inbox.sqlite_writer import LoopWriter, ThreadWriter, Write, Writer
from hookline.inbox.transition import Transition

T = TypeVar("T")
Synchronous = Literal["FULL", "NORMAL"]
WriterName = Literal["thread", "loop"]
WRITERS: dict[str, type[Writer]] = {"thread": ThreadWriter, "loop": LoopWriter}
"""``writer`` -> its strategy (see `hookline.inbox.sqlite_writer`)."""


class SQLiteInbox(Inbox):
    """SQLite in WAL mode, one writer, group commit.

    Two writers, same guarantees (answer only after commit, one transaction per batch):
    ``thread`` (default) writes on a dedicated thread that takes whatever is queued; any
    event loop in any thread may call it. ``loop`` (what `hookline serve` uses) writes on the
    event loop that opened it: everything submitted during one turn of the loop is written
    together, then COMMIT (the fsync) runs on a helper thread while the next batch gathers;
    when another process holds the write lock it retries every 2 ms instead of blocking the
    loop. It may only be used from that one loop (InboxError otherwise).

    The settings are fixed here: the properties of the same names only read them.

    Args:
        path: the database file; its folder is created.
        synchronous: ``FULL`` (default: fsync at every commit, so a committed batch survives
            power loss) or ``NORMAL`` (survives a process crash, may lose the last commits on
            power loss). Group commit makes FULL cheap: one fsync per batch.
        max_batch: most writes in one transaction.
        busy_timeout: seconds to wait for another process holding the write lock.
        writer: ``thread`` or ``loop`` (see above).

    Raises:
        ValueError: ``synchronous`` or ``writer`` is none of the above.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Synchronous = "FULL",
        max_batch: int = 512,
        busy_timeout: float = 5.0,
        writer: WriterName = "thread",
        clock: Clock | None = None,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        if writer not in WRITERS:
            raise ValueError(f"writer must be {' or '.join(WRITERS)}, not {writer!r}")
        super().__init__(clock=clock)
        self._path = Path(path)
        self._description = f"sqlite:{self._path}"
        self._synchronous: Synchronous = synchronous
        self._writer_name: WriterName = writer
        self._writer = WRITERS[writer](
            self._connect, path=self._path, max_batch=max_batch, busy_timeout=busy_timeout
        )

    @property
    def path(self) -> Path:
        return self._path

    @property
    def synchronous(self) -> Synchronous:
        return self._synchronous

    @property
    def writer(self) -> WriterName:
        return self._writer_name

    @property
    def max_batch(self) -> int:
        return self._writer.max_batch

    @property
    def busy_timeout(self) -> float:
        return self._writer.busy_timeout

    @property
    def batches(self) -> int:
        """Transactions committed so far (for tests and the bench)."""
        return self._writer.batches

    @property
    def description(self) -> str:
        return self._description

    async def _open(self) -> None:
        await self._writer.start()

    async def _close(self) -> None:
        await self._writer.stop()

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout)

    async def _submit(self, write: Write, timeout: float | None = None) -> Any:
        if not self._opened:
            await self.open()
        return await committed(self._writer.submit(write), timeout, self.description)

    async def _run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """``job``'s result, once the transaction it ran in has committed."""
        result: T = await self._submit(job)
        return result

    # -- the API --------------------------------------------------------------------------
    def _queue_put(self, row: NewEntry) -> asyncio.Future[PutResult]:
        # Written with every other queued put of the batch in one multi-row INSERT.
        return self._writer.submit(row)

    async def start_timer(
        self, key: str, event_id: str, event_type: str, body: bytes, due: float
    ) -> tuple[int, bool]:
        now = self._clock()
        return await self._run(
            lambda conn: start_timer(conn, key, event_id, event_type, body, due, now)
        )

    async def cancel_timer(self, key: str) -> bool:
        now = self._clock()
        return await self._run(lambda conn: cancel_timer(conn, key, now))

    async def claim(
        self, limit: int, *, lease_seconds: float, sequencer: Sequencer | None = None
    ) -> list[InboxEntry]:
        plan: list[tuple[InboxEntry, Sequenced]] | None = None
        if sequencer is not None:
            # Sequencing renders templates: on the event loop, not on the writer. The claim
            # re-checks each entry, so a second process racing here is harmless, and SQLite
            # ids grow in commit order, so the lowest unsequenced ids come first.
            fresh = await self._select(
                "WHERE status = 'pending' AND seq <> 1 ORDER BY id LIMIT ?", (SEQUENCE_BATCH,)
            )
            # in a thread: a sequencer evaluates recipes' `when` and keys, which may take up
            # to their time limit on a hostile payload; the event loop serves the receiver
            plan = await asyncio.to_thread(sequence_all, fresh, sequencer)
        job = functools.partial(
            claim_due, now=self._clock(), limit=limit, lease_seconds=lease_seconds, plan=plan
        )
        return await self._run(job)

    async def _update(self, sql: str, params: tuple[Any, ...]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(sql, params)

        await self._run(job)

    async def _transition(self, entry_id: int, change: Transition, expect: str | None) -> bool:
        sets, values = change.sets(lambda n: "?", float, "json_patch(flow_runs, {})")
        sql = f"UPDATE inbox SET {sets} WHERE id = ?"
        values.append(entry_id)
        if expect is not None:
            sql += " AND status = ?"
            values.append(expect)

        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(sql, values)
            if cur.rowcount and change.leave_lanes:
                leave_lanes(conn, entry_id)
            return bool(cur.rowcount)

        return await self._run(job)

    async def requeue(self, entry_id: int) -> None:
        now = self._clock()

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE inbox SET status = 'pending', lease_until = NULL, not_before = ?,"
                " updated_at = ?, seq = 2, superseded_by = NULL WHERE id = ?",
                (now, now, entry_id),
            )
            leave_lanes(conn, entry_id)
            conn.execute(
                "DELETE FROM inbox_steps WHERE step LIKE 'on_failure.%' AND (source, event_id)"
                " IN (SELECT source, event_id FROM inbox WHERE id = ?)",
                (entry_id,),
            )

        await self._run(job)

    async def reopen(self, entry_id: int, recipe: str, flow_run_id: str) -> bool:
        now = self._clock()

        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE inbox SET status = 'dispatched', lease_until = NULL, updated_at = ?"
                " WHERE id = ? AND status IN ('done', 'failed') AND EXISTS"
                " (SELECT 1 FROM json_each(flow_runs) WHERE key = ? AND value = ?)",
                (now, entry_id, recipe, flow_run_id),
            )
            if not cur.rowcount:
                return False
            conn.execute(
                "DELETE FROM inbox_steps WHERE recipe = ? AND step LIKE 'on_failure.%'"
                " AND (source, event_id) IN (SELECT source, event_id FROM inbox WHERE id = ?)",
                (recipe, entry_id),
            )
            return True

        return await self._run(job)

    async def dispatched(self, after_id: int = 0, limit: int = 500) -> list[InboxEntry]:
        return await self._select(
            "WHERE status = 'dispatched' AND id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )

    async def settled(self, after_id: int, limit: int, *, done_since: datetime) -> list[InboxEntry]:
        return await self._select(
            "WHERE id > ? AND flow_runs <> '{}' AND (status = 'failed'"
            " OR (status = 'done' AND updated_at >= ?)) ORDER BY id LIMIT ?",
            (after_id, to_epoch(done_since), limit),
        )

    async def covered(self, entry_id: int) -> list[InboxEntry]:
        return await self._select(
            "WHERE superseded_by = ? ORDER BY COALESCE(event_time, received_at), id", (entry_id,)
        )

    async def claim_run(self, flow_run_id: str, state_id: str, worker: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO inbox_run_claims (flow_run_id, state_id, worker, claimed_at)"
                " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                (flow_run_id, state_id, worker, self._clock()),
            )
            return bool(cur.rowcount)

        return await self._run(job)

    async def run_claims(self, flow_run_ids: Iterable[str]) -> dict[str, str]:
        ids = list(flow_run_ids)

        def job(conn: sqlite3.Connection) -> dict[str, str]:
            out: dict[str, str] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for rid, worker in conn.execute(
                    "SELECT flow_run_id, worker FROM inbox_run_claims WHERE flow_run_id IN"
                    f" ({','.join('?' * len(chunk))}) ORDER BY claimed_at",
                    chunk,
                ):
                    out[rid] = worker
            return out

        return await self._run(job)

    async def _select(self, where: str, params: tuple[Any, ...]) -> list[InboxEntry]:
        def job(conn: sqlite3.Connection) -> list[InboxEntry]:
            rows = conn.execute(f"SELECT {COLUMNS} FROM inbox {where}", params).fetchall()
            return [to_entry(r) for r in rows]

        return await self._run(job)

    async def get(self, entry_id: int) -> InboxEntry | None:
        rows = await self._select("WHERE id = ?", (entry_id,))
        return rows[0] if rows else None

    async def find(self, source: str, event_id: str) -> InboxEntry | None:
        rows = await self._select("WHERE source = ? AND event_id = ?", (source, event_id))
        return rows[0] if rows else None

    async def find_event(self, event_id: str) -> list[InboxEntry]:
        return await self._select("WHERE event_id = ? ORDER BY id", (event_id,))

    async def list(
        self, status: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[InboxEntry]:
        check_status(status)
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(to_epoch(since))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return await self._select(f"{where} ORDER BY id DESC LIMIT ?", (*params, limit))

    async def counts(self) -> dict[str, int]:
        now = self._clock()

        def job(conn: sqlite3.Connection) -> dict[str, int]:
            out = dict.fromkeys(COUNTED, 0)
            for status, n in conn.execute("SELECT status, COUNT(*) FROM inbox GROUP BY status"):
                out[status] = n
            # timers not due yet: few, found by their index
            (timers,) = conn.execute(
                f"SELECT COUNT(*) FROM inbox WHERE {UNTRIED_TIMER} AND status = 'pending'"
                " AND not_before > ?",
                (now,),
            ).fetchone()
            out[SCHEDULED] = timers
            out["pending"] -= timers
            return out

        return await self._run(job)

    async def oldest(self) -> dict[str, float]:
        now = self._clock()

        def job(conn: sqlite3.Connection) -> dict[str, float]:
            out = {"pending": 0.0, "dispatched": 0.0}
            for status in out:
                # a timer waits from its due time, not from when it was started
                (t,) = conn.execute(
                    f"SELECT MIN(CASE WHEN {UNTRIED_TIMER} THEN MAX(updated_at, not_before)"
                    " ELSE updated_at END) FROM inbox WHERE status = ?"
                    f" AND NOT ({UNTRIED_TIMER} AND not_before > ?)",
                    (status, now),
                ).fetchone()
                out[status] = 0.0 if t is None else max(0.0, now - t)
            return out

        return await self._run(job)

    async def ping(self) -> None:
        await self._update(
            "INSERT INTO inbox_meta (key, value) VALUES ('ping', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(self._clock()),),
        )

    async def record_step(
        self, source: str, event_id: str, recipe: str, step: str, outputs: Mapping[str, Any]
    ) -> None:
        await self._update(
            "INSERT INTO inbox_steps (source, event_id, recipe, step, outputs, recorded_at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (source, event_id, recipe, step)"
            " DO UPDATE SET outputs = excluded.outputs, recorded_at = excluded.recorded_at",
            (source, event_id, recipe, step, json.dumps(dict(outputs)), self._clock()),
        )

    async def completed_steps(
        self, source: str, event_id: str, recipe: str
    ) -> dict[str, dict[str, Any]]:
        def job(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            rows = conn.execute(
                "SELECT step, outputs FROM inbox_steps WHERE source = ? AND event_id = ?"
                " AND recipe = ? ORDER BY recorded_at",
                (source, event_id, recipe),
            ).fetchall()
            return {step: json.loads(outputs) for step, outputs in rows}

        return await self._run(job)

    # -- retention --------------------------------------------------------------------------
    async def _count_unchanged(self, statuses: tuple[str, ...], before: float) -> int:
        marks = ",".join("?" * len(statuses))

        def job(conn: sqlite3.Connection) -> int:
            (n,) = conn.execute(
                f"SELECT COUNT(*) FROM inbox WHERE status IN ({marks}) AND updated_at < ?",
                (*statuses, before),
            ).fetchone()
            return int(n)

        return await self._run(job)

    async def _delete_unchanged(self, statuses: tuple[str, ...], before: float, limit: int) -> int:
        marks = ",".join("?" * len(statuses))

        def job(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                f"SELECT id, source, event_id FROM inbox WHERE status IN ({marks})"
                " AND updated_at < ? ORDER BY id LIMIT ?",
                (*statuses, before, limit),
            ).fetchall()
            conn.executemany(
                "DELETE FROM inbox_steps WHERE source = ? AND event_id = ?",
                [(source, event_id) for _, source, event_id in rows],
            )
            conn.executemany("DELETE FROM inbox WHERE id = ?", [(i,) for i, _, _ in rows])
            return len(rows)

        return await self._run(job)
