"""The structure of a recipe file: pydantic's errors of `RecipeSpec`, as located, hinted
problems (``unknown key 'uses'``: it belongs to a step, under steps:)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from hookline.recipes.models import DefaultsSpec, RecipeSpec, StepSpec
from hookline.recipes.validate.report import Report, choices_hint, kind_of
from hookline.recipes.yamlpos import Path_


def check_structure(report: Report, data: dict[str, Any]) -> None:
    """Report every structural problem of the recipe ``data``."""
    try:
        RecipeSpec.model_validate(data)
    except ValidationError as exc:
        for err in _merge_union_errors(exc.errors(), data):
            _problem(report, err)


def _problem(report: Report, err: dict[str, Any]) -> None:
    loc: Path_ = err["loc"]
    etype = err["type"]
    last = loc[-1] if loc else ""
    parent = loc[:-1]
    model = _model_at(parent)
    if etype == "extra_forbidden":
        valid = _keys_of(model)
        hint = choices_hint(str(last), valid, "valid keys")
        if model is RecipeSpec and last in ("uses", "with", "if", "id"):
            hint = f"'{last}' belongs to a step, under steps:"
        report.add(loc, f"unknown key '{last}'", hint=hint, at_key=True, field_from=parent)
        return
    if etype == "missing":
        what = "step" if model is StepSpec else "recipe" if model is RecipeSpec else "mapping"
        report.add(
            parent,
            f"missing required key '{last}'",
            hint=_MISSING_HINTS.get(str(last)) or f"a {what} needs {last}:",
            at_key=bool(parent),
        )
        return
    if etype == "string_pattern_mismatch":
        value = err.get("input")
        if last == "name":
            report.add(
                loc,
                f"recipe name {value!r} may contain only letters, digits, '.', '_', '-'",
                hint="it names flow runs and idempotency keys",
            )
        elif last == "id":
            fixed = re.sub(r"\W", "_", str(value))
            if fixed and fixed[0].isdigit():
                fixed = "_" + fixed
            report.add(
                loc,
                f"step id {value!r} is not a valid identifier",
                hint=f"use letters, digits and '_' so that steps.<id> works; try '{fixed}'",
            )
        else:
            report.add(loc, err["msg"])
        return
    if etype == "value_error":
        msg = str(err["msg"]).removeprefix("Value error, ")
        report.add(loc, msg)
        return
    if etype == "too_short" and last in ("steps",):
        report.add(loc, "a recipe needs at least one step", at_key=True)
        return
    if etype == "invalid_key":
        report.add(loc, f"key {last!r} must be text", hint="quote it", at_key=True)
        return
    if etype == "hookline_union":
        report.add(loc, err["msg"])
        return
    expected = _EXPECTED.get(etype)
    if expected is not None:
        report.add(loc, f"expected {expected}, got {kind_of(err.get('input'))}")
        return
    msg = str(err["msg"])
    report.add(loc, msg[:1].lower() + msg[1:])


_MISSING_HINTS = {
    "name": "add name: <unique-recipe-name>",
    "on": "add on: <event type>, e.g. on: service.status.changed (or a list, or 'billing.*')",
    "steps": "add steps: with at least one step",
    "uses": "add uses: <connector.action>, e.g. uses: slack.post_message",
}

_EXPECTED = {
    "string_type": "text",
    "list_type": "a list",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "float_type": "a number",
}


def _merge_union_errors(errors: list[Any], data: Any) -> list[dict[str, Any]]:
    """Drop pydantic's union-member loc parts ('str', 'list[str]') and merge per location."""
    by_loc: dict[Path_, list[dict[str, Any]]] = {}
    for err in errors:
        cleaned: list[str | int] = []
        cur = data
        parts = list(err["loc"])
        for j, part in enumerate(parts):
            if isinstance(cur, dict) and part in cur:
                cleaned.append(part)
                cur = cur[part]
            elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
                cleaned.append(part)
                cur = cur[part]
            elif j == len(parts) - 1 and err["type"] in ("missing", "extra_forbidden"):
                cleaned.append(part)
            elif isinstance(cur, dict | list) and not isinstance(part, str | int):
                continue
            elif isinstance(part, str) and (part in _UNION_TAGS or "[" in part):
                continue
            else:
                cleaned.append(part)
        e = dict(err)
        e["loc"] = tuple(cleaned)
        by_loc.setdefault(tuple(cleaned), []).append(e)
    out: list[dict[str, Any]] = []
    for loc, errs in by_loc.items():
        kinds = [_EXPECTED.get(e["type"]) for e in errs]
        if len(errs) > 1 and all(kinds):
            nouns = list(dict.fromkeys(k for k in kinds if k))
            out.append(
                {
                    "loc": loc,
                    "type": "hookline_union",
                    "msg": f"expected {' or '.join(nouns)}, got {kind_of(errs[0].get('input'))}",
                    "input": errs[0].get("input"),
                }
            )
        else:
            out.extend(errs[:1] if len(errs) > 1 else errs)
    return out


_UNION_TAGS = {"str", "bool", "int", "float", "list", "function-before", "function-after"}


def _model_at(path: Path_) -> type[Any] | None:
    if not path:
        return RecipeSpec
    if path[0] in ("steps", "on_failure") and len(path) == 2:
        return StepSpec
    if path == ("defaults",):
        return DefaultsSpec
    return None


def _keys_of(model: type[Any] | None) -> list[str]:
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]
