"""The checks `hookline check` runs on one recipe file.

Structure is checked by the pydantic models (``extra="forbid"``) and their errors translated
into located, hinted problems; meaning (actions and their parameters, templates, step
references, env names, duplicate ids) is checked here on the raw YAML, so a structural mistake
in one step does not hide a template mistake in another.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from pydantic import ValidationError

from hookline.recipes.actions import (
    RESERVED_PARAMS,
    param_types,
    required_params,
    takes_any_keyword,
)
from hookline.recipes.envcheck import known_truth, unguarded
from hookline.recipes.errors import Problem
from hookline.recipes.models import (
    ActionLike,
    DefaultsSpec,
    ParamType,
    RecipeSpec,
    StepSpec,
)
from hookline.recipes.templating import (
    ENV,
    JINJA_GLOBALS,
    ast_expression,
    ast_template,
    compile_expression,
    compile_template,
    is_template,
    looks_like_github_syntax,
)
from hookline.recipes.yamlpos import Document, Path_

RECIPE_KEYS = {"recipe": ("name", "description", "path")}
RUN_KEYS = ("id", "name", "url")
FAILURE_KEYS = ("step", "uses", "error", "attempts")
COALESCED_KEYS = ("count", "first", "last", "events")
EVENT_NAMES = ("event", "data", "account", "event_type", "event_id", "timestamp", "source")
ALL_NAMES = (*EVENT_NAMES, "env", "recipe", "steps", "run", "failure", "coalesced")
_ENV_STYLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``did you mean 'x'?`` for the closest choice, or None."""
    pool = list(choices)
    hits = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not hits and "." in word:
        tail = word.rsplit(".", 1)[1]
        hits = [c for c in pool if c.rsplit(".", 1)[-1] == tail]
        if not hits:
            tails = {c.rsplit(".", 1)[-1]: c for c in pool}
            close = difflib.get_close_matches(tail, list(tails), n=1, cutoff=0.75)
            hits = [tails[close[0]]] if close else []
    return f"did you mean '{hits[0]}'?" if hits else None


def _hint(word: str, choices: Iterable[str], label: str) -> str:
    pool = sorted(set(choices))
    dym = did_you_mean(word, pool)
    listing = f"{label}: {', '.join(pool)}" if pool else f"there are no {label}"
    return f"{dym} ({listing})" if dym else listing


@dataclass
class _Scope:
    """What a template in one place of a recipe may see."""

    where: str  # "when", "order_by", "step", "on_failure"
    names: frozenset[str]
    prior: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    later: frozenset[str] = frozenset()
    current: str | None = None
    runs: bool = True  # False: the step's `if` is false in this environment


def _chain(node: nodes.Node) -> tuple[str, list[str], int] | None:
    attrs: list[str] = []
    cur = node
    while True:
        if isinstance(cur, nodes.Getattr):
            attrs.append(cur.attr)
            cur = cur.node
        elif (
            isinstance(cur, nodes.Getitem)
            and isinstance(cur.arg, nodes.Const)
            and isinstance(cur.arg.value, str)
        ):
            attrs.append(cur.arg.value)
            cur = cur.node
        else:
            break
    if isinstance(cur, nodes.Name) and cur.ctx == "load":
        return cur.name, attrs[::-1], node.lineno
    return None


class FileChecker:
    """Collects every problem of one parsed recipe file (`check()`, then `.problems`)."""

    def __init__(
        self,
        path: Path,
        doc: Document,
        *,
        env_allowed: frozenset[str],
        env_source: str,
        actions: Mapping[str, ActionLike] | None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.doc = doc
        self.env_allowed = env_allowed
        self.env_source = env_source
        self.actions = actions
        # the variables recipes may read that are set; None: env.NAME is not checked
        self.env_set = (
            None
            if environ is None
            else {name: environ[name] for name in env_allowed if name in environ}
        )
        self.problems: list[Problem] = []
        self._seen: set[str] = set()

    # -- reporting ---------------------------------------------------------------------------

    def add(
        self,
        path: Path_,
        message: str,
        *,
        hint: str | None = None,
        at_key: bool = False,
        line_offset: int = 0,
        field_: str | None = None,
        field_from: Path_ | None = None,
    ) -> None:
        pos = self.doc.pos(path)
        line, col = (pos.key_line, pos.key_column) if at_key else (pos.line, pos.column)
        if line_offset:
            line += line_offset
        step, fld = self._step_and_field(path if field_from is None else field_from)
        problem = Problem(self.path, line, col, message, step=step, field=field_ or fld, hint=hint)
        text = str(problem)
        if text not in self._seen:
            self._seen.add(text)
            self.problems.append(problem)

    def _step_and_field(self, path: Path_) -> tuple[str | None, str | None]:
        data = self.doc.data
        if len(path) >= 2 and path[0] in ("steps", "on_failure") and isinstance(path[1], int):
            items = data.get(path[0]) if isinstance(data, dict) else None
            step_id = None
            if isinstance(items, list) and path[1] < len(items):
                item = items[path[1]]
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    step_id = item["id"]
            rest = path[2:]
            if step_id is not None:
                return step_id, _dotted(rest) or None
            return None, _dotted(path)
        return None, _dotted(path) or None

    # -- templates ---------------------------------------------------------------------------

    def _template_line(self, path: Path_, lineno: int) -> int:
        pos = self.doc.pos(path)
        if pos.style in ("|", ">"):
            return lineno  # block content starts on the line after the indicator
        return max(lineno - 1, 0)

    def check_template(self, path: Path_, source: str, scope: _Scope, *, expression: bool) -> None:
        if looks_like_github_syntax(source):
            self.add(
                path,
                "'${{ ... }}' is GitHub Actions syntax",
                hint="write {{ ... }} in a template, or the bare expression in when/if",
            )
            return
        if _ENV_STYLE.search(source):
            m = _ENV_STYLE.search(source)
            name = m.group(0)[2:-1].split(":-")[0] if m else "NAME"
            self.add(
                path,
                f"'{m.group(0) if m else ''}' is hookline.yaml syntax; recipes read the "
                f"environment as {{{{ env.{name} }}}}",
                hint=f"write {{{{ env.{name} }}}} (and list {name} under env: in hookline.yaml)",
            )
            return
        try:
            if expression:
                stripped = source.strip()
                if stripped.startswith("{{") or stripped.startswith("{%"):
                    self.add(
                        path,
                        "this is an expression, not a template",
                        hint=f"drop the braces: {_unbrace(stripped)}",
                    )
                    return
                expr = ast_expression(source)
                tree = nodes.Template([nodes.Output([expr], lineno=1)], lineno=1)
                tree.set_environment(ENV)
                compile_expression(source)
            else:
                tree = ast_template(source)
                compile_template(source)
        except TemplateSyntaxError as exc:
            self.add(
                path,
                f"template syntax error: {(exc.message or '').rstrip('.')}",
                hint=_syntax_hint(exc.message or ""),
                line_offset=self._template_line(path, exc.lineno or 1),
            )
            return
        self._check_names(path, tree, scope)
        self._check_env_set(path, tree, scope)
        if not expression:
            self._check_text_for_typed_param(path, tree)

    def _check_env_set(self, path: Path_, tree: nodes.Template, scope: _Scope) -> None:
        """An ``env.NAME`` read without a guard must be set: a run fails without it."""
        if self.env_set is None or not scope.runs:
            return
        for name, lineno in unguarded(tree, self.env_set):
            if name not in self.env_allowed or name in self.env_set:
                continue  # not allowed: reported by _check_ref
            skip = (
                f", or skip the step without it: if: env.{name} is defined"
                if scope.where in ("step", "on_failure")
                else ""
            )
            self.add(
                path,
                f"env.{name} is not set, and nothing guards it: a run that gets here fails "
                f'with "env.{name} is not set"',
                hint=f"set {name} where Hookline runs (hookline check --env {name}=VALUE "
                f"checks for another environment), or give it a default: "
                f"env.{name} | default('...'){skip}",
                line_offset=self._template_line(path, lineno),
            )

    def _may_run(self, cond: Any) -> bool:
        """False when a step's ``if`` is false in this environment, whatever the event."""
        if self.env_set is None or cond is True or cond is None:
            return True
        if cond is False:
            return False
        if not isinstance(cond, str):
            return True
        try:
            expr = ast_expression(cond)
        except TemplateSyntaxError:
            return True  # reported where the `if` is checked
        return known_truth(expr, self.env_set) is not False

    def _check_text_for_typed_param(self, path: Path_, tree: nodes.Template) -> None:
        """``priority: "P{{ x }}"`` always renders text: an error for a parameter that does
        not take text."""
        if len(path) != 4 or path[2] != "with" or not isinstance(path[3], str):
            return
        ptype = self._param_type(path)
        if ptype is None or ptype.takes_text or ptype.adapter is None:
            return
        literal = "".join(
            n.data for n in tree.find_all(nodes.TemplateData) if isinstance(n.data, str)
        )
        if any(ch.isalpha() for ch in literal):
            self.add(
                path,
                f"this template always renders text ({literal.strip()!r} around the "
                f"expression), but {path[3]} takes {ptype.label}",
                hint='render the value alone: "{{ ... }}"',
            )

    def _param_type(self, path: Path_) -> ParamType | None:
        data = self.doc.data
        try:
            uses = data[path[0]][path[1]]["uses"]
        except (KeyError, IndexError, TypeError):
            return None
        action = (
            self.actions.get(uses) if self.actions is not None and isinstance(uses, str) else None
        )
        if action is None:
            return None
        return param_types(action).get(str(path[3]))

    def _check_names(self, path: Path_, tree: nodes.Template, scope: _Scope) -> None:
        for name in sorted(meta.find_undeclared_variables(tree)):
            if name in scope.names or name in JINJA_GLOBALS:
                continue
            if name in ALL_NAMES:
                self.add(
                    path,
                    f"'{name}' is not available in {_where_label(scope.where)}",
                    hint=f"available: {', '.join(sorted(scope.names))}",
                )
            else:
                self.add(
                    path,
                    f"unknown variable '{name}'",
                    hint=_hint(name, scope.names, "variables"),
                )
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            found = _chain(node)
            if found is None:
                continue
            root, attrs, lineno = found
            if not attrs or root not in scope.names:
                continue
            off = self._template_line(path, lineno)
            self._check_ref(path, root, attrs, scope, off)

    def _check_ref(self, path: Path_, root: str, attrs: list[str], scope: _Scope, off: int) -> None:
        first = attrs[0]
        if root == "steps":
            if first == scope.current:
                self.add(
                    path,
                    f"steps.{first} is this step itself; a step sees only earlier steps' outputs",
                    line_offset=off,
                )
            elif first in scope.later:
                self.add(
                    path,
                    f"steps.{first} refers to step '{first}', which runs later",
                    hint="a step sees only the outputs of the steps before it; move it down",
                    line_offset=off,
                )
            elif first not in scope.prior:
                self.add(
                    path,
                    f"steps.{first}: there is no step '{first}'",
                    hint=_hint(first, scope.prior, "earlier steps"),
                    line_offset=off,
                )
            elif len(attrs) >= 2:
                outputs = scope.prior[first]
                if outputs is not None and attrs[1] not in outputs:
                    self.add(
                        path,
                        f"steps.{first}.{attrs[1]}: step '{first}' has no output '{attrs[1]}'",
                        hint=_hint(attrs[1], outputs, "outputs"),
                        line_offset=off,
                    )
        elif root == "env":
            if first not in self.env_allowed:
                self.add(
                    path,
                    f"env.{first} is not allowed by {self.env_source}",
                    hint=_env_hint(first, self.env_allowed, self.env_source),
                    line_offset=off,
                )
        elif root in ("recipe", "run", "failure", "coalesced"):
            keys = {
                "recipe": RECIPE_KEYS["recipe"],
                "run": RUN_KEYS,
                "failure": FAILURE_KEYS,
                "coalesced": COALESCED_KEYS,
            }
            if first not in keys[root]:
                self.add(
                    path,
                    f"{root}.{first}: '{root}' has no field '{first}'",
                    hint=_hint(first, keys[root], "fields"),
                    line_offset=off,
                )

    def check_value(self, path: Path_, value: Any, scope: _Scope) -> None:
        if isinstance(value, str):
            if is_template(value) or "${" in value:
                self.check_template(path, value, scope, expression=False)
        elif isinstance(value, dict):
            for k, v in value.items():
                self.check_value((*path, k), v, scope)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.check_value((*path, i), v, scope)

    # -- the recipe --------------------------------------------------------------------------

    def check(self) -> None:
        data = self.doc.data
        if data is None:
            self.add((), "the file is empty", hint="a recipe needs at least name, on and steps")
            return
        if not isinstance(data, dict):
            self.add(
                (),
                f"a recipe is a mapping (name:, on:, steps:), not {_kind(data)}",
            )
            return
        self._structure(data)
        base = frozenset({*EVENT_NAMES, "env", "recipe"})
        for key in ("when",):
            v = data.get(key)
            if isinstance(v, str):
                self.check_template((key,), v, _Scope("when", base), expression=True)
        v = data.get("order_by")
        if isinstance(v, str):
            self.check_template(("order_by",), v, _Scope("order_by", base), expression=False)
        co = data.get("coalesce")
        if isinstance(co, dict) and isinstance(co.get("key"), str):
            self.check_template(
                ("coalesce", "key"), co["key"], _Scope("order_by", base), expression=False
            )
        if "late" in data and not data.get("order_by") and not data.get("coalesce"):
            self.add(
                ("late",),
                "late has no effect without order_by",
                hint="add order_by (the key whose events must stay in order), or remove late",
            )
        on = data.get("on")
        for i, pattern in enumerate(on if isinstance(on, list) else [on]):
            p: Path_ = ("on", i) if isinstance(on, list) else ("on",)
            if isinstance(pattern, str) and (not pattern.strip() or " " in pattern.strip()):
                self.add(
                    p,
                    f"bad event type pattern {pattern!r}",
                    hint="one type or glob per entry, such as 'billing.*'; use a list for several",
                )
        self._steps(data)

    def _structure(self, data: dict[str, Any]) -> None:
        try:
            RecipeSpec.model_validate(data)
        except ValidationError as exc:
            for err in _merge_union_errors(exc.errors(), data):
                self._pydantic_problem(err, data)

    def _pydantic_problem(self, err: dict[str, Any], data: Any) -> None:
        loc: Path_ = err["loc"]
        etype = err["type"]
        last = loc[-1] if loc else ""
        parent = loc[:-1]
        model = _model_at(parent)
        if etype == "extra_forbidden":
            valid = _keys_of(model)
            hint = _hint(str(last), valid, "valid keys")
            if model is RecipeSpec and last in ("uses", "with", "if", "id"):
                hint = f"'{last}' belongs to a step, under steps:"
            self.add(loc, f"unknown key '{last}'", hint=hint, at_key=True, field_from=parent)
            return
        if etype == "missing":
            what = "step" if model is StepSpec else "recipe" if model is RecipeSpec else "mapping"
            self.add(
                parent,
                f"missing required key '{last}'",
                hint=_MISSING_HINTS.get(str(last)) or f"a {what} needs {last}:",
                at_key=bool(parent),
            )
            return
        if etype == "string_pattern_mismatch":
            value = err.get("input")
            if last == "name":
                self.add(
                    loc,
                    f"recipe name {value!r} may contain only letters, digits, '.', '_', '-'",
                    hint="it names flow runs and idempotency keys",
                )
            elif last == "id":
                fixed = re.sub(r"\W", "_", str(value))
                if fixed and fixed[0].isdigit():
                    fixed = "_" + fixed
                self.add(
                    loc,
                    f"step id {value!r} is not a valid identifier",
                    hint=f"use letters, digits and '_' so that steps.<id> works; try '{fixed}'",
                )
            else:
                self.add(loc, err["msg"])
            return
        if etype == "value_error":
            msg = str(err["msg"]).removeprefix("Value error, ")
            self.add(loc, msg)
            return
        if etype == "too_short" and last in ("steps",):
            self.add(loc, "a recipe needs at least one step", at_key=True)
            return
        if etype == "invalid_key":
            self.add(loc, f"key {last!r} must be text", hint="quote it", at_key=True)
            return
        if etype == "hookline_union":
            self.add(loc, err["msg"])
            return
        expected = _EXPECTED.get(etype)
        if expected is not None:
            self.add(loc, f"expected {expected}, got {_kind(err.get('input'))}")
            return
        msg = str(err["msg"])
        self.add(loc, msg[:1].lower() + msg[1:])

    def _steps(self, data: dict[str, Any]) -> None:
        main = data.get("steps") if isinstance(data.get("steps"), list) else []
        fail = data.get("on_failure") if isinstance(data.get("on_failure"), list) else []
        sections: list[tuple[str, list[Any]]] = [("steps", main or []), ("on_failure", fail or [])]
        ids_first: dict[str, int] = {}
        main_ids: list[str] = []
        for section, items in sections:
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    continue
                sid = item.get("id")
                if isinstance(sid, str):
                    if sid in ids_first:
                        self.add(
                            (section, i, "id"),
                            f"duplicate step id '{sid}'",
                            hint=f"first used at line {ids_first[sid]}; step ids must be unique",
                        )
                    else:
                        ids_first[sid] = self.doc.pos((section, i, "id")).line
                    if section == "steps":
                        main_ids.append(sid)
                elif sid is None and section == "steps":
                    self.add(
                        (section, i),
                        "missing required key 'id'",
                        hint="every step needs an id: it names the step in logs, in "
                        "steps.<id> and in the idempotency key",
                    )
        outputs_of: dict[str, tuple[str, ...] | None] = {}
        for section, items in sections:
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    continue
                sid = item.get("id") if isinstance(item.get("id"), str) else None
                action = self._check_action(section, i, item)
                if section == "steps":
                    prior = dict(outputs_of)
                    later = frozenset(main_ids) - set(prior) - {sid}
                    scope = _Scope(
                        "step",
                        frozenset({*EVENT_NAMES, "env", "recipe", "steps", "run", "coalesced"}),
                        prior,
                        later,
                        sid,
                    )
                else:
                    prior = dict(outputs_of)
                    scope = _Scope("on_failure", frozenset(ALL_NAMES), prior, frozenset(), sid)
                if sid is not None:
                    outputs_of[sid] = tuple(action.outputs) if action is not None else None
                cond = item.get("if")
                if isinstance(cond, str):
                    self.check_template((section, i, "if"), cond, scope, expression=True)
                with_ = item.get("with")
                if isinstance(with_, dict):
                    scope = replace(scope, runs=self._may_run(cond))
                    for k, v in with_.items():
                        self.check_value((section, i, "with", k), v, scope)

    def _check_action(self, section: str, i: int, item: dict[str, Any]) -> ActionLike | None:
        uses = item.get("uses")
        if not isinstance(uses, str) or self.actions is None:
            return None
        action = self.actions.get(uses)
        if action is None:
            connectors = sorted({a.split(".", 1)[0] for a in self.actions})
            dym = did_you_mean(uses, self.actions)
            conn = uses.split(".", 1)[0]
            same = sorted(a for a in self.actions if a.split(".", 1)[0] == conn)
            if dym:
                hint = dym
            elif same:
                hint = f"{conn} actions: {', '.join(same)}"
            else:
                hint = f"connectors: {', '.join(connectors)} (see docs/connectors.md)"
            self.add((section, i, "uses"), f"unknown action '{uses}'", hint=hint)
            return None
        with_ = item.get("with")
        if with_ is None:
            with_ = {}
        if not isinstance(with_, dict):
            return action
        params = {
            n
            for n, p in action.params.parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
        takes_params = sorted(params - RESERVED_PARAMS)
        any_kw = takes_any_keyword(action)
        types = param_types(action)
        for k, v in with_.items():
            path: Path_ = (section, i, "with", k)
            if not isinstance(k, str):
                continue  # the structure check reports non-text keys
            if k in RESERVED_PARAMS:
                self.add(
                    path,
                    f"'{k}' is reserved: the engine sets it for every step",
                    hint="remove it; retries and replays reuse the key automatically",
                    at_key=True,
                )
                continue
            if k not in params:
                if not any_kw:
                    self.add(
                        path,
                        f"{uses} takes no parameter '{k}'",
                        hint=_hint(str(k), takes_params, "parameters"),
                        at_key=True,
                    )
                continue
            if _contains_template(v):
                continue
            ptype = types.get(k)
            if ptype is None:
                continue
            try:
                ptype.coerce(v)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"] if exc.errors() else str(exc)
                self.add(
                    path,
                    f"{v!r} is not a valid {ptype.label}: {msg[:1].lower() + msg[1:]}",
                )
        missing = [n for n in required_params(action) if n not in with_]
        if missing:
            names = ", ".join(f"'{n}'" for n in missing)
            where: Path_ = (section, i, "with") if "with" in item else (section, i, "uses")
            self.add(
                where,
                f"{uses} needs {names}",
                hint=f"parameters: {', '.join(takes_params)}",
                at_key="with" in item,
            )
        return action


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
                    "msg": f"expected {' or '.join(nouns)}, got {_kind(errs[0].get('input'))}",
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


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _syntax_hint(message: str) -> str | None:
    from hookline.recipes.templating import ENV as _ENV

    for kind, pool in (("filter", _ENV.filters), ("test", _ENV.tests)):
        m = re.match(rf"No {kind} named '([^']+)'", message)
        if m:
            return did_you_mean(m.group(1), pool) or f"{kind}s: {', '.join(sorted(pool))}"
    return None


def _env_hint(name: str, allowed: Iterable[str], source: str) -> str:
    add = f"add {name} to the env: list of {source} to let recipes read it"
    dym = did_you_mean(name, allowed)
    return f"{dym} If not, {add}" if dym else add


def _where_label(where: str) -> str:
    return {
        "when": "when (it runs before any step)",
        "order_by": "order_by (it is computed before any step)",
        "step": "steps (failure exists only in on_failure)",
        "on_failure": "on_failure",
    }[where]


def _unbrace(text: str) -> str:
    inner = text
    if inner.startswith("{{") and inner.endswith("}}"):
        inner = inner[2:-2].strip()
    return inner


def _contains_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(_contains_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_template(v) for v in value)
    return False
