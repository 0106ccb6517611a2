"""Recipe tests: sample events plus expectations, run offline by ``hookline test-recipes``.

A test file (``recipes/tests/<anything>.yaml``)::

    recipe: service-outage            # the recipe under test (optional, see `recipes:` below)
    env: {SLACK_ALERT_CHANNEL: "#noc"} # env.NAME values for every case (os.environ is NOT read)
    outputs:                          # fake outputs of steps; others are <steps.id.name>
      alert: {channel: C024BE91L, ts: "1705314600.000100"}
    cases:
      - name: an outage opens an incident
        sample: service.status.changed    # or event: {...} inline, or event_file: x.json
        set: {data: {current_status: outage, impact: high}}   # deep-merged into the event
        expect:
          matched: true
          order_key: svc_voice_001
          steps:
            alert: run
            incident: {status: run, with: {priority: 1}}
            link: {with: {thread_ts: "1705314600.000100"}}

`with` lists only the parameters to compare (exact, after rendering and type conversion);
`recipes: [a, b]` asserts exactly which recipes match, in order (no `recipe:` needed).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hookline.recipes.dryrun import RecipePreview, StepPreview, preview
from hookline.recipes.errors import Problem, RecipeError
from hookline.recipes.event import Event
from hookline.recipes.matcher import RecipeSet
from hookline.recipes.yamlpos import load_yaml

Status = Literal["run", "skipped", "error", "not reached"]


class StepExpect(BaseModel):
    """What one step must do."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    status: Status | None = Field(default=None, description="Default: run when `with` is set.")
    with_: dict[str, Any] | None = Field(default=None, alias="with")
    error: str | None = Field(default=None, description="Text the error must contain.")


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matched: bool | None = None
    recipes: list[str] | None = Field(
        default=None, description="Exactly these recipes match, in order."
    )
    reason: str | None = Field(default=None, description="Text the match reason must contain.")
    order_key: str | None = None
    coalesce_key: str | None = None
    steps: dict[str, Status | StepExpect] = Field(default_factory=dict)
    on_failure: dict[str, Status | StepExpect] = Field(default_factory=dict)


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    sample: str | None = Field(default=None, description="A packaged sample, by event type.")
    event: dict[str, Any] | None = Field(default=None, description="The event body, inline.")
    event_file: str | None = Field(default=None, description="JSON body, relative to this file.")
    source: str | None = None
    event_type: str | None = None
    set: dict[str, Any] | None = Field(default=None, description="Deep-merged into the event.")
    env: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    expect: Expect

    @model_validator(mode="after")
    def _one_event(self) -> Case:
        given = [k for k in ("sample", "event", "event_file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of sample, event, event_file"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class RecipeTestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: str | None = None
    description: str = ""
    source: str = "solveforce"
    env: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cases: list[Case] = Field(min_length=1)


@dataclass
class CaseResult:
    path: Path
    line: int
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def deep_merge(base: Any, patch: Any) -> Any:
    """``patch`` merged into a copy of ``base`` (mappings recursively; the rest replaced)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = deep_merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(patch)


def discover_tests(paths: Iterable[Path]) -> list[Path]:
    """Test files: files as given, ``*.yaml``/``*.yml`` under folders."""
    out: list[Path] = []
    for p in paths:
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(
                f for f in sorted(p.rglob("*")) if f.suffix in (".yaml", ".yml") and f.is_file()
            )
    return out


def _event_for(case: Case, spec: RecipeTestFile, path: Path) -> Event:
    from hookline import samples

    if case.sample is not None:
        body: Any = samples.load(case.sample)
    elif case.event_file is not None:
        body = json.loads((path.parent / case.event_file).read_text(encoding="utf-8"))
    else:
        body = copy.deepcopy(case.event)
    if case.set:
        body = deep_merge(body, case.set)
    return Event.from_envelope(body, source=case.source or spec.source, event_type=case.event_type)


def _check_steps(
    kind: str,
    expected: Mapping[str, Status | StepExpect],
    actual: list[StepPreview],
    failures: list[str],
) -> None:
    by_id = {s.step.id: s for s in actual}
    for sid, exp in expected.items():
        got = by_id.get(sid)
        if got is None:
            failures.append(
                f"{kind} '{sid}': no such step (steps: {', '.join(by_id) or 'none previewed'})"
            )
            continue
        want = exp if isinstance(exp, StepExpect) else StepExpect(status=exp)
        status = want.status or ("error" if want.error else "run")
        if got.status != status:
            extra = f": {got.error}" if got.error else f" ({got.reason})" if got.reason else ""
            failures.append(f"{kind} '{sid}': expected {status}, got {got.status}{extra}")
            continue
        if want.error is not None and want.error not in (got.error or ""):
            failures.append(f"{kind} '{sid}': error {got.error!r} lacks {want.error!r}")
        for name, value in (want.with_ or {}).items():
            if name not in got.params:
                failures.append(f"{kind} '{sid}' with.{name}: not rendered (not in the recipe)")
                continue
            actual_value = got.params[name]
            if isinstance(actual_value, str):
                actual_value = str(actual_value)
            if actual_value != value:
                failures.append(
                    f"{kind} '{sid}' with.{name}: expected {value!r}, got {actual_value!r}"
                )


def run_case(
    case: Case, spec: RecipeTestFile, path: Path, line: int, recipes: RecipeSet
) -> CaseResult:
    """Run one case against ``recipes``."""
    result = CaseResult(path, line, case.name)
    fail = result.failures
    try:
        event = _event_for(case, spec, path)
    except (KeyError, OSError, ValueError, RecipeError) as exc:
        fail.append(f"cannot build the event: {exc}")
        return result
    env = {**spec.env, **case.env}
    outputs = {**spec.outputs, **case.outputs}
    exp = case.expect
    if exp.recipes is not None:
        matched = [m.recipe.name for m in recipes.match(event, environ=env) if m.matched]
        if matched != exp.recipes:
            fail.append(f"expected recipes {exp.recipes} to match, got {matched}")
    if spec.recipe is None:
        if (
            exp.matched is not None
            or exp.steps
            or exp.on_failure
            or exp.order_key
            or exp.coalesce_key
        ):
            fail.append("matched/steps/order_key need `recipe:` at the top of the test file")
        return result
    recipe = recipes.get(spec.recipe)
    if recipe is None:
        known = ", ".join(r.name for r in recipes.recipes)
        fail.append(f"no recipe named {spec.recipe!r} (recipes: {known})")
        return result
    p: RecipePreview = preview(recipe, event, environ=env, outputs=outputs)
    if p.match.error is not None:
        fail.append(str(p.match.error))
    if exp.matched is not None and p.match.matched != exp.matched:
        fail.append(
            f"expected {'a match' if exp.matched else 'no match'}, got "
            f"{'a match' if p.match.matched else 'no match'}: {p.match.reason}"
        )
    if exp.reason is not None and exp.reason not in p.match.reason:
        fail.append(f"reason {p.match.reason!r} lacks {exp.reason!r}")
    if exp.order_key is not None and p.order_key != exp.order_key:
        fail.append(f"order_key: expected {exp.order_key!r}, got {p.order_key!r}")
    if exp.coalesce_key is not None and p.coalesce_key != exp.coalesce_key:
        fail.append(f"coalesce_key: expected {exp.coalesce_key!r}, got {p.coalesce_key!r}")
    if (exp.steps or exp.on_failure) and not p.match.matched:
        fail.append(f"steps expected, but the recipe did not match: {p.match.reason}")
        return result
    _check_steps("step", exp.steps, p.steps, fail)
    _check_steps("on_failure step", exp.on_failure, p.on_failure, fail)
    return result


def run_file(path: Path, recipes: RecipeSet) -> tuple[list[CaseResult], list[Problem]]:
    """Validate and run one test file."""
    doc = load_yaml(path.read_text(encoding="utf-8"))
    problems = [Problem(path, i.line, i.column, i.message, hint=i.hint) for i in doc.issues]
    if problems:
        return [], problems
    try:
        spec = RecipeTestFile.model_validate(doc.data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
            pos = doc.pos(loc)
            where = ".".join(str(x) for x in loc)
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key '{loc[-1]}'"
                pos_line, pos_col = pos.key_line, pos.key_column
            else:
                pos_line, pos_col = pos.line, pos.column
            problems.append(Problem(path, pos_line, pos_col, msg, field=where or None))
        return [], problems
    results = [
        run_case(case, spec, path, doc.pos(("cases", i)).line, recipes)
        for i, case in enumerate(spec.cases)
    ]
    return results, []
