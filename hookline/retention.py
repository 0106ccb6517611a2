"""Inbox retention: `prune` deletes finished entries older than a cut-off (``hookline prune``).

Only final statuses are deleted (`PRUNABLE`: done, failed, late), never ``pending`` or
``dispatched``: an entry still to run, or running, is kept whatever its age. The age is the
time since the entry last changed (``updated_at``: when it became final, or was last
replayed), so a replayed event gets its full retention again. The step log of a deleted
entry (the outputs `hookline replay` reuses) goes with it. Deletes run in batches of
`BATCH` rows, one transaction each, so a large prune never holds the SQLite writer for long.

Run it from cron, e.g. daily: ``hookline prune --older-than 30d``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from hookline.cli import CommandError
from hookline.inbox import Inbox, PostgresInbox, SQLiteInbox

PRUNABLE: tuple[str, ...] = ("done", "failed", "late")
BATCH = 5000


async def prune(inbox: Inbox, older_than: timedelta, *, dry_run: bool = False) -> int:
    """Delete the entries in a final status unchanged for ``older_than``; how many (or, with
    ``dry_run``, how many would be).

    Raises:
        InboxError: the inbox cannot be read or written.
        ValueError: ``older_than`` is negative.
    """
    if older_than < timedelta(0):
        raise ValueError(f"older_than must not be negative, not {older_than}")
    await inbox.open()
    cutoff = inbox._clock() - older_than.total_seconds()
    if isinstance(inbox, SQLiteInbox):
        return await _prune_sqlite(inbox, cutoff, dry_run)
    if isinstance(inbox, PostgresInbox):
        return await _prune_postgres(inbox, cutoff, dry_run)
    raise TypeError(f"cannot prune a {type(inbox).__name__}")


async def _prune_sqlite(inbox: SQLiteInbox, cutoff: float, dry_run: bool) -> int:
    marks = ",".join("?" * len(PRUNABLE))
    where = f"status IN ({marks}) AND updated_at < ?"

    def count(conn: sqlite3.Connection) -> int:
        return int(
            conn.execute(
                f"SELECT COUNT(*) FROM inbox WHERE {where}", (*PRUNABLE, cutoff)
            ).fetchone()[0]
        )

    def batch(conn: sqlite3.Connection) -> int:
        rows = conn.execute(
            f"SELECT id, source, event_id FROM inbox WHERE {where} ORDER BY id LIMIT ?",
            (*PRUNABLE, cutoff, BATCH),
        ).fetchall()
        conn.executemany(
            "DELETE FROM inbox_steps WHERE source = ? AND event_id = ?",
            [(source, event_id) for _, source, event_id in rows],
        )
        conn.executemany("DELETE FROM inbox WHERE id = ?", [(i,) for i, _, _ in rows])
        return len(rows)

    if dry_run:
        return await inbox._submit(count)
    total = 0
    while True:
        n = await inbox._submit(batch)
        total += n
        if n < BATCH:
            return total


async def _prune_postgres(inbox: PostgresInbox, cutoff: float, dry_run: bool) -> int:
    t, steps = inbox._t, f'"{inbox.schema}".inbox_steps'
    when = datetime.fromtimestamp(cutoff, UTC)
    where = "status = ANY($1::text[]) AND updated_at < $2"

    async def count(conn: Any) -> int:
        return int(await conn.fetchval(f"SELECT COUNT(*) FROM {t} WHERE {where}", PRUNABLE, when))

    async def batch(conn: Any) -> int:
        return int(
            await conn.fetchval(
                f"WITH gone AS (DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE {where}"
                " ORDER BY id LIMIT $3) RETURNING source, event_id),"
                f" steps AS (DELETE FROM {steps} s USING gone g"
                " WHERE s.source = g.source AND s.event_id = g.event_id RETURNING 1)"
                " SELECT COUNT(*) FROM gone",
                list(PRUNABLE),
                when,
                BATCH,
            )
        )

    if dry_run:
        return await inbox._call(count)
    total = 0
    while True:
        n = await inbox._call(batch)
        total += n
        if n < BATCH:
            return total


def parse_age(value: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s`` or ``2w`` as a timedelta.

    Raises:
        click.BadParameter: anything else.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = value[:-1], value[-1:]
    if unit in units and number.replace(".", "", 1).isdigit():
        return timedelta(seconds=float(number) * units[unit])
    raise click.BadParameter(f"{value!r}: use a number and a unit, e.g. 30d, 12h, 90m, 2w")


@click.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Age since the entry last changed: 30d, 12h, 90m, 2w.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
def prune_command(older_than: str, dry_run: bool) -> None:
    """Delete done/failed/late inbox entries (and their step logs) older than --older-than;
    pending and dispatched entries are always kept."""
    from hookline.config import get_settings
    from hookline.errors import HooklineError
    from hookline.inbox import open_inbox

    age = parse_age(older_than)

    async def main() -> tuple[int, str]:
        inbox = open_inbox(get_settings())
        try:
            return await prune(inbox, age, dry_run=dry_run), inbox.description
        finally:
            await inbox.close()

    try:
        n, where = asyncio.run(main())
    except HooklineError as exc:
        raise CommandError(str(exc)) from None
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {n} {'entry' if n == 1 else 'entries'} ({'/'.join(PRUNABLE)}, unchanged for"
        f" {older_than}) from {where}"
    )
