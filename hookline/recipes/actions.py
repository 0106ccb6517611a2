"""What the recipe layer needs from the connector registry: which actions exist, which
parameters they take, and how a value is checked against a parameter's annotation."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from hookline.recipes.models import ActionLike, ParamType

RESERVED_PARAMS = frozenset({"idempotency_key"})


def default_actions() -> Mapping[str, ActionLike]:
    """The connector registry; imported when first asked for, so that importing the recipe
    language does not import every vendor SDK."""
    from hookline.connectors import ACTIONS

    return ACTIONS


def _base(ann: Any) -> Any:
    """The type under ``Annotated[type, validators...]``."""
    return typing.get_args(ann)[0] if typing.get_origin(ann) is typing.Annotated else ann


def _label(ann: Any) -> str:
    """``Annotated[str | float, ..., "duration"]`` is a "duration"; other types, as written."""
    if typing.get_origin(ann) is typing.Annotated:
        named = [m for m in typing.get_args(ann)[1:] if isinstance(m, str)]
        if named:
            return named[0]
    return inspect.formatannotation(_base(ann))


_PARAM_CACHE: dict[Any, dict[str, ParamType]] = {}


def param_types(action: ActionLike) -> dict[str, ParamType]:
    """How each parameter of ``action`` checks and converts values (cached per action)."""
    try:
        key: Any = (action.name, action.params, getattr(action, "func", None))
        hash(key)
    except TypeError:
        key = None
    cached = _PARAM_CACHE.get(key) if key is not None else None
    if cached is not None:
        return cached
    func = getattr(action, "func", None)
    try:
        hints = typing.get_type_hints(func, include_extras=True) if func is not None else {}
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {}
    out: dict[str, ParamType] = {}
    for name, p in action.params.parameters.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        ann = hints.get(name, p.annotation)
        if ann is inspect.Parameter.empty or isinstance(ann, str):
            out[name] = ParamType(None, True, "anything")
            continue
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(ann)
        except Exception:
            out[name] = ParamType(None, True, _label(ann))
            continue
        try:  # whether text can be valid at all; a validator may still reject this text
            TypeAdapter(_base(ann)).validate_python("x")
            takes_text = True
        except ValidationError:
            takes_text = False
        out[name] = ParamType(adapter, takes_text, _label(ann))
    if key is not None:
        _PARAM_CACHE[key] = out
    return out


def takes_any_keyword(action: ActionLike) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in action.params.parameters.values())


def required_params(action: ActionLike) -> list[str]:
    return [
        n
        for n, p in action.params.parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and n not in RESERVED_PARAMS
    ]
