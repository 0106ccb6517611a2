"""Errors of the recipe layer.

    HooklineError
    └── RecipeError                  anything wrong with a recipe or its evaluation
        ├── RecipeLoadError          `load_recipes` found problems; `.problems` lists every one
        ├── RecipeRenderError        a template failed on a real event (undefined name, sandbox
        │                            violation, wrong type for a parameter)
        ├── RecipeEvalError          a `when`/`if` expression raised on a real event
        └── EventError               a body is not a usable event envelope

Messages say what was wrong, where (``file:line:column``, recipe, step, field) and what is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hookline.errors import HooklineError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe file, located as precisely as the YAML allows."""

    path: Path | str
    line: int
    column: int
    message: str
    step: str | None = None
    field: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}: "
        if self.step is not None:
            where += f"step '{self.step}': "
        if self.field:
            where += f"{self.field}: "
        text = where + self.message
        if self.hint:
            text += f"; {self.hint}"
        return text


class RecipeError(HooklineError):
    """Base class for every recipe-layer error."""


class RecipeLoadError(RecipeError):
    """One or more recipe files are invalid; ``problems`` holds every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in recipes"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class RecipeRenderError(RecipeError):
    """A template could not be rendered for this event; the message names the recipe and step."""


class RecipeEvalError(RecipeError):
    """A `when` or `if` expression raised while evaluating a real event."""


class EventError(RecipeError):
    """A request body cannot be turned into an `Event`."""
