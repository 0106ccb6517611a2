"""Lanes and bursts: the rules, and the part of sequencing that does not touch a database.

**Lanes** (``order_by``). `claim` with a *sequencer* first sequences the pending entries it
has not seen, strictly in arrival (id) order: the sequencer names each entry's lane keys, and
the entry joins those lanes (`inbox_lanes`, rows of active entries only). An entry is then
claimable only when no active entry of any of its lanes comes before it by (event time, id)
and no other entry of those lanes has been claimed (started) and is still active,
so a lane runs one event at a time, in event-time order, across the whole inbox, every
recipe, restarts and lease expiry. On PostgreSQL, sequencing and claiming run under one
advisory lock, so several dispatchers share lanes safely. Claiming an entry records it as
its lanes' high-water mark (`inbox_lane_marks`); an entry sequenced after a *later* event of
its lane was claimed is a late arrival: with ``skip_if_late`` it ends ``late`` (recorded,
listed, replayable by hand, not run), else it runs.

**Coalescing.** A sequencer may also give an entry a coalesce key (with a quiet period and
a longest wait). Entries of one key that are waiting form a burst (`inbox_coalesce`): only
the latest (by event time, id) is claimable, and only once no entry of the key arrived for
``quiet`` seconds or the first has waited ``max_wait``; the lane order between them does not
apply (they are one run). Claiming it marks the others ``superseded`` by it; `covered` lists
them for its run.

Each backend keeps lanes in its tables and claims with SQL (`hookline.inbox.sqlite_lanes`,
`hookline.inbox.postgres_lanes`); what a sequencer says of an entry (`Sequenced`), which
entries are late (`is_late`) and in what order lanes run (`entry_time`) is decided here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hookline.inbox.base import InboxEntry, from_epoch

log = logging.getLogger("hookline.inbox")


@dataclass(frozen=True)
class Sequenced:
    """What a sequencer says of one entry: its lane keys, and whether it is skipped when an
    event of one of its lanes with a later event time was already claimed."""

    lanes: tuple[str, ...] = ()
    skip_if_late: bool = True
    coalesce: str | None = None
    """Events of one coalesce key that wait together run once, for the latest of them."""
    quiet: float = 0.0
    """Coalesce: the latest runs once no event of its key arrived for this long ..."""
    max_wait: float = 0.0
    """... or once the first of them has waited this long."""


Sequencer = Callable[[InboxEntry], Sequenced]

SEQUENCE_BATCH = 200


def entry_time(entry: InboxEntry) -> float:
    """The time an entry is ordered by in its lanes: its event time, else its arrival."""
    return (entry.event_time or entry.received_at).timestamp()


def sequence_all(
    entries: list[InboxEntry], sequencer: Sequencer
) -> list[tuple[InboxEntry, Sequenced]]:
    out = []
    for e in entries:
        try:
            s = sequencer(e)
        except Exception:  # the dispatcher reports a bad event when it dispatches it
            log.exception("cannot compute the lanes of entry %s; it joins none", e.id)
            s = Sequenced()
        out.append((e, s))
    return out


def _late_message(entry: InboxEntry, lane: str, mark: tuple[float, int]) -> str:
    return (
        f"late: lane {lane!r} already ran a later event (entry {mark[1]}, event time "
        f"{from_epoch(mark[0])}); not run, so it cannot undo newer state "
        f"(recipe setting late: skip). Replay it by hand: hookline replay {entry.event_id}"
    )


def is_late(
    entry: InboxEntry, seq: Sequenced, marks: Mapping[str, tuple[float, int]]
) -> str | None:
    """The late message if ``entry`` comes after its lanes' high-water marks, else None."""
    if not seq.skip_if_late:
        return None
    mine = (entry_time(entry), entry.id)
    for lane in seq.lanes:
        mark = marks.get(lane)
        if mark is not None and mark > mine:
            return _late_message(entry, lane, mark)
    return None
