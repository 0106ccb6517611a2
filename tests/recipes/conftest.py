from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hookline.config import HooklineConfig, get_settings
from hookline.connectors import ACTIONS
from hookline.recipes.errors import Problem
from hookline.recipes.loader import check_recipes

ENV_ALLOWED = ["SLACK_ALERT_CHANNEL", "SLACK_ONCALL_CHANNEL", "ACCOUNTING_API_URL"]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No HOOKLINE_* variable leaks in from the developer's shell; settings re-read."""
    import os

    for name in list(os.environ):
        if name.startswith("HOOKLINE_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def config() -> HooklineConfig:
    return HooklineConfig(env=ENV_ALLOWED)


Problems = Callable[..., list[Problem]]


@pytest.fixture
def problems(tmp_path: Path, config: HooklineConfig) -> Problems:
    """Write ``text`` (dedented) to a recipe file and return every problem found."""

    def run(text: str, name: str = "recipe.yaml") -> list[Problem]:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return check_recipes([path], config=config, actions=ACTIONS).problems

    return run


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    def run(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return run
