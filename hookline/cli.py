"""The `hookline` command. Each subcommand lives with the layer it drives and is imported
only when run, so `hookline check` does not pay for importing Prefect."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hookline.errors import HooklineError


class CommandError(click.ClickException, HooklineError):
    """A command cannot do what was asked; the message says what was wrong and what to do.
    Shown as ``error: <message>`` on stderr, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class CallError(CommandError):
    """The command was called wrongly (options that do not go together): exit status 2, as
    click's own usage errors."""

    exit_code = 2


F = TypeVar("F", bound=Callable[..., Any])


def path_option(
    *decls: str, help: str, file: bool = False, allow_dash: bool = False, multiple: bool = False
) -> Callable[[F], F]:
    """A ``click.option`` whose value is a `Path` (``file``: not a folder; ``allow_dash``: ``-``
    may stand for stdin or stdout)."""
    return click.option(
        *decls,
        multiple=multiple,
        type=click.Path(path_type=Path, dir_okay=not file, allow_dash=allow_dash),
        help=help,
    )


# name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "serve": "hookline.receiver.cli:serve",
    "check": "hookline.recipes.cli:check",
    "try": "hookline.recipes.cli:try_",
    "schema": "hookline.recipes.cli:schema",
    "test-recipes": "hookline.recipes.cli:test_recipes",
    "worker": "hookline.engine.cli:worker",
    "dispatch": "hookline.engine.cli:dispatch",
    "up": "hookline.engine.cli:up",
    "send": "hookline.engine.cli:send",
    "click": "hookline.engine.slack_click:click_command",
    "events": "hookline.engine.cli:events",
    "replay": "hookline.engine.cli:replay",
    "prune": "hookline.retention:prune_command",
    "prefect-server": "hookline.engine.cli:prefect_server",
}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, t in COMMANDS.items() if _exists(t.partition(":")[0]))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        cmd = getattr(importlib.import_module(module), attr)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{target} is not a click command")
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hookline")
def main() -> None:
    """Hookline: verified webhooks in, Prefect flow runs out."""


def run(*args: Any) -> None:  # pragma: no cover - convenience for `python -m hookline`
    main(*args)
