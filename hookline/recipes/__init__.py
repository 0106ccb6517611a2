"""The recipe language: models, loader/validator, templating, matcher and dry run."""

from __future__ import annotations

from hookline.recipes.errors import (
    EventError,
    Problem,
    RecipeError,
    RecipeEvalError,
    RecipeLoadError,
    RecipeRenderError,
)
from hookline.recipes.event import Event
from hookline.recipes.loader import check_recipes, load_recipes
from hookline.recipes.matcher import MatchResult, RecipeSet, match_recipe
from hookline.recipes.models import Recipe, Step
from hookline.recipes.templating import (
    build_context,
    evaluate,
    render_params,
    render_template,
)

__all__ = [
    "Event",
    "EventError",
    "MatchResult",
    "Problem",
    "Recipe",
    "RecipeError",
    "RecipeEvalError",
    "RecipeLoadError",
    "RecipeRenderError",
    "RecipeSet",
    "Step",
    "build_context",
    "check_recipes",
    "evaluate",
    "load_recipes",
    "match_recipe",
    "render_params",
    "render_template",
]
