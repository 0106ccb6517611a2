"""Group commit, shared by both backends: a caller's future is settled only after the
transaction holding its write has committed, and one transaction carries many callers.

- `Request`: one queued write and the future its caller awaits (in the caller's loop).
- `Gathered`: the requests queued on one event loop until the next batch takes them (the
  SQLite loop writer's statements, PostgreSQL's puts).
- `settle`: hand each caller of a written batch its result or error.
- `missing` / `put_results`: what a multi-row ``INSERT ... ON CONFLICT (source, event_id) DO
  NOTHING RETURNING id, source, event_id`` means for each put; `cannot_store`: the error of
  the one put whose row a store refused (its batch is retried row by row, so it fails alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from hookline.inbox.base import InboxError, NewEntry

P = TypeVar("P")
PutKey = tuple[str, str]
PutResult = tuple[bool, int]


class Request(Generic[P]):
    """One queued write and the future its caller awaits; the writer fills ``result`` or
    ``error``, and `settle` hands it over in the caller's loop."""

    __slots__ = ("item", "loop", "future", "result", "error")

    def __init__(self, item: P, loop: asyncio.AbstractEventLoop) -> None:
        self.item = item
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.result: Any = None
        self.error: BaseException | None = None


class Gathered(Generic[P]):
    """Requests queued on one event loop, oldest first, until a batch takes them."""

    __slots__ = ("_requests",)

    def __init__(self) -> None:
        self._requests: list[Request[P]] = []

    def __bool__(self) -> bool:
        return bool(self._requests)

    def add(self, item: P, loop: asyncio.AbstractEventLoop) -> Request[P]:
        """Queue ``item`` for a caller in ``loop`` (the running one)."""
        request = Request(item, loop)
        self._requests.append(request)
        return request

    def waiting(self) -> bool:
        """Whether a caller still waits; the ones that gave up (timed out, cancelled) are
        dropped: they were told 503 and retry, so their writes must not happen."""
        self._requests = [r for r in self._requests if not r.future.done()]
        return bool(self._requests)

    def take(self, most: int | None = None) -> list[Request[P]]:
        """The ``most`` oldest requests (all without ``most``), out of the queue."""
        n = len(self._requests) if most is None else most
        batch = self._requests[:n]
        del self._requests[:n]
        return batch


def settle(requests: Iterable[Request[Any]]) -> None:
    """Resolve each request's future with its result or error (in the caller's loop)."""
    for r in requests:
        if r.future.done():  # the caller gave up (cancelled / timed out)
            continue
        if r.error is not None:
            r.future.set_exception(r.error)
        else:
            r.future.set_result(r.result)


def missing(rows: Sequence[NewEntry], inserted: Mapping[PutKey, int]) -> list[PutKey]:
    """The keys of ``rows`` the INSERT did not insert (stored before): look their ids up."""
    if len(inserted) == len(rows):  # the usual batch: every row new
        return []
    return [key for key in (r[:2] for r in rows) if key not in inserted]


def put_results(
    rows: Sequence[NewEntry], inserted: Mapping[PutKey, int], existing: Mapping[PutKey, int]
) -> list[PutResult]:
    """(inserted, entry id) for each of ``rows``: ``inserted`` maps the keys the INSERT
    returned, ``existing`` the ids of the `missing` ones. Of two puts of one key in a batch,
    the first inserted it and the second is a duplicate of it."""
    if len(inserted) == len(rows):  # the usual batch: every row new (so keys are distinct)
        return [(True, inserted[r[:2]]) for r in rows]
    first = dict(inserted)
    out: list[PutResult] = []
    for r in rows:
        key = r[:2]
        entry_id = first.pop(key, None)
        if entry_id is not None:
            out.append((True, entry_id))
        else:
            out.append((False, existing[key] if key in existing else inserted[key]))
    return out


def cannot_store(where: str, row: NewEntry, exc: BaseException) -> InboxError:
    """The error of the one put whose row the store refused (a lone surrogate, a NUL)."""
    return InboxError(
        f"{where}: cannot store {row.source}/{row.event_id!r}: {type(exc).__name__}: {exc}"
    )
