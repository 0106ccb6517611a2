"""Dry runs: what a recipe would do for an event, with no side effect and no network.

`preview` matches the recipe and walks its steps with the engine's own step semantics
(`hookline.recipes.steps`): each step's ``if``, its parameters rendered and converted, its
errors (with the text a real run would record), what stops the recipe and what
``on_failure`` would send. Only the connector calls are left out: the outputs of earlier
steps are placeholders (``<steps.alert.ts>``) unless the caller supplies fakes (recipe tests
do), and so are ``run.*`` and, when nothing failed, ``failure.*``. ``env.NAME`` is read as
the engine reads it: unset, it is missing (an error unless a template guards it with
``| default(...)`` or ``is defined``). Used by ``hookline try`` and ``hookline test-recipes``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hookline.recipes.errors import RecipeError
from hookline.recipes.event import Event
from hookline.recipes.matcher import MatchResult, match_recipe
from hookline.recipes.models import Recipe, Step
from hookline.recipes.steps import Chain, decide
from hookline.recipes.templating import Mrkdwn, build_context

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
    if isinstance(value, Placeholder):
        return True
    if isinstance(value, str):
        return any(m in value for m in ("<steps.", "<run.", "<failure."))
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


def _preview_section(
    chain: Chain,
    steps: Sequence[Step],
    fakes: Mapping[str, Mapping[str, Any]],
    errors: list[str],
    failure: Mapping[str, Any] | None = None,
) -> list[StepPreview]:
    out: list[StepPreview] = []
    for step, ctx in chain.walk(steps, failure=failure):
        d = decide(step, ctx, keep=_contains_placeholder)
        if d.outcome == "skip":
            out.append(StepPreview(step, "skipped", reason=d.reason))
        elif d.outcome == "run":
            outputs = {**placeholders(step), **fakes.get(step.id, {})}
            chain.ran(step, outputs)
            out.append(StepPreview(step, "run", reason=d.reason, params=d.params, outputs=outputs))
        else:
            errors.append(d.message)
            # a dry run makes no attempt: failure.attempts is 0, as for a real run that
            # fails before calling the vendor
            went_on = chain.failed(step, d.message, attempts=0)
            out.append(StepPreview(step, "error", reason=went_on or "", error=d.message))
    later, why = chain.not_reached(steps)
    out.extend(StepPreview(step, "not reached", reason=why) for step in later)
    return out


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
        environ: source of ``env.NAME`` (default ``os.environ``), as the engine's.
        outputs: fake step outputs ``{step_id: {name: value}}``; the rest are placeholders.
        force: preview the steps even when the recipe does not match.
    """
    env = os.environ if environ is None else environ
    fakes = outputs or {}
    result = RecipePreview(recipe, match_recipe(recipe, event, environ=env))
    if result.match.error is not None:
        result.errors.append(str(result.match.error))
    if not result.match.matched and not force:
        return result
    base = build_context(event, recipe=recipe, environ=env)
    try:
        result.order_key = recipe.order_key(base)
        result.coalesce_key = recipe.coalesce_key(base)
    except RecipeError as exc:
        result.errors.append(str(exc))
    run = {k: Placeholder(f"<run.{k}>") for k in ("id", "name", "url")}
    chain = Chain(recipe, event, environ=env, run=run)
    result.steps = _preview_section(chain, recipe.steps, fakes, result.errors)
    if chain.failure is not None:
        result.failed_step = chain.failure["step"]
    unknown = {k: Placeholder(f"<failure.{k}>") for k in ("step", "uses", "error", "attempts")}
    result.on_failure = _preview_section(chain, recipe.on_failure, fakes, result.errors, unknown)
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
