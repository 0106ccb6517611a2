"""The Jinja environment of recipes: sandboxed, strict, native-typed, within limits.

- ``ImmutableSandboxedEnvironment``: templates cannot reach Python internals
  (``''.__class__`` is refused) nor mutate the event (``data.update(...)`` is refused).
- ``StrictUndefined``: a missing name or key is an error, never an empty string; values are
  checked deeply (`check_defined`), and a bare function is refused.
- Native types, without ``literal_eval`` (`_native_concat`, `_CodeGenerator`).
- ``a.b`` prefers the mapping key over the attribute (``data.items`` is the payload's field).
- Every loop iteration, call, attribute access, operator and output goes through
  `hookline.recipes.templating.limits`: the time limit and the size limits.

`ENV` compiles every template; `MRKDWN_ENV` those of Slack mrkdwn parameters, escaping what
each ``{{ }}`` inserts (`hookline.recipes.templating.escaping`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.nativetypes import NativeCodeGenerator, NativeEnvironment, NativeTemplate
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hookline.recipes.templating.context import Explained
from hookline.recipes.templating.escaping import escape_value, mrkdwn
from hookline.recipes.templating.limits import (
    MAX_DEPTH,
    MAX_TEXT,
    RenderLimitError,
    check_format_spec,
    guard,
    guarded_filter,
    precheck_binop,
    precheck_method,
    tick,
)
from hookline.recipes.templating.timefilters import elapsed


def check_defined(value: Any, depth: int = 0) -> Any:
    """Fail on an undefined value, also inside lists and dicts; reject bare functions."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if depth == 0:
        tick()
        guard(value)
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        for v in value.values():
            check_defined(v, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            check_defined(v, depth + 1)
    elif callable(value):
        name = getattr(value, "__name__", type(value).__name__)
        raise TypeError(f"the value is a function ({name}); did you forget to call it: {name}()?")
    return value


def _mrkdwn_finalize(value: Any) -> Any:
    return escape_value(check_defined(value))


def _native_concat(values: Iterable[Any]) -> Any:
    """One output node: its native value; several: their text, joined (no literal_eval).

    The output is counted as it is produced: a loop writing text stops at `MAX_TEXT`
    characters or at the time limit, whichever comes first."""
    parts: list[Any] = []
    joined: list[str] = []
    size = 0
    for v in values:
        tick()
        parts.append(v)
        size += len(v) if isinstance(v, str) else 0
        if size > MAX_TEXT:
            raise RenderLimitError(f"the template's output is longer than {MAX_TEXT} characters")
        if len(parts) >= _JOIN_EVERY:
            # join as we go: a million small strings freed at once (when a limit aborts the
            # render) would hold the GIL, and stall the event loop, for half a second
            joined.append("".join(str(x) for x in parts))
            parts = []
    if not parts and not joined:
        return ""
    if len(parts) == 1 and not joined:
        return parts[0]
    text = "".join([*joined, *(str(v) for v in parts)])
    return guard(text)


_JOIN_EVERY = 4096


class _CodeGenerator(NativeCodeGenerator):
    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> Any:
        # Jinja folds constant output ({{ 5 }}, {{ none }}) into template text and relies on
        # literal_eval to get the type back; we do not literal_eval, so never fold. The
        # template's own text stays text (and never goes through finalize: in a Slack
        # parameter the recipe's "<{{ link }}|{{ number }}>" is a link, not escaped).
        if isinstance(node, nodes.TemplateData):
            return node.as_const(frame.eval_ctx)
        raise nodes.Impossible()

    def visit_For(self, node: nodes.For, frame: Any) -> None:
        # Every loop iterates through environment.guarded_iter, which checks the time limit.
        if not getattr(node, "hookline_guarded", False):
            node.iter = nodes.Call(
                nodes.EnvironmentAttribute("guarded_iter"), [node.iter], [], None, None
            )
            node.hookline_guarded = True  # type: ignore[attr-defined]
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        self.write("environment.guarded_text(")
        super().visit_Concat(node, frame)
        self.write(")")


class RecipeEnvironment(ImmutableSandboxedEnvironment, NativeEnvironment):
    """Sandboxed (immutable), strict and native-typed."""

    code_generator_class = _CodeGenerator
    concat = staticmethod(_native_concat)  # type: ignore[assignment]

    # Every arithmetic operator is checked before Python runs it (limits.precheck_binop).
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        tick()
        precheck_binop(operator, left, right)
        return guard(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        tick()
        args = precheck_method(__obj, args, kwargs)
        return guard(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            check_format_spec(str(value.__self__))
        return wrapped

    @staticmethod
    def guarded_iter(iterable: Any) -> Iterator[Any]:
        """What every ``{% for %}`` loop iterates: the time limit is checked at each item."""
        for item in iterable:
            tick()
            yield item

    @staticmethod
    def guarded_text(value: Any) -> Any:
        """What ``a ~ b`` results go through."""
        return guard(value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        # A payload key wins over a dict method of the same name (data.items, data.keys).
        if isinstance(obj, Mapping) and not attribute.startswith("_"):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
            if isinstance(obj, Explained):
                return self.undefined(obj.explain(attribute), obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        if isinstance(obj, Explained) and isinstance(argument, str) and argument not in obj:
            return self.undefined(obj.explain(argument), obj=obj, name=argument)
        return super().getitem(obj, argument)


class RecipeTemplate(NativeTemplate):
    # NativeTemplate.render calls ``environment_class.concat``: point it at ours, or Jinja's
    # literal_eval-ing concat would turn the text "7" into the int 7.
    environment_class = RecipeEnvironment


RecipeEnvironment.template_class = RecipeTemplate


def _make_env(finalize: Callable[[Any], Any] = check_defined) -> RecipeEnvironment:
    env = RecipeEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=finalize,
        keep_trailing_newline=False,
    )
    env.filters["mrkdwn"] = mrkdwn
    env.filters["elapsed"] = elapsed
    env.filters = {name: guarded_filter(name, f) for name, f in env.filters.items()}
    env.globals["lipsum"] = guarded_filter("lipsum", cast(Any, env.globals["lipsum"]))
    return env


ENV = _make_env()
#: The environment of Slack mrkdwn parameters: every ``{{ }}`` value is escaped.
MRKDWN_ENV = _make_env(_mrkdwn_finalize)

# Names Jinja itself provides (globals); templates may use them without a context entry.
JINJA_GLOBALS = frozenset(ENV.globals)
