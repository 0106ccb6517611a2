"""JSON Schema for recipe files (and recipe test files), for editors.

With yaml-language-server (VS Code's YAML extension, Neovim, JetBrains), put this first line
in a recipe to get completion and inline errors::

    # yaml-language-server: $schema=recipe.schema.json

The schema is generated from the same pydantic models the loader uses, plus one ``if/then``
per connector action, so an editor completes ``uses:`` and the parameter names under
``with:``. `hookline check` stays the authority: templates, step references and parameter
types are beyond JSON Schema.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any

from hookline.recipes.actions import RESERVED_PARAMS, default_actions, param_types
from hookline.recipes.models import ActionLike, RecipeSpec

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _step_rules(actions: Mapping[str, ActionLike]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for name in sorted(actions):
        action = actions[name]
        types = param_types(action)
        props: dict[str, Any] = {}
        required: list[str] = []
        for pname, p in action.params.parameters.items():
            if pname in RESERVED_PARAMS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            label = types[pname].label if pname in types else "any"
            props[pname] = {"description": f"{label}; a template is allowed"}
            if p.default is inspect.Parameter.empty:
                required.append(pname)
        open_ = any(p.kind is p.VAR_KEYWORD for p in action.params.parameters.values())
        with_schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            with_schema["required"] = required
        if not open_:
            with_schema["additionalProperties"] = False
        rules.append(
            {
                "if": {"properties": {"uses": {"const": name}}, "required": ["uses"]},
                "then": {"properties": {"with": with_schema}},
            }
        )
    return rules


def recipe_schema(actions: Mapping[str, ActionLike] | None = None) -> dict[str, Any]:
    """The JSON Schema of a recipe file (actions default to the connector registry)."""
    acts = default_actions() if actions is None else actions
    schema = RecipeSpec.model_json_schema(by_alias=True, mode="validation")
    schema = {"$schema": SCHEMA_DIALECT, **schema}
    step = schema["$defs"]["StepSpec"]
    if acts:
        step["properties"]["uses"]["anyOf"] = [
            {"const": n, "description": (acts[n].description or "").strip().splitlines()[0]}
            if (acts[n].description or "").strip()
            else {"const": n}
            for n in sorted(acts)
        ] + [{"type": "string"}]
        step["allOf"] = _step_rules(acts)
    return schema


def recipe_test_schema() -> dict[str, Any]:
    """The JSON Schema of a recipe test file."""
    from hookline.recipes.testing import RecipeTestFile

    schema = RecipeTestFile.model_json_schema(by_alias=True, mode="validation")
    schema["title"] = "Hookline recipe test"
    return {"$schema": SCHEMA_DIALECT, **schema}


def dumps(schema: Mapping[str, Any]) -> str:
    """Stable text for a committed schema file."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
