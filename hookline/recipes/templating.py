"""Jinja2 for recipes: one sandboxed, strict, native-typed environment.

- ``ImmutableSandboxedEnvironment``: templates cannot reach Python internals
  (``''.__class__`` is refused) nor mutate the event (``data.update(...)`` is refused).
- ``StrictUndefined``: a missing name or key is an error, never an empty string; use
  ``x | default(...)`` or ``x is defined`` where absence is expected.
- Native types: ``"{{ 1 if x else 2 }}"`` renders the int ``1``; a template made of one
  expression renders that expression's value, anything else renders a string. Unlike Jinja's
  ``NativeEnvironment`` we never ``literal_eval`` strings, so a ZIP code ``"01234"`` or a
  ticket number ``"007"`` stays a string.
- ``a.b`` prefers the mapping key over the attribute: ``data.items`` is the payload's
  ``items`` field, not ``dict.items``.

Templates are compiled once per distinct source (an LRU cache) and stored compiled on the
recipe's steps, so the engine never re-parses Jinja per event.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.nativetypes import NativeCodeGenerator, NativeEnvironment, NativeTemplate
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hookline.recipes.errors import RecipeEvalError, RecipeRenderError

if TYPE_CHECKING:
    from hookline.recipes.event import Event
    from hookline.recipes.models import Recipe, Step

__all__ = [
    "Expression",
    "Template",
    "build_context",
    "compile_expression",
    "compile_template",
    "compile_value",
    "evaluate",
    "is_template",
    "render_params",
    "render_template",
    "render_value",
]

_MARKERS = ("{{", "{%", "{#")
_MAX_RENDER_DEPTH = 50
_MAX_POWER = 1000
_MAX_REPEAT = 100_000


def is_template(value: object) -> bool:
    """True if ``value`` is a string containing Jinja markup."""
    return isinstance(value, str) and any(m in value for m in _MARKERS)


class UnsetPlaceholder(Undefined):
    """Dry runs only: an allowed ``env.NAME`` that is not set. It behaves like a missing value
    (falsy, ``is defined`` is false, ``| default(...)`` replaces it) but renders as
    ``<env.NAME: not set>`` instead of failing, so a preview still shows the rest."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"<env.{self._undefined_name}: not set>"

    __repr__ = __str__


def _check_defined(value: Any, depth: int = 0) -> Any:
    """Fail on an undefined value, also inside lists and dicts; reject bare functions."""
    if isinstance(value, UnsetPlaceholder):
        return value
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if depth > _MAX_RENDER_DEPTH:
        return value
    if isinstance(value, Mapping):
        for v in value.values():
            _check_defined(v, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _check_defined(v, depth + 1)
    elif callable(value):
        name = getattr(value, "__name__", type(value).__name__)
        raise TypeError(f"the value is a function ({name}); did you forget to call it: {name}()?")
    return value


def _native_concat(values: Iterable[Any]) -> Any:
    """One output node: its native value; several: their text, joined (no literal_eval)."""
    parts = list(values)
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    return "".join(str(v) for v in parts)


class _CodeGenerator(NativeCodeGenerator):
    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> Any:
        # Jinja folds constant output ({{ 5 }}, {{ none }}) into template text and relies on
        # literal_eval to get the type back; we do not literal_eval, so never fold.
        raise nodes.Impossible()


class RecipeEnvironment(ImmutableSandboxedEnvironment, NativeEnvironment):
    """Sandboxed (immutable), strict and native-typed."""

    code_generator_class = _CodeGenerator
    concat = staticmethod(_native_concat)  # type: ignore[assignment]

    # A typo such as "{{ '-' * 10**9 }}" must not take the worker down with it.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_POWER:
            raise SecurityError(f"exponent {right} is too large (at most {_MAX_POWER})")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    if len(seq) * n > _MAX_REPEAT:
                        raise SecurityError(
                            f"repeating a sequence to {len(seq) * n} items is too large "
                            f"(at most {_MAX_REPEAT})"
                        )
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # A payload key wins over a dict method of the same name (data.items, data.keys).
        if isinstance(obj, Mapping) and not attribute.startswith("_"):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
            if isinstance(obj, _Explained):
                return self.undefined(obj.explain(attribute), obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, _Explained) and isinstance(argument, str) and argument not in obj:
            return self.undefined(obj.explain(argument), obj=obj, name=argument)
        return super().getitem(obj, argument)


class _Explained(dict[str, Any]):
    """A context mapping whose missing keys get an ops-friendly message."""

    def explain(self, key: str) -> str:
        raise NotImplementedError


class EnvVars(_Explained):
    def explain(self, key: str) -> str:
        return (
            f"env.{key} is not set in this process's environment (or not allowed by the "
            "env: list of hookline.yaml)"
        )


class StepOutputs(_Explained):
    def explain(self, key: str) -> str:
        return (
            f"steps.{key} is undefined: step '{key}' did not run (skipped by its if:, or "
            f"after it in the recipe); guard with `steps.{key} is defined`"
        )


class RecipeTemplate(NativeTemplate):
    # NativeTemplate.render calls ``environment_class.concat``: point it at ours, or Jinja's
    # literal_eval-ing concat would turn the text "7" into the int 7.
    environment_class = RecipeEnvironment


RecipeEnvironment.template_class = RecipeTemplate


def _make_env() -> RecipeEnvironment:
    env = RecipeEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=_check_defined,
        keep_trailing_newline=False,
    )
    return env


ENV = _make_env()

# Names Jinja itself provides (globals); templates may use them without a context entry.
JINJA_GLOBALS = frozenset(ENV.globals)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return f"not allowed in a recipe template: {exc}"
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, TemplateError):
        return msg
    return f"{type(exc).__name__}: {msg}"


@dataclass(frozen=True, eq=False)
class Template:
    """A compiled string template; ``render`` returns a native value."""

    source: str
    _render: Callable[..., Any]

    def render(self, context: Mapping[str, Any]) -> Any:
        """Render with ``context``; raises the underlying Jinja/sandbox error."""
        return _check_defined(self._render(dict(context)))


@dataclass(frozen=True, eq=False)
class Expression:
    """A compiled expression (``when``, ``if``)."""

    source: str
    _call: Callable[..., Any]

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """Evaluate with ``context``; raises the underlying Jinja/sandbox error."""
        return _check_defined(self._call(**context))


_GITHUB_STYLE = re.compile(r"\$\{\{")


@lru_cache(maxsize=4096)
def compile_template(source: str) -> Template:
    """Compile a template string (cached by source). Raises ``jinja2.TemplateSyntaxError``."""
    tmpl = ENV.from_string(source)
    return Template(source, tmpl.render)


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    """Compile an expression (cached by source). Raises ``jinja2.TemplateSyntaxError``."""
    expr = ENV.compile_expression(source, undefined_to_none=False)
    return Expression(source, expr)


def compile_value(value: Any) -> Any:
    """Compile every template string inside ``value`` (dicts and lists are walked)."""
    if is_template(value):
        return compile_template(value)
    if isinstance(value, dict):
        return {k: compile_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v) for v in value]
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
        raise RecipeRenderError(f"{template!r}: {_describe(exc)}") from exc


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate one Jinja expression (no ``{{ }}``) to a native value.

    Raises:
        RecipeEvalError: syntax error, undefined name, sandbox violation, any exception.
    """
    try:
        return compile_expression(expression).evaluate(context)
    except Exception as exc:
        raise RecipeEvalError(f"{expression!r}: {_describe(exc)}") from exc


def build_context(
    event: Event,
    *,
    recipe: Recipe | None = None,
    steps: Mapping[str, Mapping[str, Any]] | None = None,
    run: Mapping[str, Any] | None = None,
    failure: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The variables a template sees for ``event``.

    Args:
        steps: outputs of the steps that completed so far, ``{step_id: {output: value}}``;
            a step that did not run is absent (templates test ``steps.x is defined``).
        run: ``{"id", "name", "url"}`` of the flow run, when there is one.
        failure: ``{"step", "uses", "error", "attempts"}`` inside ``on_failure``.
        environ: where ``env.NAME`` values come from (default ``os.environ``); only the
            names the recipe's hookline.yaml allows are copied, so a template never sees
            any other variable (a secret in particular).
    """
    import os

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


def render_params(step: Step, context: Mapping[str, Any]) -> dict[str, Any]:
    """Render a step's ``with`` for ``context`` and coerce each value to the parameter's type.

    A value the parameter's type accepts is passed through that type (lax pydantic rules:
    ``"2"`` becomes ``2`` for an ``int`` parameter); a non-string value for a parameter that
    takes text is turned into text.

    Raises:
        RecipeRenderError: naming recipe, step and parameter.
    """
    out: dict[str, Any] = {}
    for name, compiled in step.compiled_with.items():
        where = f"{step.where()}: with.{name}"
        try:
            value = render_value(compiled, context)
        except Exception as exc:
            raise RecipeRenderError(f"{where}: {_describe(exc)}") from exc
        out[name] = step.coerce(name, value, where=where)
    return out


def ast_template(source: str) -> nodes.Template:
    """Parse (not compile) a template, for static checks."""
    return ENV.parse(source)


def ast_expression(source: str) -> nodes.Expr:
    """Parse an expression, for static checks; raises ``TemplateSyntaxError``."""
    from jinja2.exceptions import TemplateSyntaxError
    from jinja2.parser import Parser

    parser = Parser(ENV, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        tok = parser.stream.current
        raise TemplateSyntaxError(
            f"unexpected {tok.value!r} after the expression", tok.lineno, None, None
        )
    return expr


def looks_like_github_syntax(source: str) -> bool:
    """``${{ ... }}`` is GitHub Actions syntax, not Jinja."""
    return bool(_GITHUB_STYLE.search(source))
