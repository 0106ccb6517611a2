"""The recipe file format (pydantic, ``extra="forbid"``: also the source of the JSON Schema)
and the validated, compiled objects the engine runs (`Recipe`, `Step`)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from hookline.recipes.errors import RecipeEvalError, RecipeRenderError
from hookline.recipes.templating import Expression, Template, describe_error
from hookline.retry import RetryPolicy

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_HINT = "write seconds (30, 1.5) or a duration such as '500ms', '2s', '1m30s', '1h'"

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def parse_duration(value: object) -> float:
    """``30`` / ``1.5`` (seconds) or ``"500ms"``, ``"2s"``, ``"1m30s"``, ``"1h"`` → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}; {DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            if not _DURATION.match(text):
                raise ValueError(f"bad duration {value!r}; {DURATION_HINT}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    else:
        raise ValueError(f"bad duration {value!r}; {DURATION_HINT}")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"bad duration {value!r}: must be a finite number >= 0")
    return seconds


_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h)\s*)+$"},
    ],
    "description": "Seconds, or a duration such as '500ms', '2s', '1m30s', '1h'.",
}
Duration = Annotated[
    float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA, mode="validation")
]

_EXPR_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "minLength": 1}, {"type": "boolean"}],
    "description": "A Jinja2 expression, without {{ }}; true/false are allowed.",
}
ExprText = Annotated[str | bool, WithJsonSchema(_EXPR_SCHEMA, mode="validation")]


class DefaultsSpec(BaseModel):
    """Per-step settings every step inherits unless it sets its own."""

    model_config = ConfigDict(extra="forbid")

    retries: StrictInt = Field(
        default=3, ge=0, le=100, description="Retries after a transient failure."
    )
    retry_backoff: Duration = Field(
        default=2.0, description="Delay before the first retry; the engine doubles it each time."
    )
    timeout: Duration = Field(default=30.0, gt=0, description="Time limit of one attempt.")


class CoalesceSpec(BaseModel):
    """``coalesce``: one run for a burst of events with one key."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        description="Template; events with the same key that wait together run once, for the "
        "latest of them (the others end 'superseded'). The key also orders them, as order_by."
    )
    quiet: Duration = Field(
        default=10.0, description="Run once no event of the key arrived for this long."
    )
    max_wait: Duration = Field(
        default=60.0, gt=0, description="... or once the burst's first event waited this long."
    )


class StepSpec(BaseModel):
    """One step as written in YAML."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str | None = Field(
        default=None,
        pattern=STEP_ID_PATTERN,
        description="Names the step in logs, in steps.<id> and in the idempotency key. "
        "Required in steps, optional in on_failure.",
    )
    uses: str = Field(description="The action, e.g. slack.post_message.")
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="The action's parameters; strings may be Jinja2 templates.",
    )
    if_: ExprText | None = Field(
        default=None, alias="if", description="Run the step only when this expression is true."
    )
    retries: StrictInt | None = Field(default=None, ge=0, le=100)
    retry_backoff: Duration | None = None
    timeout: Duration | None = Field(default=None, gt=0)
    continue_on_error: StrictBool = Field(
        default=False, description="Go on with the next step when this one fails."
    )


class RecipeSpec(BaseModel):
    """A recipe file as written in YAML."""

    model_config = ConfigDict(
        extra="forbid",
        title="Hookline recipe",
        json_schema_extra={"$comment": "Generated by `hookline schema`; do not edit."},
    )

    name: str = Field(pattern=NAME_PATTERN, max_length=100, description="Unique recipe name.")
    description: str = ""
    enabled: StrictBool = Field(default=True, description="false: loaded and checked, never run.")
    on: str | list[str] = Field(
        description="Event type(s) this recipe handles; globs such as 'billing.*' allowed."
    )
    source: str | list[str] | None = Field(
        default=None, description="Only events from this source (or these sources)."
    )
    when: ExprText | None = Field(
        default=None, description="Jinja2 expression; the recipe runs only when it is true."
    )
    order_by: str | None = Field(
        default=None,
        description="Template; runs with the same key happen one at a time, in event order.",
    )
    late: Literal["skip", "run"] = Field(
        default="skip",
        description=(
            "With order_by: what to do with an event that arrives after a later event of its "
            "key already ran. skip (default): record it as 'late', do not run it (replay by "
            "hand); run: run it anyway, after the key's current run."
        ),
    )
    coalesce: CoalesceSpec | None = Field(
        default=None,
        description="Collapse a burst of events with one key into one run for the latest; the "
        "run sees what it covers as `coalesced` (count, first, last, events).",
    )
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    steps: list[StepSpec] = Field(min_length=1)
    on_failure: list[StepSpec] = Field(default_factory=list)


class ActionLike(Protocol):
    """What the recipe layer needs from `hookline.connectors.Action`."""

    @property
    def name(self) -> str: ...
    @property
    def params(self) -> inspect.Signature: ...
    @property
    def outputs(self) -> tuple[str, ...]: ...
    @property
    def description(self) -> str: ...


@dataclass(frozen=True)
class ParamType:
    """How a rendered value is checked and converted for one action parameter."""

    adapter: TypeAdapter[Any] | None
    takes_text: bool
    label: str

    def coerce(self, value: Any) -> Any:
        if self.adapter is None:
            return value
        try:
            return self.adapter.validate_python(value)
        except ValidationError:
            if self.takes_text and not isinstance(value, str) and value is not None:
                return str(value)
            raise


@dataclass(frozen=True, eq=False, repr=False)
class Step:
    """A validated step, with the recipe's defaults applied and its templates compiled."""

    id: str
    uses: str
    with_: dict[str, Any]
    if_: str | None
    retries: int
    retry_backoff: float
    timeout: float
    continue_on_error: bool
    recipe: str = ""
    path: Path | None = None
    line: int = 0
    in_on_failure: bool = False
    action: Any = field(default=None, repr=False)
    compiled_with: dict[str, Any] = field(default_factory=dict, repr=False)
    compiled_if: Expression | None = field(default=None, repr=False)
    param_types: Mapping[str, ParamType] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"<Step {self.recipe}.{self.id} uses={self.uses} ({self.path}:{self.line})>"

    @property
    def retry(self) -> RetryPolicy:
        """How the step's vendor calls are retried (`retries` + 1 attempts in all)."""
        return RetryPolicy(attempts=self.retries + 1, backoff=self.retry_backoff)

    def longest_seconds(self) -> float:
        """An upper bound on the step: every attempt times out, every wait is the longest."""
        return self.retry.longest(self.timeout)

    def where(self) -> str:
        """``recipe 'x' step 'y' (file:line)`` for messages."""
        loc = f" ({self.path}:{self.line})" if self.path is not None else ""
        return f"recipe '{self.recipe}' step '{self.id}'{loc}"

    def should_run(self, context: Mapping[str, Any]) -> bool:
        """Evaluate ``if`` (true when absent). Raises `RecipeEvalError`."""
        if self.compiled_if is None:
            return True
        try:
            return bool(self.compiled_if.evaluate(context))
        except Exception as exc:
            raise RecipeEvalError(f"{self.where()}: if: {describe_error(exc)}") from exc

    def coerce(self, name: str, value: Any, *, where: str) -> Any:
        """Check a rendered parameter against the action's annotation."""
        ptype = self.param_types.get(name)
        if ptype is None:
            return value
        try:
            return ptype.coerce(value)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"] if exc.errors() else str(exc)
            raise RecipeRenderError(
                f"{where}: rendered {value!r}, but the parameter takes {ptype.label} ({msg})"
            ) from None


@dataclass(frozen=True, eq=False, repr=False)
class Recipe:
    """A validated recipe; templates are compiled once, here."""

    name: str
    description: str
    on: tuple[str, ...]
    source: tuple[str, ...] | None
    when: str | None
    order_by: str | None
    defaults: DefaultsSpec
    steps: tuple[Step, ...]
    on_failure: tuple[Step, ...] = ()
    path: Path | None = None
    line: int = 0
    enabled: bool = True
    env_allowed: frozenset[str] = frozenset()
    compiled_when: Expression | None = field(default=None, repr=False)
    compiled_order_by: Template | None = field(default=None, repr=False)
    late: str = "skip"
    coalesce: CoalesceSpec | None = None
    compiled_coalesce_key: Template | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"<Recipe {self.name} ({self.path}:{self.line})>"

    def step(self, step_id: str) -> Step:
        """The step (or on_failure step) with this id; raises KeyError."""
        for s in (*self.steps, *self.on_failure):
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def coalesce_key(self, context: Mapping[str, Any]) -> str | None:
        """The rendered ``coalesce.key``, or None. Raises `RecipeRenderError`."""
        if self.compiled_coalesce_key is None:
            return None
        try:
            return str(self.compiled_coalesce_key.render(context))
        except Exception as exc:
            raise RecipeRenderError(
                f"recipe '{self.name}': coalesce.key: {describe_error(exc)}"
            ) from exc

    def order_key(self, context: Mapping[str, Any]) -> str | None:
        """The rendered ``order_by`` key, or None. Raises `RecipeRenderError`."""
        if self.compiled_order_by is None:
            return None
        try:
            return str(self.compiled_order_by.render(context))
        except Exception as exc:
            raise RecipeRenderError(
                f"recipe '{self.name}': order_by: {describe_error(exc)}"
            ) from exc
