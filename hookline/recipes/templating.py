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

Slack mrkdwn: parameters an action declares as Slack mrkdwn (``Action.mrkdwn``: the text,
title, summary, fields, blocks of ``slack.*``) are compiled in `MRKDWN_ENV`, which escapes
``&``, ``<`` and ``>`` in every value a ``{{ }}`` puts into the text. The recipe's own text is
left alone (``"<{{ steps.incident.link }}|{{ steps.incident.number }}>"`` stays a link), but a
ticket title ``<!channel>`` reaches Slack as text, not as a mention. ``{{ value | mrkdwn }}``
opts one value out: it is sent as written.

Resource limits (a template, or a payload value it uses, must not take a worker or the
dispatcher down): text a template builds or outputs is at most `MAX_TEXT` characters, an
integer at most `MAX_INT_BITS` bits, a padding or format width at most `MAX_WIDTH`, and one
render at most `RENDER_SECONDS` (`MATCH_SECONDS` for ``when``). Growth is refused *before*
Python allocates it (``'%050000000d' % 1``, ``'x'|center(data.width)``, ``(10**1000)**1000``),
and the time limit is checked at every loop iteration, call, attribute access and output, so
``{% for %}`` loops nested three deep stop within the limit. A limit raises `RenderLimitError`
(a sandbox `SecurityError`); the step or ``when`` fails with a message naming the limit.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.nativetypes import NativeCodeGenerator, NativeEnvironment, NativeTemplate
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hookline.recipes.errors import RecipeEvalError, RecipeRenderError

if TYPE_CHECKING:
    from hookline.recipes.event import Event
    from hookline.recipes.models import Recipe, Step

__all__ = [
    "MAX_INT_BITS",
    "MAX_TEXT",
    "MAX_WIDTH",
    "RENDER_SECONDS",
    "Expression",
    "RenderLimitError",
    "Template",
    "build_context",
    "compile_expression",
    "compile_template",
    "compile_value",
    "escape_mrkdwn",
    "mrkdwn",
    "evaluate",
    "is_template",
    "render_params",
    "render_template",
    "render_value",
    "time_limit",
]

_MARKERS = ("{{", "{%", "{#")
_MAX_RENDER_DEPTH = 50
_MAX_REPEAT = 100_000

#: Longest text (characters) a template may build or output: 4 MB, four times the receiver's
#: default body limit, so ``{{ data | tojson }}`` of any accepted event still fits.
MAX_TEXT = 4_000_000
#: Largest integer a template may compute (Python's own int-to-text limit is 4300 digits).
MAX_INT_BITS = 14_300
#: Widest padding (``center``, ``'%10d'``, ``'{:>10}'``, ``indent``) a template may ask for.
MAX_WIDTH = 10_000
#: Longest ``tojson`` indent.
MAX_INDENT = 64
#: Time limit of one step's parameters (all of them together), or one ``order_by``.
RENDER_SECONDS = 1.0
#: Time limit of one ``when`` or ``if``: the dispatcher evaluates ``when`` for every event.
MATCH_SECONDS = 0.25


class RenderLimitError(SecurityError):
    """A template went past a resource limit (size, integer, width, time)."""


_deadline: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar(
    "hookline_template_deadline", default=None
)


@contextmanager
def time_limit(seconds: float = RENDER_SECONDS) -> Iterator[None]:
    """Bound the rendering done inside the block to ``seconds`` (an enclosing limit wins)."""
    if _deadline.get() is not None:
        yield
        return
    token = _deadline.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def _tick() -> None:
    limit = _deadline.get()
    if limit is not None and time.monotonic() > limit[0]:
        raise RenderLimitError(
            f"rendering took longer than {limit[1]:g}s, the time limit of a recipe template "
            "(a loop over a large payload value?)"
        )


def _guard(value: Any) -> Any:
    """Refuse a value past the size limits (after an operation Python already ran)."""
    if isinstance(value, str | bytes) and len(value) > MAX_TEXT:
        raise RenderLimitError(
            f"the template built a text of {len(value)} characters (at most {MAX_TEXT})"
        )
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise RenderLimitError(
            f"the template computed an integer of {value.bit_length()} bits "
            f"(at most {MAX_INT_BITS})"
        )
    return value


def _check_text(size: int, what: str) -> None:
    if size > MAX_TEXT:
        raise RenderLimitError(
            f"{what} would build a text of {size} characters (at most {MAX_TEXT})"
        )


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_WIDTH:
        raise RenderLimitError(f"{what}: a width of {width} is too large (at most {MAX_WIDTH})")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def _check_percent(fmt: str, args: Any) -> None:
    """``fmt % args``: refuse a width or precision past `MAX_WIDTH` (written or given as ``*``)."""
    stars = False
    for m in _PERCENT.finditer(fmt):
        for part in (m.group(1), m.group(2)):
            if part == "*":
                stars = True
            elif part is not None:
                _check_width(int(part), f"format {fmt[:40]!r}")
    if stars:
        values = args if isinstance(args, tuple) else (args,)
        for v in values:
            if _is_int(v):
                _check_width(abs(v), f"format {fmt[:40]!r}")


def _check_format_spec(fmt: str) -> None:
    """``fmt.format(...)``: refuse a width/precision past `MAX_WIDTH`, or one taken from a value."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        if "{" in spec:
            raise RenderLimitError(
                f"format {fmt[:40]!r}: a width or precision taken from a value ({{...}} inside "
                "a format spec) is not allowed; write the number"
            )
        for digits in re.findall(r"\d+", spec):
            _check_width(int(digits), f"format {fmt[:40]!r}")


def _joined_size(items: list[Any], sep: Any) -> int:
    size = len(sep) * max(0, len(items) - 1) if isinstance(sep, str | bytes) else 0
    for item in items:
        size += len(item) if isinstance(item, str | bytes) else len(str(item))
        if size > MAX_TEXT:
            break
    return size


def _replaced_size(s: Any, old: Any, new: Any, count: Any) -> int:
    if not isinstance(s, str | bytes) or not isinstance(old, str | bytes):
        return 0
    if not isinstance(new, str | bytes):
        return 0
    text: Any = s
    n = text.count(old) if old else len(s) + 1
    if _is_int(count) and count >= 0:
        n = min(n, count)
    return len(s) + n * (len(new) - len(old))


def _lines(s: Any) -> int:
    return str(s).count("\n") + 1


def _precheck_filter(name: str, a: dict[str, Any]) -> None:
    """Size checks, before the call, of the filters that can grow their input."""
    if name == "center":
        _check_width(a.get("width"), "center")
    elif name == "indent":
        width = a.get("width", 4)
        _check_width(width, "indent")
        pad = len(width) if isinstance(width, str) else int(width) if _is_int(width) else 0
        _check_text(len(str(a.get("s", ""))) + _lines(a.get("s", "")) * pad, "indent")
    elif name == "format":
        value = a.get("value")
        if isinstance(value, str):
            _check_percent(value, a.get("kwargs") or tuple(a.get("args", ())))
    elif name == "replace":
        _check_text(
            _replaced_size(a.get("s"), a.get("old"), a.get("new"), a.get("count")), "replace"
        )
    elif name in ("batch", "slice"):
        n = a.get("linecount", a.get("slices"))
        if _is_int(n) and n > _MAX_REPEAT:
            raise RenderLimitError(f"{name}({n}) is too large (at most {_MAX_REPEAT})")
    elif name == "tojson":
        indent = a.get("indent")
        size = len(indent) if isinstance(indent, str) else indent if _is_int(indent) else 0
        if size > MAX_INDENT:
            raise RenderLimitError(
                f"tojson: an indent of {size} is too large (at most {MAX_INDENT})"
            )
    elif name == "wordwrap":
        s, width = str(a.get("s", "")), a.get("width", 79)
        wrap = a.get("wrapstring") or "\n"
        breaks = len(s) // max(1, int(width) if _is_int(width) else 1) + 1
        _check_text(len(s) + breaks * len(str(wrap)), "wordwrap")
    elif name == "lipsum":
        if a.get("n", 5) > 100 or a.get("max", 100) > 1000:
            raise RenderLimitError("lipsum: at most 100 paragraphs of at most 1000 words")


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None
    checked = name in {
        "center",
        "indent",
        "format",
        "replace",
        "batch",
        "slice",
        "tojson",
        "wordwrap",
        "lipsum",
    }

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if name == "join":
            args, kwargs = _materialized_join(args, kwargs)
        elif checked and signature is not None:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                pass  # the filter itself says what is wrong with its arguments
            else:
                bound.apply_defaults()
                _precheck_filter(name, dict(bound.arguments))
        return _guard(func(*args, **kwargs))

    return guarded


def _materialized_join(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``join``'s (eval_ctx, value, d="", attribute=None): size it before joining."""
    rest = list(args)
    if len(rest) < 2:
        return args, kwargs
    value = rest[1]
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        items = list(value)
        rest[1] = items
        sep = rest[2] if len(rest) > 2 else kwargs.get("d", "")
        attribute = rest[3] if len(rest) > 3 else kwargs.get("attribute")
        if attribute is None:
            _check_text(_joined_size(items, sep), "join")
    return tuple(rest), kwargs


def _precheck_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Size checks of the str/bytes methods that can grow their text; returns the args."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if not isinstance(owner, str | bytes):
        return args
    if name in ("center", "ljust", "rjust", "zfill"):
        if args:
            _check_width(args[0], f"{name}()")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if _is_int(tab):
            _check_text(
                len(owner)
                + cast(Any, owner).count("\t" if isinstance(owner, str) else b"\t") * tab,
                "expandtabs()",
            )
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        _check_text(_replaced_size(owner, args[0], args[1], count), "replace()")
    elif name == "join" and args:
        items = list(args[0])
        _check_text(_joined_size(items, owner), "join()")
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str | bytes)), default=1)
        _check_text(len(owner) * max(1, longest), "translate()")
    return args


def is_template(value: object) -> bool:
    """True if ``value`` is a string containing Jinja markup."""
    return isinstance(value, str) and any(m in value for m in _MARKERS)


def _check_defined(value: Any, depth: int = 0) -> Any:
    """Fail on an undefined value, also inside lists and dicts; reject bare functions."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if depth == 0:
        _tick()
        _guard(value)
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


class Mrkdwn(str):
    """Text a recipe marked as Slack mrkdwn with ``| mrkdwn``: sent as written."""

    __slots__ = ()


class MrkdwnList(list[Any]):
    """A list marked with ``| mrkdwn`` (e.g. Block Kit blocks built elsewhere)."""


class MrkdwnDict(dict[str, Any]):
    """A mapping marked with ``| mrkdwn``."""


def mrkdwn(value: Any) -> Any:
    """The ``mrkdwn`` filter: mark ``value`` as Slack mrkdwn the recipe vouches for."""
    if isinstance(value, str):
        return Mrkdwn(value)
    if isinstance(value, Mapping):
        return MrkdwnDict(value)
    if isinstance(value, list | tuple):
        return MrkdwnList(value)
    return value


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters as entities: the text shows as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_RAW_KEYS = frozenset({"type", "style", "color", "action_id", "block_id", "callback_id", "value"})


def raw_key(key: object) -> bool:
    """Keys inside Block Kit / attachments whose values are not mrkdwn (URLs, ids, enums)."""
    if not isinstance(key, str):
        return False
    k = key.lower()
    return k in _RAW_KEYS or k.endswith(("url", "_link", "_icon"))


def _escape_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, Mrkdwn | MrkdwnList | MrkdwnDict):
        return value
    if isinstance(value, str):
        return escape_mrkdwn(value)
    if depth > _MAX_RENDER_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: v if raw_key(k) else _escape_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escape_value(v, depth + 1) for v in value]
    return value


def _mrkdwn_finalize(value: Any) -> Any:
    return _escape_value(_check_defined(value))


def _native_concat(values: Iterable[Any]) -> Any:
    """One output node: its native value; several: their text, joined (no literal_eval).

    The output is counted as it is produced: a loop writing text stops at `MAX_TEXT`
    characters or at the time limit, whichever comes first."""
    parts: list[Any] = []
    joined: list[str] = []
    size = 0
    for v in values:
        _tick()
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
    return _guard(text)


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

    # A typo such as "{{ '-' * 10**9 }}" must not take the worker down with it: every
    # arithmetic operator is checked before Python runs it.
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "**" and _is_int(left) and _is_int(right) and right > 0:
            if abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
                raise RenderLimitError(
                    f"{left.bit_length()}-bit number ** {right} is too large "
                    f"(results of at most {MAX_INT_BITS} bits)"
                )
        if operator == "*":
            if _is_int(left) and _is_int(right):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise RenderLimitError(
                        f"multiplying a {left.bit_length()}-bit and a {right.bit_length()}-bit "
                        f"number is too large (results of at most {MAX_INT_BITS} bits)"
                    )
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and _is_int(n):
                    if len(seq) * n > _MAX_REPEAT:
                        raise RenderLimitError(
                            f"repeating a sequence to {len(seq) * n} items is too large "
                            f"(at most {_MAX_REPEAT})"
                        )
        if operator == "+":
            if isinstance(left, str | bytes) and isinstance(right, str | bytes):
                _check_text(len(left) + len(right), "+")
            elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
                if len(left) + len(right) > _MAX_REPEAT * 10:
                    raise RenderLimitError(
                        f"+ would build a list of {len(left) + len(right)} items "
                        f"(at most {_MAX_REPEAT * 10})"
                    )
        if operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        return _guard(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _tick()
        args = _precheck_method(__obj, args, kwargs)
        return _guard(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_spec(str(value.__self__))
        return wrapped

    @staticmethod
    def guarded_iter(iterable: Any) -> Iterator[Any]:
        """What every ``{% for %}`` loop iterates: the time limit is checked at each item."""
        for item in iterable:
            _tick()
            yield item

    @staticmethod
    def guarded_text(value: Any) -> Any:
        """What ``a ~ b`` results go through."""
        return _guard(value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
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
        _tick()
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
            f"env.{key} is not set: the environment has no {key} (or the env: list of "
            f"hookline.yaml does not allow it); set it, or write env.{key} | default(...)"
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


def _make_env(finalize: Callable[[Any], Any] = _check_defined) -> RecipeEnvironment:
    env = RecipeEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=finalize,
        keep_trailing_newline=False,
    )
    env.filters["mrkdwn"] = mrkdwn
    env.filters = {name: _guarded_filter(name, f) for name, f in env.filters.items()}
    env.globals["lipsum"] = _guarded_filter("lipsum", cast(Any, env.globals["lipsum"]))
    return env


ENV = _make_env()
#: The environment of Slack mrkdwn parameters: every ``{{ }}`` value is escaped.
MRKDWN_ENV = _make_env(_mrkdwn_finalize)

# Names Jinja itself provides (globals); templates may use them without a context entry.
JINJA_GLOBALS = frozenset(ENV.globals)


def _describe(exc: BaseException) -> str:
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
class Template:
    """A compiled string template; ``render`` returns a native value."""

    source: str
    _render: Callable[..., Any]

    def render(self, context: Mapping[str, Any]) -> Any:
        """Render with ``context`` within `RENDER_SECONDS` (unless a `time_limit` encloses
        it); raises the underlying Jinja/sandbox error, `RenderLimitError` past a limit."""
        with time_limit(RENDER_SECONDS):
            return _check_defined(self._render(dict(context)))


@dataclass(frozen=True, eq=False)
class Expression:
    """A compiled expression (``when``, ``if``)."""

    source: str
    _call: Callable[..., Any]

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """Evaluate with ``context`` within `MATCH_SECONDS` (unless a `time_limit` encloses
        it); raises the underlying Jinja/sandbox error, `RenderLimitError` past a limit."""
        with time_limit(MATCH_SECONDS):
            return _check_defined(self._call(**context))


_GITHUB_STYLE = re.compile(r"\$\{\{")


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
                raise RecipeRenderError(f"{where}: {_describe(exc)}") from exc
            try:
                out[name] = step.coerce(name, value, where=where)
            except RecipeRenderError:
                if keep is None or not keep(value):
                    raise
                out[name] = value
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
