"""What a template sees: `build_context` for one event, recipe, run and the steps so far.

``env`` and ``steps`` are `Explained` mappings: a missing key is undefined (``StrictUndefined``
fails on it) with a message that says why and how to guard it, rather than Jinja's bare
"has no attribute".
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hookline.recipes.event import Event
    from hookline.recipes.models import Recipe


class Explained(dict[str, Any]):
    """A context mapping whose missing keys get an ops-friendly message: `missing`, with
    ``{key}`` for the key asked for."""

    missing = "{key} is undefined"

    def explain(self, key: str) -> str:
        return self.missing.format(key=key)


class EnvVars(Explained):
    """``env``: the variables the recipe's hookline.yaml allows, and that are set."""

    missing = (
        "env.{key} is not set: the environment has no {key} (or the env: list of "
        "hookline.yaml does not allow it); set it, or write env.{key} | default(...)"
    )


class StepOutputs(Explained):
    """``steps``: the outputs of the earlier steps that ran, by step id."""

    missing = (
        "steps.{key} is undefined: step '{key}' did not run (skipped by its if:, or "
        "after it in the recipe); guard with `steps.{key} is defined`"
    )


def coalesced_summary(event: Event, covered: Sequence[Event] = ()) -> dict[str, Any]:
    """What a run of ``event`` covers: itself and the events it superseded, by event time."""

    def when(e: Event) -> str:
        return e.timestamp_text or ""

    burst = sorted(covered, key=when) + [event]
    times = [when(e) for e in burst if when(e)]
    return {
        "count": len(burst),
        "first": min(times) if times else None,
        "last": max(times) if times else None,
        "events": [
            {"event_id": e.event_id, "timestamp": when(e) or None, "data": e.data} for e in burst
        ],
    }


def build_context(
    event: Event,
    *,
    recipe: Recipe | None = None,
    steps: Mapping[str, Mapping[str, Any]] | None = None,
    run: Mapping[str, Any] | None = None,
    failure: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    covered: Sequence[Event] = (),
) -> dict[str, Any]:
    """The variables a template sees for ``event``.

    Args:
        steps: outputs of the steps that completed so far, ``{step_id: {output: value}}``;
            a step that did not run is absent (templates test ``steps.x is defined``).
        run: ``{"id", "name", "url"}`` of the flow run, when there is one.
        failure: ``{"step", "uses", "error", "attempts"}`` inside ``on_failure``.
        covered: the events a ``coalesce`` run covers (superseded by this one), any order;
            templates see ``coalesced``: ``count`` (with this event), ``first`` / ``last``
            (event times) and ``events`` (``event_id``, ``timestamp``, ``data``, in event
            order, this event last). Without a burst it describes this event alone.
        environ: where ``env.NAME`` values come from (default ``os.environ``); only the
            names the recipe's hookline.yaml allows are copied, so a template never sees
            any other variable (a secret in particular).
    """
    source_env = os.environ if environ is None else environ
    allowed: Iterable[str] = recipe.env_allowed if recipe is not None else ()
    env = {name: source_env[name] for name in allowed if name in source_env}
    ctx: dict[str, Any] = {
        "event": event.envelope,
        "data": event.data,
        "account": event.account,
        "event_type": event.event_type,
        "event_id": event.event_id,
        "timestamp": event.timestamp_text,
        "source": event.source,
        "steps": StepOutputs({k: dict(v) for k, v in (steps or {}).items()}),
        "env": EnvVars(env),
        "coalesced": coalesced_summary(event, covered),
    }
    if recipe is not None:
        ctx["recipe"] = {
            "name": recipe.name,
            "description": recipe.description,
            "path": str(recipe.path) if recipe.path is not None else None,
        }
    if run is not None:
        ctx["run"] = dict(run)
    if failure is not None:
        ctx["failure"] = dict(failure)
    return ctx
