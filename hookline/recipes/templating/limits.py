"""What one render may cost: text and integer sizes, widths, repeats, and its time limit.

A template, or a payload value it uses, must not take a worker or the dispatcher down. Text a
template builds or outputs is at most `MAX_TEXT` characters, an integer at most `MAX_INT_BITS`
bits, a padding or format width at most `MAX_WIDTH`, and one render at most `RENDER_SECONDS`
(`MATCH_SECONDS` for ``when``). Growth is refused *before* Python allocates it
(``'%050000000d' % 1``, ``'x'|center(data.width)``, ``(10**1000)**1000``): the environment
(`hookline.recipes.templating.environment`) calls `precheck_method` before a method call and
wraps every filter with `guarded_filter`; `guard` checks what an operation returned. The time
limit is checked (`tick`) at every loop iteration, call, attribute access and output. A limit
raises `RenderLimitError` (a sandbox `SecurityError`, which Jinja's sandbox expects).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeGuard, cast

from jinja2.exceptions import SecurityError

#: How deep a rendered value (nested lists and mappings) is checked and escaped.
MAX_DEPTH = 50
#: Most items a template may repeat a sequence to (``'-' * n``), or ask of ``batch``/``slice``.
MAX_REPEAT = 100_000

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


def tick() -> None:
    limit = _deadline.get()
    if limit is not None and time.monotonic() > limit[0]:
        raise RenderLimitError(
            f"rendering took longer than {limit[1]:g}s, the time limit of a recipe template "
            "(a loop over a large payload value?)"
        )


def guard(value: Any) -> Any:
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


def check_text(size: int, what: str) -> None:
    if size > MAX_TEXT:
        raise RenderLimitError(
            f"{what} would build a text of {size} characters (at most {MAX_TEXT})"
        )


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_WIDTH:
        raise RenderLimitError(f"{what}: a width of {width} is too large (at most {MAX_WIDTH})")


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def check_percent(fmt: str, args: Any) -> None:
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
            if is_int(v):
                _check_width(abs(v), f"format {fmt[:40]!r}")


def check_format_spec(fmt: str) -> None:
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
    if is_int(count) and count >= 0:
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
        pad = len(width) if isinstance(width, str) else int(width) if is_int(width) else 0
        check_text(len(str(a.get("s", ""))) + _lines(a.get("s", "")) * pad, "indent")
    elif name == "format":
        value = a.get("value")
        if isinstance(value, str):
            check_percent(value, a.get("kwargs") or tuple(a.get("args", ())))
    elif name == "replace":
        check_text(
            _replaced_size(a.get("s"), a.get("old"), a.get("new"), a.get("count")), "replace"
        )
    elif name in ("batch", "slice"):
        n = a.get("linecount", a.get("slices"))
        if is_int(n) and n > MAX_REPEAT:
            raise RenderLimitError(f"{name}({n}) is too large (at most {MAX_REPEAT})")
    elif name == "tojson":
        indent = a.get("indent")
        size = len(indent) if isinstance(indent, str) else indent if is_int(indent) else 0
        if size > MAX_INDENT:
            raise RenderLimitError(
                f"tojson: an indent of {size} is too large (at most {MAX_INDENT})"
            )
    elif name == "wordwrap":
        s, width = str(a.get("s", "")), a.get("width", 79)
        wrap = a.get("wrapstring") or "\n"
        breaks = len(s) // max(1, int(width) if is_int(width) else 1) + 1
        check_text(len(s) + breaks * len(str(wrap)), "wordwrap")
    elif name == "lipsum":
        if a.get("n", 5) > 100 or a.get("max", 100) > 1000:
            raise RenderLimitError("lipsum: at most 100 paragraphs of at most 1000 words")


def guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
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
        tick()
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
        return guard(func(*args, **kwargs))

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
            check_text(_joined_size(items, sep), "join")
    return tuple(rest), kwargs


def precheck_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
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
        if is_int(tab):
            check_text(
                len(owner)
                + cast(Any, owner).count("\t" if isinstance(owner, str) else b"\t") * tab,
                "expandtabs()",
            )
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        check_text(_replaced_size(owner, args[0], args[1], count), "replace()")
    elif name == "join" and args:
        items = list(args[0])
        check_text(_joined_size(items, owner), "join()")
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str | bytes)), default=1)
        check_text(len(owner) * max(1, longest), "translate()")
    return args


def precheck_binop(operator: str, left: Any, right: Any) -> None:
    """Size checks, before Python runs it, of an arithmetic operator that can grow its result:
    a typo such as ``'-' * 10**9`` must not take the worker down with it."""
    if operator == "**" and is_int(left) and is_int(right) and right > 0:
        if abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
            raise RenderLimitError(
                f"{left.bit_length()}-bit number ** {right} is too large "
                f"(results of at most {MAX_INT_BITS} bits)"
            )
    if operator == "*":
        if is_int(left) and is_int(right):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise RenderLimitError(
                    f"multiplying a {left.bit_length()}-bit and a {right.bit_length()}-bit "
                    f"number is too large (results of at most {MAX_INT_BITS} bits)"
                )
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and is_int(n):
                if len(seq) * n > MAX_REPEAT:
                    raise RenderLimitError(
                        f"repeating a sequence to {len(seq) * n} items is too large "
                        f"(at most {MAX_REPEAT})"
                    )
    if operator == "+":
        if isinstance(left, str | bytes) and isinstance(right, str | bytes):
            check_text(len(left) + len(right), "+")
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            if len(left) + len(right) > MAX_REPEAT * 10:
                raise RenderLimitError(
                    f"+ would build a list of {len(left) + len(right)} items "
                    f"(at most {MAX_REPEAT * 10})"
                )
    if operator == "%" and isinstance(left, str):
        check_percent(left, right)
