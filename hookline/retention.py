"""Inbox retention policy for ``hookline prune``: what is deleted, and after how long.

Only final statuses are deleted (`PRUNABLE`: done, failed, late, cancelled timers), never
``pending`` or ``dispatched``: an entry still to run, or running, is kept whatever its age.
The age is the time since the entry last changed (``updated_at``: when it became final, or was last
replayed), so a replayed event gets its full retention again. The step log of a deleted
entry (the outputs `hookline replay` reuses) goes with it. `Inbox.prune` does the deleting,
in batches (one transaction each), so a large prune never holds the SQLite writer for long.

Run it from cron, e.g. daily: ``hookline prune --older-than 30d``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import click

from hookline.cli import CommandError

PRUNABLE: tuple[str, ...] = ("done", "failed", "late", "cancelled")


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
    """Delete done/failed/late/cancelled inbox entries (and their step logs) older than
    --older-than; pending and dispatched entries are always kept."""
    from hookline.config import get_settings
    from hookline.errors import HooklineError
    from hookline.inbox import open_inbox

    age = parse_age(older_than)

    async def main() -> tuple[int, str]:
        inbox = open_inbox(get_settings())
        try:
            n = await inbox.prune(age, statuses=PRUNABLE, dry_run=dry_run)
            return n, inbox.description
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
