"""Compiling and rendering: `Template` and `Expression`, the values of a step's ``with``.

Templates are compiled once per distinct source (an LRU cache) and stored compiled on the
recipe's steps, so the engine never re-parses Jinja per event. A template made of one
expression renders that expression's value (``"{{ 1 if x else 2 }}"`` renders the int ``1``),
anything else renders a string; a ZIP code ``"01234"`` stays a string. Each render runs within
its time limit (`RENDER_SECONDS`, `MATCH_SECONDS` for ``when`` and ``if``); a failure becomes a
`RecipeRenderError` or `RecipeEvalError` whose text `describe_error` writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError

from hookline.recipes.errors import RecipeEvalError, RecipeRenderError
from hookline.recipes.templating.environment import ENV, MRKDWN_ENV, check_defined
from hookline.recipes.templating.escaping import raw_key
from hookline.recipes.templating.limits import (
    MATCH_SECONDS,
    RENDER_SECONDS,
    RenderLimitError,
    time_limit,
)

if TYPE_CHECKING:
    from hookline.recipes.models import Step

_MARKERS = ("{{", "{%", "{#")


def is_template(value: object) -> bool:
    """True if ``value`` is a string containing Jinja markup."""
    return isinstance(value, str) and any(m in value for m in _MARKERS)


def describe_error(exc: BaseException) -> str:
    """What went wrong in a template, as a run reports it (a limit or the sandbox named)."""
    if isinstance(exc, RenderLimitError):
        return f"not allowed in a recipe template, over a limit: {exc}"
    if isinstance(exc, RecursionError | MemoryError):
        return f"not allowed in a recipe template: {type(exc).__name__} (too deep or too large)"
    if isinstance(exc, SecurityError):
        return f"not allowed in a recipe template: {exc}"
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, TemplateError):
        return msg
    return f"{type(exc).__name__}: {msg}"


@dataclass(frozen=True, eq=False)
class _Compiled:
    """Compiled Jinja source and the callable Jinja made of it."""

    source: str
    _call: Callable[[dict[str, Any]], Any]

    def _run(self, context: Mapping[str, Any], seconds: float) -> Any:
        """Call with ``context`` within ``seconds`` (unless a `time_limit` encloses it); raises
        the underlying Jinja/sandbox error, `RenderLimitError` past a limit."""
        with time_limit(seconds):
            return check_defined(self._call(dict(context)))


class Template(_Compiled):
    """A compiled string template; ``render`` returns a native value."""

    def render(self, context: Mapping[str, Any]) -> Any:
        """Render with ``context`` within `RENDER_SECONDS`."""
        return self._run(context, RENDER_SECONDS)


class Expression(_Compiled):
    """A compiled expression (``when``, ``if``)."""

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """Evaluate with ``context`` within `MATCH_SECONDS`."""
        return self._run(context, MATCH_SECONDS)


@lru_cache(maxsize=4096)
def compile_template(source: str, *, mrkdwn: bool = False) -> Template:
    """Compile a template string (cached by source); ``mrkdwn``: escape its values for Slack.

    Raises ``jinja2.TemplateSyntaxError``."""
    tmpl = (MRKDWN_ENV if mrkdwn else ENV).from_string(source)
    return Template(source, tmpl.render)


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    """Compile an expression (cached by source). Raises ``jinja2.TemplateSyntaxError``."""
    expr = ENV.compile_expression(source, undefined_to_none=False)
    return Expression(source, expr)


def compile_value(value: Any, *, mrkdwn: bool = False) -> Any:
    """Compile every template string inside ``value`` (dicts and lists are walked).

    ``mrkdwn``: the value is Slack mrkdwn: its templates escape what they insert, except
    under keys such as ``url`` or ``action_id`` (`raw_key`)."""
    if is_template(value):
        return compile_template(value, mrkdwn=mrkdwn)
    if isinstance(value, dict):
        return {k: compile_value(v, mrkdwn=mrkdwn and not raw_key(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v, mrkdwn=mrkdwn) for v in value]
    return value


def render_value(compiled: Any, context: Mapping[str, Any]) -> Any:
    """Render a value produced by `compile_value`."""
    if isinstance(compiled, Template):
        return compiled.render(context)
    if isinstance(compiled, dict):
        return {k: render_value(v, context) for k, v in compiled.items()}
    if isinstance(compiled, list):
        return [render_value(v, context) for v in compiled]
    return compiled


def render_template(template: str, context: Mapping[str, Any]) -> Any:
    """Render one template string to a native value.

    Raises:
        RecipeRenderError: syntax error, undefined name, sandbox violation.
    """
    try:
        return compile_template(template).render(context)
    except Exception as exc:
        raise RecipeRenderError(f"{template!r}: {describe_error(exc)}") from exc


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate one Jinja expression (no ``{{ }}``) to a native value.

    Raises:
        RecipeEvalError: syntax error, undefined name, sandbox violation, any exception.
    """
    try:
        return compile_expression(expression).evaluate(context)
    except Exception as exc:
        raise RecipeEvalError(f"{expression!r}: {describe_error(exc)}") from exc


def render_params(
    step: Step, context: Mapping[str, Any], *, keep: Callable[[Any], bool] | None = None
) -> dict[str, Any]:
    """Render a step's ``with`` for ``context`` and coerce each value to the parameter's type.

    A value the parameter's type accepts is passed through that type (lax pydantic rules:
    ``"2"`` becomes ``2`` for an ``int`` parameter); a non-string value for a parameter that
    takes text is turned into text. ``keep``: values passed as they are when their type is
    wrong (a dry run's stand-ins for what only a real run knows, ``<steps.x.number>``).

    Raises:
        RecipeRenderError: naming recipe, step and parameter.
    """
    out: dict[str, Any] = {}
    with time_limit(RENDER_SECONDS):  # one limit for all of the step's parameters
        for name, compiled in step.compiled_with.items():
            where = f"{step.where()}: with.{name}"
            try:
                value = render_value(compiled, context)
            except Exception as exc:
                raise RecipeRenderError(f"{where}: {describe_error(exc)}") from exc
            try:
                out[name] = step.coerce(name, value, where=where)
            except RecipeRenderError:
                if keep is None or not keep(value):
                    raise
                out[name] = value
    return out
