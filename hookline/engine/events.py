"""What `hookline events` shows: each stored event, from the inbox and from Prefect.

The inbox says what the dispatcher decided: the status, the flow run of each matching recipe,
the note of an event no recipe matched, the last error and the failed tries (``attempts``).
Prefect says where each run is now (its state name: Completed, Failed, Running, AwaitingRetry,
Scheduled, or a custom one) and what each step did (its task runs, named by step id:
Completed, Skipped, Replayed, Preview, Failed). Prefect is asked in batches of at most 200 ids
per call (its limit); if it cannot be reached, the inbox view is shown without run states and
a one-line warning says why.

Where Prefect is (`prefect_address`): ``PREFECT_UI_URL`` / ``PREFECT_API_URL`` (environment or
Prefect profile), else what a running `hookline up` wrote to ``HOOKLINE_HOME/up.json``.

Errors are shown as what they are now: ``error`` while the event is ``failed`` (or ``late``),
``previous error`` while it runs again (pending, dispatched), and, once it is done, the failure
it recovered from as ``earlier error (resolved)`` (only `hookline events show`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from hookline.errors import HooklineError
from hookline.inbox import SCHEDULED, Inbox, InboxEntry

CURRENT_ERROR = frozenset({"failed", "late"})
"""Statuses whose ``last_error`` is why the event is in that status now."""
RETRYING = frozenset({"pending", "dispatched"})
"""Statuses in which ``last_error`` is the previous try's error (replayed, retried)."""


def ui_url_from_api(api_url: str | None) -> str | None:
    """Prefect's UI address for an API address (``http://host:4200/api`` -> ``http://host:4200``)."""
    if not api_url:
        return None
    return api_url[: -len("/api")] if api_url.rstrip("/").endswith("/api") else api_url


@dataclass(frozen=True)
class PrefectAddress:
    """Where the Prefect API and UI are (None: unknown)."""

    api_url: str | None
    ui_url: str | None

    def run_url(self, run_id: str) -> str | None:
        return f"{self.ui_url.rstrip('/')}/runs/flow-run/{run_id}" if self.ui_url else None


NO_ADDRESS_HINT = (
    "no Prefect address known: run ids are shown without links or states; set PREFECT_API_URL "
    "(and PREFECT_UI_URL if the UI is elsewhere), or start `hookline up` with this HOOKLINE_HOME"
)
NO_API_HINT = "run states are not shown: PREFECT_API_URL is not set (only PREFECT_UI_URL)"


def prefect_address(home: Path) -> PrefectAddress:
    """Each of the API and UI addresses: as configured (PREFECT_API_URL, PREFECT_UI_URL, the UI
    derived from the API), else as the `hookline up` running with ``home`` wrote them."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    from hookline.engine.up import up_state

    api = PREFECT_API_URL.value()
    ui = PREFECT_UI_URL.value() or ui_url_from_api(api)
    if api and ui:
        return PrefectAddress(api, ui)
    state = up_state(home)
    up_ui = state.get("prefect_ui_url") or None
    up_api = state.get("prefect_api_url") or (f"{up_ui.rstrip('/')}/api" if up_ui else None)
    return PrefectAddress(api or up_api, ui or up_ui)


@dataclass
class PrefectView:
    """What Prefect says of some flow runs; ``problem`` is why it says nothing."""

    runs: dict[str, Any] = field(default_factory=dict)
    """flow run id -> FlowRun"""
    steps: dict[str, list[Any]] = field(default_factory=dict)
    """flow run id -> its latest task run per step, in the order they ran"""
    problem: str | None = None


async def _flow_runs(client: Any, ids: list[UUID]) -> dict[str, Any]:
    from hookline.engine.follow import read_runs

    return {str(run.id): run for run in await read_runs(client, ids)}


async def _task_runs(client: Any, ids: list[UUID]) -> dict[str, list[Any]]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    from hookline.engine.follow import PREFECT_MAX_LIMIT

    latest: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), PREFECT_MAX_LIMIT):
        chunk = ids[start : start + PREFECT_MAX_LIMIT]
        offset = 0
        while True:
            page = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=PREFECT_MAX_LIMIT,
                offset=offset,
            )
            for task in page:
                # a run retried from the UI runs its steps again: the latest one counts
                steps = latest.setdefault(str(task.flow_run_id), {})
                steps.pop(task.name, None)
                steps[task.name] = task
            if len(page) < PREFECT_MAX_LIMIT:
                break
            offset += len(page)
    return {rid: list(steps.values()) for rid, steps in latest.items()}


async def read_prefect(
    address: PrefectAddress, run_ids: Iterable[str], *, steps: bool = False
) -> PrefectView:
    """The flow runs ``run_ids`` (and with ``steps``, their task runs), or why not."""
    import httpx
    from prefect import get_client
    from prefect.settings import (
        PREFECT_API_REQUEST_TIMEOUT,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )

    ids = sorted({UUID(r) for r in run_ids})
    if not ids:
        return PrefectView()
    if not address.api_url:
        # without an address Prefect's client would start a throwaway server of its own
        return PrefectView(problem=NO_ADDRESS_HINT if not address.ui_url else NO_API_HINT)
    settings = {
        PREFECT_API_URL: address.api_url,
        PREFECT_CLIENT_MAX_RETRIES: 0,  # a command answers now or says Prefect is down
        PREFECT_API_REQUEST_TIMEOUT: 10.0,
    }
    try:
        with temporary_settings(updates=settings):
            async with get_client() as client:
                runs = await _flow_runs(client, ids)
                tasks = await _task_runs(client, ids) if steps else {}
    except httpx.HTTPStatusError as exc:  # PrefectHTTPStatusError is one
        return PrefectView(
            problem=f"Prefect at {address.api_url} answered HTTP {exc.response.status_code} "
            f"to {exc.request.url.path}; run states are not shown"
        )
    except (httpx.HTTPError, OSError) as exc:
        return PrefectView(
            problem=f"cannot reach Prefect at {address.api_url} ({type(exc).__name__}: "
            f"{str(exc) or 'no answer'}); run states are not shown"
        )
    return PrefectView(runs, tasks)


def failed_tries(n: int) -> str:
    return f"{n} failed {'try' if n == 1 else 'tries'}"


def split_error(e: InboxEntry) -> tuple[str | None, str | None]:
    """(the current error, an earlier one): which one ``last_error`` is depends on the status."""
    if e.status in CURRENT_ERROR:
        return e.last_error, None
    return None, e.last_error


def note_of(e: InboxEntry) -> str | None:
    """The note of a done entry (a later replay or failure makes an old note stale), or why a
    timer was cancelled."""
    return e.note if e.status in ("done", "cancelled") else None


def status_of(e: InboxEntry, now: float) -> str:
    """The status shown: a timer not due yet is ``scheduled`` (stored as pending)."""
    return SCHEDULED if e.scheduled(now) else e.status


def _in(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m" + (f"{s % 60:02d}s" if s < 600 and s % 60 else "")
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def timer_of(e: InboxEntry) -> dict[str, Any] | None:
    """A timer's key, due time, ``after`` and who started it (from its event), else None."""
    if e.timer_key is None:
        return None
    info: dict[str, Any] = {}
    try:
        stored = json.loads(e.body).get("timer")
        info = stored if isinstance(stored, dict) else {}
    except (ValueError, AttributeError):
        pass
    return {
        "key": e.timer_key,
        "due": e.event_time.isoformat() if e.event_time else None,
        "after": info.get("after"),
        "started_at": info.get("started_at"),
        "started_by": info.get("started_by"),
    }


def timer_line(e: InboxEntry, now: float) -> str | None:
    """``timer KEY due 14:05:00 (in 14m)``, or ``was due`` once it fired or was cancelled."""
    if e.timer_key is None or e.event_time is None:
        return None
    due = e.event_time.timestamp()
    if e.scheduled(now):
        return f"timer {e.timer_key} due {e.event_time:%H:%M:%S} (in {_in(due - now)})"
    return f"timer {e.timer_key} was due {e.event_time:%Y-%m-%d %H:%M:%S}"


def _run_line(recipe: str, run_id: str, view: PrefectView, address: PrefectAddress) -> str:
    """``recipe: State  link``; no state when Prefect was not asked or did not answer."""
    link = address.run_url(run_id) or run_id
    if view.problem is not None:
        return f"{recipe}: {link}"
    run = view.runs.get(run_id)
    state = run.state.name if run is not None and run.state is not None else None
    return f"{recipe}: {state or '(not found in Prefect)'}  {link}"


def _run_json(view: PrefectView, address: PrefectAddress, run_id: str) -> dict[str, Any]:
    run = view.runs.get(run_id)
    state = run.state if run is not None else None
    return {
        "id": run_id,
        "url": address.run_url(run_id),
        "state": state.name if state is not None else None,
        "state_type": state.type.value if state is not None else None,
    }


def entry_json(
    e: InboxEntry,
    view: PrefectView,
    address: PrefectAddress,
    superseded_by: str | None,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """One `hookline events --json` line: what scripts and dashboards need of an entry."""
    error, previous = split_error(e)
    return {
        "event_id": e.event_id,
        "source": e.source,
        "event_type": e.event_type,
        "status": status_of(e, time.time() if now is None else now),
        "timer": timer_of(e),
        "received_at": e.received_at.isoformat(),
        "event_time": e.event_time.isoformat() if e.event_time else None,
        "attempts": e.attempts,
        "runs": {
            recipe: _run_json(view, address, rid) for recipe, rid in sorted(e.flow_runs.items())
        },
        "superseded_by": superseded_by,
        "note": note_of(e),
        "error": error,
        "previous_error": previous,
    }


def entry_lines(
    e: InboxEntry,
    view: PrefectView,
    address: PrefectAddress,
    superseded_by: str | None,
    *,
    now: float | None = None,
) -> list[str]:
    """One entry of the `hookline events` listing."""
    now = time.time() if now is None else now
    status = status_of(e, now)
    head = f"{e.received_at:%Y-%m-%d %H:%M:%S}  {status:<10} {e.source}:{e.event_id}  "
    head += e.event_type + (f"  ({failed_tries(e.attempts)})" if e.attempts else "")
    lines = [head]
    timer = timer_line(e, now)
    if timer:
        lines.append(f"    {timer}")
    if e.superseded_by is not None:
        lines.append(f"    superseded by {superseded_by} (one run covered both)")
    if note_of(e):
        lines.append(f"    {note_of(e)}")
    lines += [f"    {_run_line(r, rid, view, address)}" for r, rid in sorted(e.flow_runs.items())]
    error, previous = split_error(e)
    if error:
        lines.append(f"    error: {error}")
    elif previous and e.status in RETRYING:
        lines.append(f"    previous error: {previous}")
    return lines


# -- hookline events show ---------------------------------------------------------------------


async def resolve(inbox: Inbox, ref: str) -> InboxEntry:
    """The entry ``ref`` names: an event id, or ``source:event_id`` when sources share ids.

    Raises:
        HooklineError: no such event, or the id is in several sources (they are listed).
    """
    found = await inbox.find_event(ref)
    if not found and ":" in ref:
        source, _, event_id = ref.partition(":")
        one = await inbox.find(source, event_id)
        found = [one] if one is not None else []
    if not found:
        raise HooklineError(f"no event {ref!r} in the inbox (see `hookline events`)")
    if len(found) > 1:
        names = ", ".join(f"{e.source}:{e.event_id}" for e in found)
        raise HooklineError(
            f"event id {ref!r} is in {len(found)} sources: {names}; "
            "name one as SOURCE:EVENT_ID, e.g. `hookline events show "
            f"{found[0].source}:{found[0].event_id}`"
        )
    return found[0]


@dataclass
class Detail:
    """Everything `hookline events show` prints of one entry."""

    entry: InboxEntry
    superseded_by: str | None
    covers: list[str]
    step_log: dict[str, dict[str, dict[str, Any]]]
    """recipe -> step id -> outputs, from the inbox step log"""


async def load_detail(inbox: Inbox, entry: InboxEntry) -> Detail:
    by = await inbox.get(entry.superseded_by) if entry.superseded_by is not None else None
    covered = await inbox.covered(entry.id)
    log = {
        recipe: await inbox.completed_steps(entry.source, entry.event_id, recipe)
        for recipe in sorted(entry.flow_runs)
    }
    return Detail(
        entry,
        by.event_id if by is not None else None,
        [f"{c.source}:{c.event_id}" for c in covered],
        log,
    )


def _payload(body: bytes, secrets: list[str]) -> Any:
    """The body's JSON (a Slack form: its parsed payload), else its text."""
    from hookline.bodies import BodyError, decode_body
    from hookline.recipes.dryrun import mask

    try:
        return mask(decode_body(body), secrets)
    except BodyError:
        return mask(body.decode("utf-8", "replace"), secrets)


def _steps_json(
    view: PrefectView, run_id: str, logged: dict[str, dict[str, Any]], secrets: list[str]
) -> list[dict[str, Any]]:
    """Each step's outcome: its task run in Prefect, and whether the step log holds it."""
    from hookline.recipes.dryrun import mask

    out: list[dict[str, Any]] = []
    for task in view.steps.get(run_id, []):
        state = task.state
        out.append(
            {
                "id": task.name,
                "state": state.name if state is not None else None,
                "message": mask(state.message, secrets) if state and state.message else None,
                "in_step_log": task.name in logged,
                "outputs": mask(logged[task.name], secrets) if task.name in logged else None,
            }
        )
    seen = {s["id"] for s in out}
    for step, outputs in logged.items():  # Prefect unreachable, or its runs deleted
        if step not in seen:
            out.append(
                {
                    "id": step,
                    "state": None,
                    "message": "completed (inbox step log)",
                    "in_step_log": True,
                    "outputs": mask(outputs, secrets),
                }
            )
    return out


def detail_json(
    d: Detail,
    view: PrefectView,
    address: PrefectAddress,
    secrets: list[str],
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """`hookline events show --json`."""
    from hookline.recipes.dryrun import mask

    e = d.entry
    out = entry_json(e, view, address, d.superseded_by, now=now)
    error, previous = split_error(e)
    out["error"] = mask(error, secrets) if error else None
    out["previous_error"] = mask(previous, secrets) if previous else None
    out["covers"] = d.covers
    out["headers"] = mask(e.headers, secrets)
    out["payload"] = _payload(e.body, secrets)
    for recipe, run in out["runs"].items():
        run["steps"] = _steps_json(view, run["id"], d.step_log.get(recipe, {}), secrets)
    return out


def detail_lines(
    d: Detail,
    view: PrefectView,
    address: PrefectAddress,
    secrets: list[str],
    *,
    now: float | None = None,
) -> list[str]:
    """`hookline events show`: metadata, payload, runs and their steps."""
    data = detail_json(d, view, address, secrets, now=now)
    e = d.entry
    status = data["status"] + (f" (after {failed_tries(e.attempts)})" if e.attempts else "")
    rows = [
        ("event", f"{e.source}:{e.event_id}"),
        ("type", e.event_type),
        ("status", status),
        ("received", f"{e.received_at:%Y-%m-%d %H:%M:%S %Z}"),
        ("event time", f"{e.event_time:%Y-%m-%d %H:%M:%S %Z}" if e.event_time else "-"),
    ]
    timer = data["timer"]
    if timer is not None:
        rows.append(("timer", f"{timer['key']} (after {timer['after']})"))
        rows.append(("due", timer_line(e, time.time() if now is None else now) or "-"))
        by = timer["started_by"]
        if by:
            rows.append(
                ("started by", f"{by.get('source')}:{by.get('event_id')} recipe {by.get('recipe')}")
            )
    if d.superseded_by:
        rows.append(("superseded by", f"{d.superseded_by} (one run covered both)"))
    if d.covers:
        rows.append(("covers", ", ".join(d.covers)))
    if data["note"]:
        why = " (`hookline try` says why, recipe by recipe)" if e.status == "done" else ""
        rows.append(("note", f"{data['note']}{why}"))
    if data["error"]:
        rows.append(("error", data["error"]))
    elif data["previous_error"]:
        label = "earlier error (resolved)" if e.status == "done" else "earlier error"
        if e.status in RETRYING:
            label = "previous error"
        rows.append((label, data["previous_error"]))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += ["", "payload:"]
    lines += [
        "  " + line
        for line in json.dumps(data["payload"], indent=2, ensure_ascii=False).splitlines()
    ]
    lines += ["", "runs:" if e.flow_runs else "runs: none"]
    for recipe, run in data["runs"].items():
        lines.append(f"  {_run_line(recipe, run['id'], view, address)}")
        steps = run["steps"]
        w = max((len(s["id"]) for s in steps), default=0)
        for s in steps:
            text = f"    {s['id']:<{w}}  {s['state'] or '-':<10}"
            if s["message"]:
                text += f"  {s['message']}"
            lines.append(text.rstrip())
            if s["outputs"]:
                outputs = json.dumps(s["outputs"], sort_keys=True, ensure_ascii=False)
                lines.append(f"    {'':<{w}}  outputs: {outputs}")
    return lines
