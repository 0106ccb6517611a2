"""The Prefect flow that runs one recipe for one event.

One flow run per (event, recipe), one task run per step, named after the step id, so the
Prefect UI reads like the recipe. Retries live here, in `_attempts`, and nowhere else: the
connectors turn SDK-internal retries off and Prefect task retries stay at 0, because stacking
layers multiplies attempts and Prefect's fixed delays cannot honour a vendor's Retry-After.
Only `TransientError` (and a step timeout) is retried; a `PermanentError` fails the step at
once. Each attempt is logged on the step's task run, so retries are visible in the UI.

Steps that succeeded are written to the inbox's step log; a replay of the same event reuses
their outputs instead of calling the vendor again (a replay after a ServiceNow outage opens
the incident without re-sending the Slack alert).

What each step does (skipped by its ``if``, its parameters, or failed with which text) and how
the steps follow each other are decided by `hookline.recipes.steps`, the code the dry run
(``hookline try``, ``hookline test-recipes``) uses too; this module adds what only a run has.

A vendor call runs in a worker thread, which cannot be cancelled: the vendor client gets the
step's timeout as its own (so the call itself ends), and a retry never starts while the
previous attempt's thread is still running. Templates are rendered in a thread too, under the
template time limit, so a hostile payload cannot stall the worker's event loop.

The flow trusts none of its parameters: anyone who can create runs of the deployment could
pass any. It checks that the inbox entry has that ``source`` and ``event_id`` and that the
recipe matches the event, and refuses the run otherwise.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.states import Cancelled, Completed, Failed

from hookline.connectors import Action, get_action
from hookline.connectors.errors import NotConfiguredError, PermanentError, TransientError
from hookline.flows import artifact, runtime
from hookline.flows.errors import FlowError
from hookline.recipes import Event, Recipe, Step
from hookline.recipes.dryrun import secret_values
from hookline.recipes.matcher import match_recipe
from hookline.recipes.reload import not_loaded
from hookline.recipes.steps import Chain, decide

FLOW_NAME = "hookline-recipe"
PREVIEW_STATE = "Preview"
"""The name of the Completed state of a run in which a step's connector was not configured
(`hookline up`'s preview mode): nothing was sent to it."""
PREVIEW_TAG = "preview"
#: How long past its timeout a vendor call may take to end by its client's own timeout
#: before the step gives up on it (and does not retry: the call might still go through).
LATE_CALL_GRACE_SECONDS = 10.0


class RecipeRunError(FlowError):
    """A recipe run failed; the message names the step and the vendor's error."""


class RunRefusedError(RecipeRunError):
    """The run's parameters do not describe a dispatch Hookline would make; nothing ran."""


@dataclass
class StepRecord:
    """What happened to one step: the run's story, its artifact and its failure context."""

    id: str
    uses: str
    status: str = "pending"  # completed | skipped | failed | replayed | preview
    attempts: int = 0
    error: str | None = None
    reason: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    seconds: float = 0.0


def step_key(source: str, event_id: str, recipe: str, step_id: str) -> str:
    """The idempotency key a connector receives: stable across retries and replays."""
    return f"{source}:{event_id}:{recipe}:{step_id}"


async def _client(rt: runtime.Runtime, connector: str, timeout: float) -> Any:
    if connector in runtime.INBOX_CLIENTS:  # built on the event loop that owns the inbox
        return rt.client(connector)
    # may read a Prefect Secret block or log in to Salesforce: not on the event loop
    return await asyncio.to_thread(rt.client, connector, timeout)


async def _call(func: Any, client: Any, kwargs: dict[str, Any], timeout: float) -> Any:
    """Run one vendor call in a thread, at most ``timeout`` s, and never leave it running.

    The thread cannot be cancelled. Its client times out by itself (it was built with the
    step's timeout), so after ``timeout`` we wait for the thread to end before the caller may
    retry; two attempts never overlap. A call that succeeds late keeps its result: retrying
    it would do it twice.
    """
    future = asyncio.ensure_future(asyncio.to_thread(func, client, **kwargs))
    done, _ = await asyncio.wait({future}, timeout=timeout)
    if future in done:
        return future.result()
    get_run_logger().warning(
        "the call is still running after the step's %gs timeout; waiting for its client to "
        "give up before anything else",
        timeout,
    )
    done, _ = await asyncio.wait({future}, timeout=timeout + LATE_CALL_GRACE_SECONDS)
    if future not in done:
        raise PermanentError(
            f"timed out after {timeout:g}s and the call was still running "
            f"{timeout + LATE_CALL_GRACE_SECONDS:g}s later; not retried, so that it cannot "
            "happen twice",
            connector="hookline",
        )
    try:
        return future.result()
    except TransientError as exc:
        raise TimeoutError(str(exc)) from exc


async def _attempts(
    rt: runtime.Runtime,
    step: Step,
    record: StepRecord,
    action: Action,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    logger = get_run_logger()
    rnd = random.Random()
    policy = step.retry
    timeout = float(step.timeout)
    while True:
        record.attempts += 1
        try:
            client = await _client(rt, action.connector, timeout)
            result = await _call(action.func, client, kwargs, timeout)
            return dict(result) if result is not None else {}
        except (TransientError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                message = f"timed out after {timeout:g}s"
                if str(exc):
                    message += f" ({exc})"
                retry_after = None
            else:
                message = str(exc)
                retry_after = exc.retry_after
            if not policy.retries_after(record.attempts):
                record.error = message
                raise
            delay = policy.delay(record.attempts, retry_after=retry_after, rnd=rnd)
            logger.warning(
                "attempt %d/%d failed (%s); retrying in %.1fs",
                record.attempts,
                policy.attempts,
                message,
                delay,
            )
            await rt.sleep(delay)
        except Exception as exc:
            record.error = str(exc) or type(exc).__name__
            raise


@task(name="step", persist_result=False, cache_policy=NO_CACHE, retries=0)
async def _step(
    step: Step,
    context: dict[str, Any],
    record: StepRecord,
    key: str,
    already: dict[str, Any] | None,
    log_key: tuple[str, str, str] | None,
) -> Any:
    rt = runtime.current()
    logger = get_run_logger()
    start = time.perf_counter()
    try:
        if already is not None:
            record.status, record.outputs = "replayed", already
            record.reason = "already succeeded for this event; outputs reused"
            logger.info("step %r already succeeded for this event; not repeated", step.id)
            return Completed(name="Replayed", message=record.reason, data=already)
        # `if` and `with` are decided as the dry run decides them (hookline.recipes.steps), in
        # a thread, under the template time limits: a hostile payload must not stall the
        # worker's event loop, which runs every other recipe run.
        decision = await asyncio.to_thread(decide, step, context)
        if decision.outcome == "skip":
            record.status, record.reason = "skipped", decision.reason
            return Completed(name="Skipped", message=record.reason)
        if decision.error is not None:
            record.status, record.error = "failed", decision.message
            raise decision.error
        params = decision.params
        action = get_action(step.uses)
        kwargs = dict(params)
        if "idempotency_key" in action.params.parameters:
            kwargs["idempotency_key"] = key
        try:
            record.outputs = await _attempts(rt, step, record, action, kwargs)
        except NotConfiguredError as exc:
            # Preview is for a connector nobody configured; a half-configured one, a missing
            # Secret block or a bad value is a failure that must reach on-call.
            if not (rt.preview and exc.unset):
                record.status, record.error = "failed", str(exc)
                raise
            record.attempts, record.error = 0, None
            record.status, record.params = "preview", params
            record.outputs = {name: f"<preview:{step.id}.{name}>" for name in action.outputs}
            record.reason = f"preview: {action.connector} is not configured; nothing was sent"
            logger.warning(
                "PREVIEW %s: would call %s with %s",
                step.id,
                step.uses,
                json.dumps(params, default=str, sort_keys=True),
            )
            return Completed(name="Preview", message=record.reason)
        except Exception:
            record.status = "failed"
            raise
        record.status = "completed"
        if log_key is not None:
            await rt.inbox.record_step(*log_key, record.id, record.outputs)
        return record.outputs
    finally:
        record.seconds = time.perf_counter() - start


async def _run_steps(
    chain: Chain,
    steps: list[Step],
    *,
    rt: runtime.Runtime,
    done: dict[str, dict[str, Any]],
    prefix: str = "",
) -> tuple[list[StepRecord], dict[str, Any] | None]:
    """Run one section of ``chain`` (its steps, or its on_failure steps with ``prefix``
    "on_failure."): in order, until the first failure not marked continue_on_error
    (hookline.recipes.steps has the rules). Returns the records and, for ``steps``, the
    failure or the cancellation that stopped it."""
    records: list[StepRecord] = []
    event, recipe, run = chain.event, chain.recipe, chain.run or {}
    for step, context in chain.walk(steps):
        name = f"{prefix}{step.id}"
        if not prefix and run.get("id") and runtime.cancel_requested(run["id"]):
            # cancelled from Prefect (the UI's Cancel): stop between steps, never mid-call
            return records, {"step": step.id, "uses": step.uses, "cancelled": True}
        record = StepRecord(id=name, uses=step.uses)
        records.append(record)
        key = step_key(event.source, event.event_id, recipe.name, name)
        # on_failure steps are in the step log too (as "on_failure.<id>"): a run executed
        # twice, or resent after its worker died, tells on-call once; `hookline replay`
        # clears them (Inbox.requeue), so a replay that fails again tells on-call again.
        log_key = (event.source, event.event_id, recipe.name)
        call: Any = _step.with_options(name=name, task_run_name=name)
        state: State[Any] = await call(
            step,
            context,
            record,
            key,
            done.get(name),
            log_key,
            return_state=True,
        )
        if state.is_completed() and record.status in ("completed", "replayed", "preview"):
            chain.ran(step, record.outputs)
            continue
        if record.status == "skipped":
            continue
        if record.status != "failed":  # crashed or cancelled under us
            record.status = "failed"
            record.error = record.error or (state.message or state.type.value)
        record.reason = chain.failed(step, record.error or "", record.attempts)
    return records, None if prefix else chain.failure


async def _verified(
    rt: runtime.Runtime, entry_id: Any, source: Any, event_id: Any, recipe: Any
) -> tuple[Recipe, Event]:
    """The recipe and event this run's parameters name, once they are checked to be a dispatch
    Hookline would make: whoever can create runs of the deployment chooses the parameters.

    Raises:
        RunRefusedError: the entry does not exist or is another event, or the recipe is not
            loaded or does not match the event.
    """
    said = f"entry_id={entry_id!r} source={source!r} event_id={event_id!r} recipe={recipe!r}"
    refused = (
        "refused: this run's parameters ({}) {}; Hookline's dispatcher never creates such a run"
    )
    if not isinstance(entry_id, int) or isinstance(entry_id, bool):
        raise RunRefusedError(refused.format(said, "give an entry_id that is not an integer"))
    entry = await rt.inbox.get(entry_id)
    if entry is None:
        raise RunRefusedError(
            refused.format(said, f"name inbox entry {entry_id}, which does not exist")
        )
    if entry.source != source or entry.event_id != event_id:
        raise RunRefusedError(
            refused.format(
                said,
                f"do not match inbox entry {entry_id}, which is {entry.source}:{entry.event_id}",
            )
        )
    rec = await rt.recipe(recipe) if isinstance(recipe, str) else None
    if rec is None:
        raise RecipeRunError(not_loaded(rt.recipes, recipe))
    event = _event_of(entry)
    # `when` may be slow on a hostile payload: evaluate it in a thread, under its time limit
    match = await asyncio.to_thread(match_recipe, rec, event, environ=rt.environ)
    if not match.matched:
        # the dispatcher may have matched a version of the recipe this worker has not loaded yet
        newer = await rt.recipe(rec.name, look=True)
        if newer is not None and newer is not rec:
            rec = newer
            match = await asyncio.to_thread(match_recipe, rec, event, environ=rt.environ)
    if not match.matched:
        raise RunRefusedError(
            refused.format(
                said, f"name recipe {recipe!r}, which does not match the event: {match.reason}"
            )
            + f" (unless the recipe changed after the dispatch: this worker runs recipes "
            f"{rt.recipes.short_fingerprint})"
        )
    return rec, event


def _event_of(entry: Any) -> Event:
    return Event.from_body(
        source=entry.source, event_type=entry.event_type, event_id=entry.event_id, body=entry.body
    )


@flow(name=FLOW_NAME, persist_result=False, validate_parameters=False, log_prints=False)
async def recipe_flow(entry_id: int, source: str, event_id: str, recipe: str) -> State[Any]:
    """Run recipe ``recipe`` for the inbox entry ``entry_id``."""
    rt = runtime.current()
    ctx = FlowRunContext.get()
    flow_run = ctx.flow_run if ctx is not None else None
    run_id = str(flow_run.id) if flow_run is not None else ""
    run = {
        "id": run_id,
        "name": flow_run.name if flow_run is not None else "",
        "url": rt.run_url(run_id) if run_id else None,
    }
    rec, event = await _verified(rt, entry_id, source, event_id, recipe)
    covered = [_event_of(e) for e in await rt.inbox.covered(entry_id)]
    done = await rt.inbox.completed_steps(source, event_id, recipe)
    chain = Chain(rec, event, environ=rt.recipe_env(), run=run, covered=covered)
    records, failure = await _run_steps(chain, list(rec.steps), rt=rt, done=done)
    if failure is not None and failure.get("cancelled"):
        return await _finish(rt, rec, event, run, records, failure, covered)
    if failure is not None and rec.on_failure:
        more, _ = await _run_steps(
            chain, list(rec.on_failure), rt=rt, done=done, prefix="on_failure."
        )
        records += more
    return await _finish(rt, rec, event, run, records, failure, covered)


async def _finish(
    rt: runtime.Runtime,
    rec: Recipe,
    event: Event,
    run: dict[str, Any],
    records: list[StepRecord],
    failure: dict[str, Any] | None,
    covered: list[Event],
) -> State[Any]:
    """Write the run's artifact and end the run: Cancelled, Failed, Preview (a Completed state
    whose steps sent nothing to an unconfigured connector) or Completed.

    A failure ends in a returned Failed state, not a raised error: the failed step's task run
    already logged its traceback, and a raise would log a second, longer one for the flow.
    """
    earlier = await _earlier_runs(rt, rec, event, run["id"])
    markdown = await asyncio.to_thread(
        artifact.story,
        rec,
        event,
        run,
        records,
        failure,
        covered,
        settings=artifact.payload_settings(rt.config),
        secrets=secret_values(rt.environ),
        earlier=earlier,
    )
    await acreate_markdown_artifact(
        key=artifact.artifact_key(rec.name, event.event_id),
        markdown=markdown,
        description=artifact.description(rec, event, failure, records),
    )
    statuses = {r.id: r.status for r in records}
    if failure is not None and failure.get("cancelled"):
        return Cancelled(message=f"cancelled before step {failure['step']!r}")
    if failure is not None:
        return Failed(
            message=f"step {failure['step']!r} ({failure['uses']}) failed after "
            f"{failure['attempts']} attempt(s): {failure['error']}",
            data=statuses,
        )
    preview = artifact.preview_summary(records)
    if preview is None:
        return Completed(data=statuses)
    await _tag_preview(run["id"])
    return Completed(
        name=PREVIEW_STATE,
        message=f"{preview}. Configure {', '.join(artifact.connectors_previewed(records))} "
        f"(docs/connectors.md), restart, then `{artifact.replay_command(event)}` sends it",
        data=statuses,
    )


async def _earlier_runs(
    rt: runtime.Runtime, rec: Recipe, event: Event, flow_run_id: str
) -> list[dict[str, Any]]:
    """The event's other runs of this recipe, newest first, for a run that is not the
    event's first (a replay, a resend, or a Retry from the UI): one query, only then."""
    ctx = FlowRunContext.get()
    current = ctx.flow_run if ctx is not None else None
    if not flow_run_id or current is None:
        return []
    retried = (current.run_count or 0) > 1
    if "rerun" not in (current.tags or []) and not retried:
        return []  # the common case: the event's first run, nothing to look up
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    earlier: list[dict[str, Any]] = []
    if retried:
        earlier.append(
            {"id": flow_run_id, "state": f"this run, attempt {current.run_count}", "url": None}
        )
    try:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(
                        all_=[f"event-id:{event.event_id}", f"recipe:{rec.name}"]
                    )
                ),
                sort=FlowRunSort.START_TIME_DESC,
                limit=20,
            )
    except Exception as exc:  # the artifact is still written, without the list
        get_run_logger().warning("could not list this event's earlier runs: %s", exc)
        return earlier
    for r in runs:
        if str(r.id) != flow_run_id:
            state = r.state.name if r.state is not None else "unknown"
            earlier.append({"id": str(r.id), "state": state, "url": rt.run_url(str(r.id))})
    return earlier


async def _tag_preview(flow_run_id: str) -> None:
    """Add the ``preview`` tag to the run, so the runs list can be filtered by it."""
    if not flow_run_id:
        return
    from prefect import get_client

    ctx = FlowRunContext.get()
    tags = list(ctx.flow_run.tags) if ctx is not None and ctx.flow_run is not None else []
    try:
        async with get_client() as client:
            await client.update_flow_run(UUID(flow_run_id), tags=[*tags, PREVIEW_TAG])
    except Exception as exc:  # the state name says "Preview" anyway
        get_run_logger().warning("could not tag the run %r: %s", PREVIEW_TAG, exc)
