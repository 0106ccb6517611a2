"""Dry runs: what a recipe would do for an event, with no side effect and no network.

`preview` matches the recipe, evaluates each step's ``if`` and renders its parameters
exactly as the engine would, except that connector actions are never called: the outputs of
earlier steps are placeholders (``<steps.alert.ts>``) unless the caller supplies fakes (recipe
tests do). Used by ``hookline try`` and ``hookline test-recipes``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from hookline.recipes.errors import RecipeError
from hookline.recipes.event import Event
from hookline.recipes.matcher import MatchResult, match_recipe
from hookline.recipes.models import Recipe, Step
from hookline.recipes.templating import (
    Mrkdwn,
    UnsetPlaceholder,
    _describe,
    build_context,
    render_value,
)

MASK = "••••••"
_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSW(OR)?D|API_?KEY|PRIVATE|CREDENTIAL|AUTH|SIGNATURE|COOKIE|SESSION)",
    re.IGNORECASE,
)


class Placeholder(Mrkdwn):
    """A stand-in for a value only a real run knows (``<steps.alert.ts>``); shown as is, also
    in Slack text (where a real value would be escaped)."""

    __slots__ = ()


def _contains_placeholder(value: Any) -> bool:
    if isinstance(value, Placeholder | UnsetPlaceholder):
        return True
    if isinstance(value, str):
        return any(m in value for m in ("<steps.", "<run.", "<failure.", "<env."))
    if isinstance(value, Mapping):
        return any(_contains_placeholder(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_contains_placeholder(v) for v in value)
    return False


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Values of environment variables whose names look secret (token, password, key...)."""
    return sorted(
        {v for k, v in environ.items() if _SECRET_NAME.search(k) and len(v) >= 6},
        key=len,
        reverse=True,
    )


def mask(value: Any, secrets: list[str], key: str | None = None) -> Any:
    """Hide secrets: values under secret-looking keys, and any known secret value in text."""
    if key is not None and _SECRET_NAME.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, MASK)
        return value
    if isinstance(value, Mapping):
        return {k: mask(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, secrets) for v in value]
    return value


@dataclass
class StepPreview:
    """What one step would do."""

    step: Step
    status: str  # "run" | "skipped" | "error" | "not reached"
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RecipePreview:
    """What a recipe would do for one event."""

    recipe: Recipe
    match: MatchResult
    order_key: str | None = None
    coalesce_key: str | None = None
    steps: list[StepPreview] = field(default_factory=list)
    on_failure: list[StepPreview] = field(default_factory=list)
    failed_step: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No error evaluating or rendering anything."""
        return not self.errors and self.match.error is None


def placeholders(step: Step) -> dict[str, Any]:
    """Placeholder outputs for ``step``'s action."""
    names = tuple(getattr(step.action, "outputs", ()) or ())
    return {n: Placeholder(f"<steps.{step.id}.{n}>") for n in names}


def dry_environ(recipe: Recipe, environ: Mapping[str, str]) -> dict[str, Any]:
    """``environ`` plus a placeholder for each allowed variable that is not set: it renders as
    ``<env.NAME: not set>`` but is absent for ``| default`` and ``is defined``, as in a run."""
    env: dict[str, Any] = dict(environ)
    for name in recipe.env_allowed:
        if name not in env:
            env[name] = UnsetPlaceholder(name=name)
    return env


def _preview_step(
    step: Step,
    ctx: dict[str, Any],
    fakes: Mapping[str, Mapping[str, Any]],
) -> StepPreview:
    try:
        go = step.should_run(ctx)
    except RecipeError as exc:
        return StepPreview(step, "error", error=str(exc))
    if not go:
        return StepPreview(step, "skipped", reason=f'if "{step.if_}" is false')
    params: dict[str, Any] = {}
    for name, compiled in step.compiled_with.items():
        where = f"{step.where()}: with.{name}"
        try:
            value = render_value(compiled, ctx)
        except Exception as exc:
            return StepPreview(step, "error", params=params, error=f"{where}: {_describe(exc)}")
        try:
            params[name] = step.coerce(name, value, where=where)
        except RecipeError as exc:
            if _contains_placeholder(value):
                params[name] = value  # the real value is known only at run time
            else:
                return StepPreview(step, "error", params=params, error=str(exc))
    outputs = dict(placeholders(step))
    outputs.update(fakes.get(step.id, {}))
    reason = f'if "{step.if_}" is true' if step.if_ is not None else ""
    return StepPreview(step, "run", reason=reason, params=params, outputs=outputs)


def preview(
    recipe: Recipe,
    event: Event,
    *,
    environ: Mapping[str, str] | None = None,
    outputs: Mapping[str, Mapping[str, Any]] | None = None,
    force: bool = False,
) -> RecipePreview:
    """Dry-run ``recipe`` for ``event``.

    Args:
        environ: source of ``env.NAME`` (default ``os.environ``); allowed names that are
            unset render as ``<env.NAME: not set>``.
        outputs: fake step outputs ``{step_id: {name: value}}``; the rest are placeholders.
        force: preview the steps even when the recipe does not match.
    """
    # values may be UnsetPlaceholder: build_context copies them as they are
    env = cast(Mapping[str, str], dry_environ(recipe, os.environ if environ is None else environ))
    fakes = outputs or {}
    result = RecipePreview(recipe, match_recipe(recipe, event, environ=env))
    if result.match.error is not None:
        result.errors.append(str(result.match.error))
    if not result.match.matched and not force:
        return result
    run = {k: Placeholder(f"<run.{k}>") for k in ("id", "name", "url")}
    base = build_context(event, recipe=recipe, environ=env)
    try:
        result.order_key = recipe.order_key(base)
        result.coalesce_key = recipe.coalesce_key(base)
    except RecipeError as exc:
        result.errors.append(str(exc))
    done: dict[str, dict[str, Any]] = {}
    failure: dict[str, Any] | None = None
    for step in recipe.steps:
        if failure is not None:
            result.steps.append(
                StepPreview(step, "not reached", reason=f"step '{failure['step']}' failed")
            )
            continue
        ctx = build_context(event, recipe=recipe, steps=done, run=run, environ=env)
        sp = _preview_step(step, ctx, fakes)
        result.steps.append(sp)
        if sp.status == "run":
            done[step.id] = sp.outputs
        elif sp.status == "error":
            result.errors.append(sp.error or "")
            if not step.continue_on_error:
                failure = {"step": step.id, "uses": step.uses, "error": sp.error, "attempts": 1}
                result.failed_step = step.id
    if failure is None:
        failure = {k: Placeholder(f"<failure.{k}>") for k in ("step", "uses", "error", "attempts")}
    fdone = dict(done)
    for step in recipe.on_failure:
        ctx = build_context(
            event, recipe=recipe, steps=fdone, run=run, failure=failure, environ=env
        )
        sp = _preview_step(step, ctx, fakes)
        result.on_failure.append(sp)
        if sp.status == "run":
            fdone[step.id] = sp.outputs
        elif sp.status == "error":
            result.errors.append(sp.error or "")
    return result


def to_jsonable(p: RecipePreview, *, secrets: list[str] | None = None) -> dict[str, Any]:
    """A JSON-friendly, masked view of a preview (``hookline try --json``)."""
    sec = secrets or []

    def steps(items: list[StepPreview]) -> list[dict[str, Any]]:
        return [
            {
                "id": s.step.id,
                "uses": s.step.uses,
                "status": s.status,
                "reason": s.reason,
                "with": mask(s.params, sec),
                "outputs": {k: str(v) for k, v in s.outputs.items()},
                "error": s.error,
            }
            for s in items
        ]

    return {
        "recipe": p.recipe.name,
        "path": str(p.recipe.path),
        "matched": p.match.matched,
        "reason": mask(p.match.reason, sec),
        "order_key": p.order_key,
        "coalesce_key": p.coalesce_key,
        "steps": steps(p.steps),
        "on_failure": steps(p.on_failure),
        "errors": [mask(e, sec) for e in p.errors],
    }
