"""Load recipe files, validate them completely, and compile them.

`load_recipes` reports *every* problem of *every* file at once (`RecipeLoadError.problems`),
each with ``file:line:column``, the step, the field and a hint (the checks live in
`hookline.recipes.validate`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hookline.config import HooklineConfig, get_settings, load_config
from hookline.recipes.actions import default_actions, param_types
from hookline.recipes.errors import Problem, RecipeLoadError
from hookline.recipes.models import ActionLike, Recipe, RecipeSpec, Step, StepSpec
from hookline.recipes.templating import (
    ast_template,
    compile_expression,
    compile_template,
    compile_value,
    is_template,
)
from hookline.recipes.validate import FileChecker
from hookline.recipes.yamlpos import Document, load_yaml

if typing.TYPE_CHECKING:
    from hookline.recipes.matcher import RecipeSet

log = logging.getLogger("hookline.recipes")


def discover(paths: Iterable[Path]) -> tuple[list[Path], list[Problem]]:
    """Recipe files under ``paths``: files as given; folders recursively (``*.yaml``,
    ``*.yml``), skipping ``tests/`` folders (recipe tests) and hidden entries."""
    files: list[Path] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for p in paths:
        if p.is_file():
            found = [p]
        elif p.is_dir():
            found = []
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if f.suffix not in (".yaml", ".yml") or not f.is_file():
                    continue
                if any(part == "tests" or part.startswith((".", "_")) for part in rel[:-1]):
                    continue
                if rel[-1].startswith((".", "_")):
                    continue
                found.append(f)
        else:
            problems.append(
                Problem(
                    p,
                    0,
                    0,
                    "no such file or folder",
                    hint="HOOKLINE_RECIPES lists recipe files or folders, separated by ':'",
                )
            )
            continue
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, problems


# --------------------------------------------------------------------------------------------
# Building


def _build(
    path: Path,
    doc: Document,
    spec: RecipeSpec,
    *,
    env_allowed: frozenset[str],
    actions: Mapping[str, ActionLike] | None,
) -> Recipe:
    d = spec.defaults

    def make(section: str, i: int, s: StepSpec) -> Step:
        action = actions.get(s.uses) if actions is not None else None
        cond: str | None
        if isinstance(s.if_, bool):
            cond = "true" if s.if_ else "false"
        else:
            cond = s.if_
        sid = s.id if s.id is not None else f"{section}_{i + 1}"
        return Step(
            id=sid,
            uses=s.uses,
            with_=dict(s.with_),
            if_=cond,
            retries=s.retries if s.retries is not None else d.retries,
            retry_backoff=s.retry_backoff if s.retry_backoff is not None else d.retry_backoff,
            timeout=s.timeout if s.timeout is not None else d.timeout,
            continue_on_error=s.continue_on_error,
            recipe=spec.name,
            path=path,
            line=doc.pos((section, i)).line,
            in_on_failure=section == "on_failure",
            action=action,
            compiled_with={
                k: compile_value(v, mrkdwn=k in frozenset(getattr(action, "mrkdwn", ())))
                for k, v in s.with_.items()
            },
            compiled_if=compile_expression(cond) if cond is not None else None,
            param_types=param_types(action) if action is not None else {},
        )

    when: str | None
    if isinstance(spec.when, bool):
        when = "true" if spec.when else "false"
    else:
        when = spec.when
    return Recipe(
        name=spec.name,
        description=spec.description,
        on=tuple([spec.on] if isinstance(spec.on, str) else spec.on),
        source=(
            None
            if spec.source is None
            else tuple([spec.source] if isinstance(spec.source, str) else spec.source)
        ),
        when=when,
        order_by=spec.order_by,
        defaults=d,
        steps=tuple(make("steps", i, s) for i, s in enumerate(spec.steps)),
        on_failure=tuple(make("on_failure", i, s) for i, s in enumerate(spec.on_failure)),
        path=path,
        line=doc.pos(("name",)).line,
        enabled=spec.enabled,
        env_allowed=env_allowed,
        compiled_when=compile_expression(when) if when is not None else None,
        compiled_order_by=compile_template(spec.order_by) if spec.order_by else None,
        late=spec.late,
        coalesce=spec.coalesce,
        compiled_coalesce_key=compile_template(spec.coalesce.key) if spec.coalesce else None,
    )


_EVENT_NAMES = frozenset({"data", "event", "account"})
_HOST_PINNED = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#{}]+[/?#]")


def url_host_warnings(recipe: Recipe) -> list[str]:
    """A warning per ``http.request`` step whose URL's host comes from the event: a sender
    could point Hookline at any host (an internal service, a cloud metadata address)."""
    from jinja2 import meta

    out: list[str] = []
    for step in (*recipe.steps, *recipe.on_failure):
        url = step.with_.get("url")
        if step.uses != "http.request" or not isinstance(url, str) or not is_template(url):
            continue
        literal = re.split(r"\{[{%#]", url, maxsplit=1)[0]
        if _HOST_PINNED.match(literal):
            continue  # scheme://host/ is written out before any template
        try:
            names = meta.find_undeclared_variables(ast_template(url))
        except Exception:  # a syntax error is reported as a problem already
            continue
        used = sorted(names & _EVENT_NAMES)
        if used:
            out.append(
                f"{step.where()}: with.url: the host of {url!r} comes from the event "
                f"({', '.join(used)}): a sender can make Hookline call any host. Write the "
                "host in the recipe (https://api.example.com/{{ data.path }}) or restrict "
                "connections.http.allow_hosts in hookline.yaml (docs/connectors.md#http)"
            )
    return out


def on_failure_warnings(recipe: Recipe) -> list[str]:
    """A warning when an enabled recipe has no ``on_failure``: a failed run tells nobody."""
    if recipe.on_failure or not recipe.enabled:
        return []
    return [
        f"recipe '{recipe.name}' ({recipe.path}:{recipe.line}) has no on_failure: when one "
        "of its steps fails, the run ends Failed and nobody is told. Add an on_failure step "
        'that tells on-call, e.g. slack.post_message with text "{{ recipe.name }} failed at '
        '{{ failure.step }}: {{ failure.error }} {{ run.url }}" '
        "(docs/recipes.md#steps-what-runs-what-stops-a-run)"
    ]


@dataclass
class LoadResult:
    """Everything `check_recipes` found."""

    recipes: list[Recipe]
    problems: list[Problem]
    warnings: list[str]
    files: list[Path]
    fingerprint: str = ""
    digests: dict[str, str] = field(default_factory=dict)
    """recipe name -> SHA-256 of its file: which recipes a reload changed."""


def source_name(path: Path, roots: Iterable[Path]) -> str:
    """``path`` as named in a fingerprint: relative to the recipe folder it was found in (a
    file given by itself: its name), so the same files give the same fingerprint wherever
    they are (``recipes`` or ``/srv/hookline/recipes``)."""
    for root in roots:
        if path == root:
            return path.name
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def set_fingerprint(files: Iterable[tuple[str, bytes]], env_allowed: Iterable[str]) -> str:
    """SHA-256 of a recipe set: each file's `source_name` and bytes, and hookline.yaml's
    ``env:`` allowlist (it decides what ``env.NAME`` templates see). Nothing else of the
    environment or of hookline.yaml counts."""
    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(b"file\0" + name.encode() + b"\0" + hashlib.sha256(data).digest())
    digest.update(b"env\0" + "\0".join(sorted(set(env_allowed))).encode())
    return digest.hexdigest()


def _as_paths(paths: Iterable[Path | str] | Path | str | None) -> list[Path]:
    if paths is None:
        return get_settings().recipe_paths
    if isinstance(paths, str | Path):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _config_or_default() -> tuple[HooklineConfig, str]:
    path = get_settings().config
    if not path.exists():
        return HooklineConfig(), f"hookline.yaml ({path} does not exist)"
    return load_config(path), str(path)


def check_recipes(
    paths: Iterable[Path | str] | Path | str | None = None,
    *,
    config: HooklineConfig | None = None,
    actions: Mapping[str, ActionLike] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadResult:
    """Load and validate; return recipes, every problem and warnings (never raises for
    recipe problems). ``hookline check`` prints this.

    ``environ``: also check that every ``env.NAME`` read without a guard (``| default``,
    ``is defined``) is set in it, as a run needs (`hookline.recipes.envcheck`).
    """
    warnings: list[str] = []
    if config is None:
        config, env_source = _config_or_default()
    else:
        env_source = str(config.path) if config.path is not None else "hookline.yaml"
    if actions is None:
        actions = default_actions()
    env_allowed = frozenset(config.env)
    roots = _as_paths(paths)
    files, problems = discover(roots)
    recipes: list[Recipe] = []
    names: dict[str, Problem] = {}
    read: list[tuple[str, bytes]] = []
    digests: dict[str, str] = {}
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(f, 0, 0, f"cannot read the file: {exc}"))
            continue
        raw = text.encode()
        read.append((source_name(f, roots), raw))
        doc = load_yaml(text)
        file_problems = [Problem(f, i.line, i.column, i.message, hint=i.hint) for i in doc.issues]
        if doc.data is not None or not doc.issues:
            checker = FileChecker(
                f,
                doc,
                env_allowed=env_allowed,
                env_source=env_source,
                actions=actions,
                environ=environ,
            )
            checker.check()
            file_problems.extend(checker.problems)
        data = doc.data
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            name = data["name"]
            pos = doc.pos(("name",))
            here = Problem(f, pos.line, pos.column, "")
            if name in names:
                first = names[name]
                file_problems.append(
                    Problem(
                        f,
                        pos.line,
                        pos.column,
                        f"duplicate recipe name '{name}'",
                        field="name",
                        hint=f"first defined at {first.path}:{first.line}; names must be unique",
                    )
                )
            else:
                names[name] = here
        problems.extend(file_problems)
        if file_problems:
            continue
        spec = RecipeSpec.model_validate(data)
        recipe = _build(f, doc, spec, env_allowed=env_allowed, actions=actions)
        recipes.append(recipe)
        digests[recipe.name] = hashlib.sha256(raw).hexdigest()
        warnings.extend(url_host_warnings(recipe))
        warnings.extend(on_failure_warnings(recipe))
    problems.sort(key=lambda p: (str(p.path), p.line, p.column))
    return LoadResult(
        recipes, problems, warnings, files, set_fingerprint(read, env_allowed), digests
    )


def load_recipes(
    paths: Iterable[Path | str] | Path | str | None = None,
    *,
    config: HooklineConfig | None = None,
    actions: Mapping[str, ActionLike] | None = None,
) -> RecipeSet:
    """Load, validate and compile every recipe under ``paths``.

    Args:
        paths: files or folders; default ``HOOKLINE_RECIPES`` (``recipes``).
        config: supplies the ``env:`` allowlist; default: ``load_config()`` when
            hookline.yaml exists, else an empty allowlist.
        actions: the action registry; default ``hookline.connectors.ACTIONS``.

    Raises:
        RecipeLoadError: listing every problem in every file.
    """
    from hookline.recipes.matcher import RecipeSet

    result = check_recipes(paths, config=config, actions=actions)
    for w in result.warnings:
        log.warning("%s", w)
    if result.problems:
        raise RecipeLoadError(result.problems)
    return RecipeSet(result.recipes, fingerprint=result.fingerprint)


__all__ = [
    "LoadResult",
    "check_recipes",
    "discover",
    "load_recipes",
    "on_failure_warnings",
    "set_fingerprint",
    "source_name",
]
