"""Which recipes an event triggers, and why (not).

Order is deterministic: recipes sorted by name. A `when` that raises on a real event is never
swallowed: the `MatchResult` carries the error (``matched=False``, ``error=...``), the
reason names the recipe and the event id, and it is logged at ERROR level.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from hookline.recipes.errors import RecipeEvalError
from hookline.recipes.event import Event
from hookline.recipes.models import Recipe
from hookline.recipes.templating import build_context, describe_error

log = logging.getLogger("hookline.recipes")


@dataclass(frozen=True)
class MatchResult:
    """Whether ``recipe`` handles the event, and a one-line reason either way."""

    recipe: Recipe
    matched: bool
    reason: str
    error: RecipeEvalError | None = None
    stage: str = ""  # what decided: "enabled", "type", "source", "when", or "" (all passed)


def type_matches(patterns: Iterable[str], event_type: str) -> str | None:
    """The first pattern (exact or glob, case-sensitive) matching ``event_type``, or None."""
    for p in patterns:
        if p == event_type or fnmatchcase(event_type, p):
            return p
    return None


def match_recipe(
    recipe: Recipe, event: Event, *, environ: Mapping[str, str] | None = None
) -> MatchResult:
    """Match one recipe: enabled, event type, source, then ``when``."""
    if not recipe.enabled:
        return MatchResult(recipe, False, "disabled (enabled: false)", stage="enabled")
    pattern = type_matches(recipe.on, event.event_type)
    if pattern is None:
        return MatchResult(
            recipe,
            False,
            f"event type {event.event_type!r} is not in on: {list(recipe.on)}",
            stage="type",
        )
    why = f"type {event.event_type!r} matches {pattern!r}"
    if recipe.source is not None:
        if event.source not in recipe.source:
            return MatchResult(
                recipe,
                False,
                f"source {event.source!r} is not {' or '.join(recipe.source)}",
                stage="source",
            )
        why += f", source is {event.source!r}"
    if recipe.compiled_when is None:
        return MatchResult(recipe, True, why)
    ctx = build_context(event, recipe=recipe, environ=environ)
    try:
        value = recipe.compiled_when.evaluate(ctx)
    except Exception as exc:
        err = RecipeEvalError(
            f"recipe '{recipe.name}' ({recipe.path}): when {recipe.when!r} failed on event "
            f"{event.event_id!r} ({event.source}/{event.event_type}): {describe_error(exc)}"
        )
        err.__cause__ = exc
        log.error("%s", err)
        return MatchResult(recipe, False, f"error: {err}", err, stage="when")
    if value:
        return MatchResult(recipe, True, f"{why}, when {recipe.when!r} is {value!r}")
    return MatchResult(recipe, False, f"{why}, but when {recipe.when!r} is {value!r}", stage="when")


class RecipeSet:
    """The loaded recipes, sorted by name.

    ``fingerprint`` is a SHA-256 over every recipe file's name (relative to its recipe folder)
    and bytes, and hookline.yaml's ``env:`` list (empty when built by hand). Every process
    logs its first 12 digits (`short_fingerprint`) at start-up and after each reload, and
    ``hookline check`` prints them: equal digits, same recipes.
    """

    def __init__(self, recipes: Iterable[Recipe], *, fingerprint: str = "") -> None:
        self.recipes: list[Recipe] = sorted(recipes, key=lambda r: r.name)
        self._by_name = {r.name: r for r in self.recipes}
        self.fingerprint = fingerprint

    @property
    def short_fingerprint(self) -> str:
        """The fingerprint as logs, the `hookline up` banner and `hookline check` show it."""
        return self.fingerprint[:12]

    def __iter__(self) -> Iterator[Recipe]:
        return iter(self.recipes)

    def __len__(self) -> int:
        return len(self.recipes)

    def get(self, name: str) -> Recipe | None:
        """The recipe called ``name``, or None."""
        return self._by_name.get(name)

    def match(self, event: Event, *, environ: Mapping[str, str] | None = None) -> list[MatchResult]:
        """One `MatchResult` per recipe, in name order (matched and not).

        ``environ`` feeds ``env.NAME`` in ``when`` (default ``os.environ``, filtered by the
        allowlist). Check ``result.error``: a `when` that raised is not a match, but an error
        the caller must record against the event.
        """
        env = os.environ if environ is None else environ
        return [match_recipe(r, event, environ=env) for r in self.recipes]

    def matching(self, event: Event, *, environ: Mapping[str, str] | None = None) -> list[Recipe]:
        """Just the recipes that match, in order."""
        return [m.recipe for m in self.match(event, environ=environ) if m.matched]
