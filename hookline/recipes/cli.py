"""`hookline check`, `hookline try`, `hookline schema`, `hookline test-recipes`."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hookline.cli import CallError, CommandError, path_option
from hookline.config import HooklineConfig
from hookline.errors import HooklineError
from hookline.recipes.dryrun import StepPreview, mask, preview, secret_values, to_jsonable

if TYPE_CHECKING:
    from hookline.recipes.loader import LoadResult


def _environ(pairs: tuple[str, ...]) -> dict[str, str]:
    """This process's environment, with ``--env NAME=VALUE`` pairs on top."""
    environ = dict(os.environ)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CallError(f"--env {pair!r}: expected NAME=VALUE")
        environ[name] = value
    return environ


_ENV_OPTION = click.option(
    "--env",
    "env_pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set an env.NAME value, as if this environment had it (repeatable).",
)


def _github(text: str) -> str:
    # GitHub workflow commands: '%', CR and LF must be escaped in the message.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="github: one ::error annotation per problem, for GitHub Actions.",
)
@_ENV_OPTION
def check(paths: tuple[Path, ...], fmt: str, env_pairs: tuple[str, ...]) -> None:
    """Validate recipes (default: HOOKLINE_RECIPES, else ./recipes); list every problem.

    Also checks every env.NAME a template reads without `| default(...)` or `is defined` is
    set in this environment (plus --env), as a run needs. Exits 1 if any recipe has a
    problem; warnings (such as a recipe without on_failure) do not change the exit status.
    A valid set's fingerprint is the one the engine's processes log: equal fingerprints,
    same recipes.
    """
    from hookline.recipes.loader import check_recipes

    environ = _environ(env_pairs)
    try:
        result = check_recipes(list(paths) or None, environ=environ)
    except HooklineError as exc:
        raise CommandError(str(exc)) from None
        return
    for w in result.warnings:
        if fmt == "github":  # an annotation on the pull request, as the errors
            click.echo(f"::warning::{_github(w)}")
        else:
            click.echo(f"warning: {w}", err=True)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "ok": not result.problems,
                    "recipes": sorted(r.name for r in result.recipes),
                    "fingerprint": None if result.problems else result.fingerprint[:12],
                    "problems": [
                        {**dataclasses.asdict(p), "path": str(p.path), "text": str(p)}
                        for p in result.problems
                    ],
                    "warnings": result.warnings,
                },
                indent=2,
            )
        )
        if result.problems:
            sys.exit(1)
        return
    for p in result.problems:
        if fmt == "github":
            where = ", ".join(x for x in (p.step and f"step '{p.step}'", p.field) if x)
            msg = (f"{where}: " if where else "") + p.message + (f"; {p.hint}" if p.hint else "")
            click.echo(
                f"::error file={p.path},line={max(p.line, 1)},col={max(p.column, 1)}"
                f"::{_github(msg)}"
            )
        else:
            click.echo(str(p))
    if result.problems:
        bad = len({str(p.path) for p in result.problems})
        n = len(result.problems)
        click.echo(
            f"{n} problem{'s' if n != 1 else ''} in {bad} file{'s' if bad != 1 else ''}",
            err=True,
        )
        sys.exit(1)
    names = ", ".join(r.name for r in sorted(result.recipes, key=lambda r: r.name))
    n = len(result.recipes)
    click.echo(
        f"ok: {n} recipe{'s' if n != 1 else ''}"
        + (f" ({names})" if names else "")
        + f", fingerprint {result.fingerprint[:12]}"
    )


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _print_steps(items: list[StepPreview], secrets: list[str], indent: str) -> None:
    for n, s in enumerate(items, 1):
        head = f"{indent}{n}. {s.step.id} ({s.step.uses}): "
        if s.status == "run":
            click.echo(head + "runs" + (f" ({s.reason})" if s.reason else ""))
            for k, v in mask(s.params, secrets).items():
                click.echo(f"{indent}     {k}: {_show(v)}")
            if s.outputs:
                shown = ", ".join(f"{k}={v}" for k, v in s.outputs.items())
                click.echo(f"{indent}     outputs: {shown}")
        elif s.status == "error":
            click.echo(head + "ERROR")
            click.echo(f"{indent}     {mask(s.error or '', secrets)}")
        else:
            click.echo(head + s.status + (f" ({s.reason})" if s.reason else ""))


def _default_source(config: HooklineConfig | None) -> str:
    if config is not None and config.sources:
        return next(iter(config.sources))
    return "solveforce"


@click.command("try")
@path_option(
    "--event",
    "event_file",
    file=True,
    allow_dash=True,
    help="Event body: JSON, or a Slack form payload=... ('-' for stdin).",
)
@click.option("--sample", help="A packaged SolveForce sample instead of --event, by event type.")
@click.option("--source", help="The event's source (default: the first in hookline.yaml).")
@click.option("--type", "event_type", help="Override the event type (default: from the body).")
@_ENV_OPTION
@click.option("--all", "show_all", is_flag=True, help="Also preview steps of unmatched recipes.")
@click.option(
    "-v", "--verbose", is_flag=True, help="List recipes for other event types one by one."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("recipes", nargs=-1)
def try_(
    event_file: Path | None,
    sample: str | None,
    source: str | None,
    event_type: str | None,
    env_pairs: tuple[str, ...],
    show_all: bool,
    verbose: bool,
    as_json: bool,
    recipes: tuple[str, ...],
) -> None:
    """Dry-run recipes on an event: which match and why, each step's `if`, rendered params.

    RECIPES are names or files (default: every recipe in HOOKLINE_RECIPES). Nothing is sent:
    outputs of earlier steps are shown as placeholders, secrets are masked.
    """
    from hookline.recipes.event import Event

    if (event_file is None) == (sample is None):
        raise CallError("give exactly one of --event FILE or --sample EVENT_TYPE")
    try:
        config = _config()
        if sample is not None:
            from hookline import samples

            try:
                body = json.dumps(samples.load(sample)).encode()
            except KeyError as exc:
                raise CallError(str(exc.args[0])) from None
                return
            label = f"sample {sample}"
        else:
            src = event_file if event_file is not None else Path("-")
            body = sys.stdin.buffer.read() if str(src) == "-" else src.read_bytes()
            label = str(src)
        event = Event.from_body(
            source=source or _default_source(config), body=body, event_type=event_type
        )
    except (HooklineError, OSError) as exc:
        raise CommandError(str(exc)) from None
        return
    files = [r for r in recipes if Path(r).is_file() or r.endswith((".yaml", ".yml"))]
    names = [r for r in recipes if r not in files]
    result = _valid_recipes(files or None, config)
    chosen = sorted(result.recipes, key=lambda r: r.name)
    if names:
        known = {r.name for r in chosen}
        unknown = [n for n in names if n not in known]
        if unknown:
            from hookline.recipes.validate import did_you_mean

            hints = [
                f"{n!r}" + (f" ({did_you_mean(n, known)})" if did_you_mean(n, known) else "")
                for n in unknown
            ]
            raise CommandError(
                f"no recipe named {', '.join(hints)}; recipes: {', '.join(sorted(known))}"
            )
        chosen = [r for r in chosen if r.name in names]
    environ = _environ(env_pairs)
    secrets = secret_values(environ)
    previews = [preview(r, event, environ=environ, force=show_all) for r in chosen]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "event": {
                        "source": event.source,
                        "event_type": event.event_type,
                        "event_id": event.event_id,
                    },
                    "recipes": [to_jsonable(p, secrets=secrets) for p in previews],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        click.echo(
            f"event {event.event_type} {event.event_id} from {event.source} ({label}); "
            "dry run: nothing is sent"
        )
        others = [
            p
            for p in previews
            if p.match.stage == "type" and not (verbose or names or files or show_all)
        ]
        if others:
            click.echo("")
            click.echo(
                f"[no match] {len(others)} recipe{'s' if len(others) != 1 else ''} for other "
                f"event types: {', '.join(p.recipe.name for p in others)} (-v lists them)"
            )
        collapsed = {id(p) for p in others}
        for p in previews:
            if id(p) in collapsed:
                continue
            click.echo("")
            mark = "MATCH" if p.match.matched else "ERROR" if p.match.error else "no match"
            click.echo(f"[{mark}] {p.recipe.name} ({p.recipe.path}:{p.recipe.line})")
            click.echo(
                f"  {'why' if p.match.matched else 'why not'}: {mask(p.match.reason, secrets)}"
            )
            if not p.steps:
                continue
            if p.recipe.order_by:
                click.echo(f"  order_by: {_show(p.order_key)}")
            if p.recipe.coalesce is not None:
                co = p.recipe.coalesce
                click.echo(
                    f"  coalesce: {_show(p.coalesce_key)} (one run per burst: after "
                    f"{co.quiet:g}s of quiet, or {co.max_wait:g}s at most)"
                )
            click.echo("  steps:")
            _print_steps(p.steps, secrets, "    ")
            if p.on_failure:
                when = (
                    f"runs because step '{p.failed_step}' failed"
                    if p.failed_step
                    else "runs only if a step fails; failure.* shown as placeholders"
                )
                click.echo(f"  on_failure ({when}):")
                _print_steps(p.on_failure, secrets, "    ")
        matched = sum(p.match.matched for p in previews)
        click.echo("")
        click.echo(f"{matched} of {len(previews)} recipe{'s' if len(previews) != 1 else ''} match")
    if any(not p.ok for p in previews):
        sys.exit(1)


def _config() -> HooklineConfig | None:
    """hookline.yaml (HOOKLINE_CONFIG) when there is one; a `CommandError` when it is wrong."""
    from hookline.config import get_settings, load_config

    path = get_settings().config
    try:
        return load_config(path) if path.exists() else None
    except HooklineError as exc:
        raise CommandError(str(exc)) from None


def _valid_recipes(paths: Sequence[Path | str] | None, config: HooklineConfig | None) -> LoadResult:
    """The recipes at ``paths`` (default: HOOKLINE_RECIPES) for a command that runs them: their
    warnings on stderr; when any recipe has a problem, the problems and a `CommandError`."""
    from hookline.recipes.loader import check_recipes

    try:
        result = check_recipes(paths, config=config)
    except (HooklineError, OSError) as exc:
        raise CommandError(str(exc)) from None
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if result.problems:
        for prob in result.problems:
            click.echo(str(prob), err=True)
        raise CommandError("fix the recipes first (hookline check)")
    return result


@click.command("test-recipes")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@path_option(
    "--recipes",
    "recipe_paths",
    multiple=True,
    help="Recipe files or folders (default: HOOKLINE_RECIPES, else ./recipes).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print failures only.")
def test_recipes(paths: tuple[Path, ...], recipe_paths: tuple[Path, ...], quiet: bool) -> None:
    """Run recipe tests (default: the tests/ folder of each recipe folder). Exits 1 on failure."""
    from hookline.config import get_settings
    from hookline.recipes.matcher import RecipeSet
    from hookline.recipes.testing import discover_tests, run_file

    roots = list(recipe_paths) or get_settings().recipe_paths
    recipes = RecipeSet(_valid_recipes(roots, _config()).recipes)
    targets = list(paths) or [r / "tests" for r in roots if (r / "tests").is_dir()]
    files = discover_tests(targets)
    if not files:
        click.echo(
            "no recipe tests found" + (f" in {', '.join(map(str, targets))}" if targets else "")
        )
        return
    passed = failed = 0
    for f in files:
        cases, problems = run_file(f, recipes)
        for prob in problems:
            click.echo(f"ERROR {prob}")
            failed += 1
        for c in cases:
            if c.passed:
                passed += 1
                if not quiet:
                    click.echo(f"PASS {c.path}:{c.line} {c.name}")
            else:
                failed += 1
                click.echo(f"FAIL {c.path}:{c.line} {c.name}")
                for msg in c.failures:
                    click.echo(f"     {msg}")
    click.echo(f"{passed} passed, {failed} failed")
    if failed:
        sys.exit(1)


@click.command()
@path_option("-o", "--output", file=True, help="Write to FILE.")
@click.option("--check", "check_only", is_flag=True, help="Exit 1 if FILE is out of date.")
@click.option("--tests", "for_tests", is_flag=True, help="The schema of recipe test files.")
def schema(output: Path | None, check_only: bool, for_tests: bool) -> None:
    """Print (or write) the JSON Schema of recipe files, for editors.

    The committed copies are recipes/recipe.schema.json and
    recipes/tests/recipe-test.schema.json.
    """
    from hookline.recipes.schema import dumps, recipe_schema, recipe_test_schema

    text = dumps(recipe_test_schema() if for_tests else recipe_schema())
    if output is None:
        if check_only:
            raise CallError("--check needs --output FILE")
        click.echo(text, nl=False)
        return
    if check_only:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            flag = "--tests " if for_tests else ""
            raise CommandError(f"{output} is out of date; run: hookline schema {flag}-o {output}")
        click.echo(f"{output} is up to date")
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}")
