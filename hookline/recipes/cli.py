"""`hookline check`, `hookline try`, `hookline schema`, `hookline test-recipes`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hookline.errors import HooklineError


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def check(paths: tuple[Path, ...]) -> None:
    """Validate recipes (default: HOOKLINE_RECIPES, else ./recipes); list every problem.

    Exits 1 if any recipe has a problem.
    """
    from hookline.recipes.loader import check_recipes

    try:
        result = check_recipes(list(paths) or None)
    except HooklineError as exc:
        _fail(str(exc))
        return
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    for p in result.problems:
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
    click.echo(f"ok: {n} recipe{'s' if n != 1 else ''}" + (f" ({names})" if names else ""))
