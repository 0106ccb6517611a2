"""The templates of a recipe file: syntax, the names each place may see (``steps.x`` only of
earlier steps, ``failure`` only in on_failure), fields of ``recipe``/``run``/``failure``,
``env`` names hookline.yaml allows and, where the environment is known, sets."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from pydantic import ValidationError

from hookline.recipes.actions import param_types
from hookline.recipes.envcheck import env_name, known_truth, unguarded
from hookline.recipes.models import ActionLike, ParamType, first_problem
from hookline.recipes.templating import (
    ENV,
    JINJA_GLOBALS,
    EnvVars,
    ast_expression,
    ast_template,
    compile_expression,
    compile_template,
    is_template,
    looks_like_github_syntax,
    render_template,
)
from hookline.recipes.validate.report import Report, choices_hint, did_you_mean
from hookline.recipes.yamlpos import Path_

RECIPE_KEYS = {"recipe": ("name", "description", "path")}
RUN_KEYS = ("id", "name", "url")
FAILURE_KEYS = ("step", "uses", "error", "attempts")
COALESCED_KEYS = ("count", "first", "last", "events")
EVENT_NAMES = ("event", "data", "account", "event_type", "event_id", "timestamp", "source")
ALL_NAMES = (*EVENT_NAMES, "env", "recipe", "steps", "run", "failure", "coalesced")
_ENV_STYLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")


@dataclass
class Scope:
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


class TemplateChecker:
    """Checks the templates of one recipe file, each in the `Scope` of its place."""

    def __init__(
        self,
        report: Report,
        *,
        env_allowed: frozenset[str],
        env_source: str,
        actions: Mapping[str, ActionLike] | None,
        environ: Mapping[str, str] | None,
    ) -> None:
        self.report = report
        self.env_allowed = env_allowed
        self.env_source = env_source
        self.actions = actions
        # the variables recipes may read that are set; None: env.NAME is not checked
        self.env_set = (
            None
            if environ is None
            else {name: environ[name] for name in env_allowed if name in environ}
        )

    def _template_line(self, path: Path_, lineno: int) -> int:
        pos = self.report.doc.pos(path)
        if pos.style in ("|", ">"):
            return lineno  # block content starts on the line after the indicator
        return max(lineno - 1, 0)

    def check_template(self, path: Path_, source: str, scope: Scope, *, expression: bool) -> None:
        """Report the problems of the template ``source`` at ``path`` (with ``expression``: of
        the bare expression of a ``when`` or ``if``)."""
        if looks_like_github_syntax(source):
            self.report.add(
                path,
                "'${{ ... }}' is GitHub Actions syntax",
                hint="write {{ ... }} in a template, or the bare expression in when/if",
            )
            return
        if _ENV_STYLE.search(source):
            m = _ENV_STYLE.search(source)
            name = m.group(0)[2:-1].split(":-")[0] if m else "NAME"
            self.report.add(
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
                    self.report.add(
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
            self.report.add(
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
            self._check_rendered_in_env(path, source, tree, scope)

    def _check_env_set(self, path: Path_, tree: nodes.Template, scope: Scope) -> None:
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
            self.report.add(
                path,
                f"env.{name} is not set, and nothing guards it: a run that gets here fails "
                f'with "env.{name} is not set"',
                hint=f"set {name} where Hookline runs (hookline check --env {name}=VALUE "
                f"checks for another environment), or give it a default: "
                f"env.{name} | default('...'){skip}",
                line_offset=self._template_line(path, lineno),
            )

    def may_run(self, cond: Any) -> bool:
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
        ptype = self._param_type(path)
        if ptype is None or ptype.takes_text or ptype.adapter is None:
            return
        literal = "".join(
            n.data for n in tree.find_all(nodes.TemplateData) if isinstance(n.data, str)
        )
        if any(ch.isalpha() for ch in literal):
            self.report.add(
                path,
                f"this template always renders text ({literal.strip()!r} around the "
                f"expression), but {path[3]} takes {ptype.label}",
                hint='render the value alone: "{{ ... }}"',
            )

    def _check_rendered_in_env(
        self, path: Path_, source: str, tree: nodes.Template, scope: Scope
    ) -> None:
        """A parameter's template that reads nothing but ``env`` renders the same for every
        event: render it here and check the value as a literal is checked
        (``after: "{{ env.ESCALATE_AFTER | default('15m', true) }}"`` with
        ``ESCALATE_AFTER=15 minutes`` fails every outage's run at that step)."""
        if self.env_set is None or not scope.runs:
            return
        names = meta.find_undeclared_variables(tree)
        if not names or not names <= {"env", *JINJA_GLOBALS}:
            return
        ptype = self._param_type(path)
        if ptype is None or ptype.adapter is None:
            return
        try:
            value = render_template(source, {"env": EnvVars(self.env_set)})
        except Exception:  # an unset env.NAME and the like: reported by _check_env_set
            return
        try:
            ptype.coerce(value)
        except ValidationError as exc:
            read = ", ".join(sorted(_env_names(tree)))
            self.report.add(
                path,
                f"renders {value!r} in this environment ({read}), which is not a valid "
                f"{ptype.label}: {first_problem(exc)}",
                hint="every run fails at this step until the variable is fixed "
                "(hookline check --env NAME=VALUE checks another environment)",
            )

    def _param_type(self, path: Path_) -> ParamType | None:
        """The type of the step parameter at ``path`` (``steps, i, with, name``); None
        elsewhere, or when the action or its parameter is unknown."""
        if len(path) != 4 or path[2] != "with" or not isinstance(path[3], str):
            return None
        data = self.report.doc.data
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

    def _check_names(self, path: Path_, tree: nodes.Template, scope: Scope) -> None:
        for name in sorted(meta.find_undeclared_variables(tree)):
            if name in scope.names or name in JINJA_GLOBALS:
                continue
            if name in ALL_NAMES:
                self.report.add(
                    path,
                    f"'{name}' is not available in {_where_label(scope.where)}",
                    hint=f"available: {', '.join(sorted(scope.names))}",
                )
            else:
                self.report.add(
                    path,
                    f"unknown variable '{name}'",
                    hint=choices_hint(name, scope.names, "variables"),
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

    def _check_ref(self, path: Path_, root: str, attrs: list[str], scope: Scope, off: int) -> None:
        first = attrs[0]
        if root == "steps":
            if first == scope.current:
                self.report.add(
                    path,
                    f"steps.{first} is this step itself; a step sees only earlier steps' outputs",
                    line_offset=off,
                )
            elif first in scope.later:
                self.report.add(
                    path,
                    f"steps.{first} refers to step '{first}', which runs later",
                    hint="a step sees only the outputs of the steps before it; move it down",
                    line_offset=off,
                )
            elif first not in scope.prior:
                self.report.add(
                    path,
                    f"steps.{first}: there is no step '{first}'",
                    hint=choices_hint(first, scope.prior, "earlier steps"),
                    line_offset=off,
                )
            elif len(attrs) >= 2:
                outputs = scope.prior[first]
                if outputs is not None and attrs[1] not in outputs:
                    self.report.add(
                        path,
                        f"steps.{first}.{attrs[1]}: step '{first}' has no output '{attrs[1]}'",
                        hint=choices_hint(attrs[1], outputs, "outputs"),
                        line_offset=off,
                    )
        elif root == "env":
            if first not in self.env_allowed:
                self.report.add(
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
                self.report.add(
                    path,
                    f"{root}.{first}: '{root}' has no field '{first}'",
                    hint=choices_hint(first, keys[root], "fields"),
                    line_offset=off,
                )

    def check_value(self, path: Path_, value: Any, scope: Scope) -> None:
        """`check_template` for every template inside ``value`` (mappings and lists walked)."""
        if isinstance(value, str):
            if is_template(value) or "${" in value:
                self.check_template(path, value, scope, expression=False)
        elif isinstance(value, dict):
            for k, v in value.items():
                self.check_value((*path, k), v, scope)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.check_value((*path, i), v, scope)


def _syntax_hint(message: str) -> str | None:
    for kind, pool in (("filter", ENV.filters), ("test", ENV.tests)):
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


def _env_names(tree: nodes.Template) -> set[str]:
    """Every ``env.NAME`` the template reads."""
    reads = tree.find_all((nodes.Getattr, nodes.Getitem))
    return {f"env.{name}" for node in reads if (name := env_name(node))}
