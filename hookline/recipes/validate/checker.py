"""`FileChecker`: every check `hookline check` runs on one recipe file.

Structure is checked by the pydantic models (``extra="forbid"``) and their errors translated
into located, hinted problems (`structure`); meaning (actions and their parameters, templates,
step references, env names, duplicate ids) is checked here and in `templates` on the raw YAML,
so a structural mistake in one step does not hide a template mistake in another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hookline.recipes.actions import (
    RESERVED_PARAMS,
    param_types,
    required_params,
    takes_any_keyword,
)
from hookline.recipes.errors import Problem
from hookline.recipes.models import ActionLike, first_problem
from hookline.recipes.templating import is_template
from hookline.recipes.validate.report import Report, choices_hint, did_you_mean, kind_of
from hookline.recipes.validate.structure import check_structure
from hookline.recipes.validate.templates import ALL_NAMES, EVENT_NAMES, Scope, TemplateChecker
from hookline.recipes.yamlpos import Document, Path_


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
        self.doc = doc
        self.actions = actions
        self.report = Report(path, doc)
        self.templates = TemplateChecker(
            self.report,
            env_allowed=env_allowed,
            env_source=env_source,
            actions=actions,
            environ=environ,
        )

    @property
    def problems(self) -> list[Problem]:
        """The problems found, in the order found."""
        return self.report.problems

    def check(self) -> None:
        """Run every check of the file; what it finds is in `problems`."""
        data = self.doc.data
        if data is None:
            self.report.add(
                (), "the file is empty", hint="a recipe needs at least name, on and steps"
            )
            return
        if not isinstance(data, dict):
            self.report.add(
                (),
                f"a recipe is a mapping (name:, on:, steps:), not {kind_of(data)}",
            )
            return
        check_structure(self.report, data)
        base = frozenset({*EVENT_NAMES, "env", "recipe"})
        for key in ("when",):
            v = data.get(key)
            if isinstance(v, str):
                self.templates.check_template((key,), v, Scope("when", base), expression=True)
        v = data.get("order_by")
        if isinstance(v, str):
            self.templates.check_template(
                ("order_by",), v, Scope("order_by", base), expression=False
            )
        co = data.get("coalesce")
        if isinstance(co, dict) and isinstance(co.get("key"), str):
            self.templates.check_template(
                ("coalesce", "key"), co["key"], Scope("order_by", base), expression=False
            )
        if "late" in data and not data.get("order_by") and not data.get("coalesce"):
            self.report.add(
                ("late",),
                "late has no effect without order_by",
                hint="add order_by (the key whose events must stay in order), or remove late",
            )
        on = data.get("on")
        for i, pattern in enumerate(on if isinstance(on, list) else [on]):
            p: Path_ = ("on", i) if isinstance(on, list) else ("on",)
            if isinstance(pattern, str) and (not pattern.strip() or " " in pattern.strip()):
                self.report.add(
                    p,
                    f"bad event type pattern {pattern!r}",
                    hint="one type or glob per entry, such as 'billing.*'; use a list for several",
                )
        self._steps(data)

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
                        self.report.add(
                            (section, i, "id"),
                            f"duplicate step id '{sid}'",
                            hint=f"first used at line {ids_first[sid]}; step ids must be unique",
                        )
                    else:
                        ids_first[sid] = self.doc.pos((section, i, "id")).line
                    if section == "steps":
                        main_ids.append(sid)
                elif sid is None and section == "steps":
                    self.report.add(
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
                    scope = Scope(
                        "step",
                        frozenset({*EVENT_NAMES, "env", "recipe", "steps", "run", "coalesced"}),
                        prior,
                        later,
                        sid,
                    )
                else:
                    prior = dict(outputs_of)
                    scope = Scope("on_failure", frozenset(ALL_NAMES), prior, frozenset(), sid)
                if sid is not None:
                    outputs_of[sid] = tuple(action.outputs) if action is not None else None
                cond = item.get("if")
                if isinstance(cond, str):
                    self.templates.check_template((section, i, "if"), cond, scope, expression=True)
                with_ = item.get("with")
                if isinstance(with_, dict):
                    scope = replace(scope, runs=self.templates.may_run(cond))
                    for k, v in with_.items():
                        self.templates.check_value((section, i, "with", k), v, scope)

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
            self.report.add((section, i, "uses"), f"unknown action '{uses}'", hint=hint)
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
                self.report.add(
                    path,
                    f"'{k}' is reserved: the engine sets it for every step",
                    hint="remove it; retries and replays reuse the key automatically",
                    at_key=True,
                )
                continue
            if k not in params:
                if not any_kw:
                    self.report.add(
                        path,
                        f"{uses} takes no parameter '{k}'",
                        hint=choices_hint(str(k), takes_params, "parameters"),
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
                self.report.add(path, f"{v!r} is not a valid {ptype.label}: {first_problem(exc)}")
        missing = [n for n in required_params(action) if n not in with_]
        if missing:
            names = ", ".join(f"'{n}'" for n in missing)
            where: Path_ = (section, i, "with") if "with" in item else (section, i, "uses")
            self.report.add(
                where,
                f"{uses} needs {names}",
                hint=f"parameters: {', '.join(takes_params)}",
                at_key="with" in item,
            )
        return action


def _contains_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(_contains_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_template(v) for v in value)
    return False
