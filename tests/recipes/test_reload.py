"""`RecipeSource`: the recipe set follows its files, refuses a broken edit (once), and names
every set by a fingerprint `hookline check` prints too."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from hookline.cli import main
from hookline.config import HooklineConfig, load_config
from hookline.recipes.errors import RecipeLoadError
from hookline.recipes.loader import LoadResult, check_recipes
from hookline.recipes.reload import RecipeSource, not_loaded

ALERTS = """
name: alerts
on: service.status.changed
steps:
  - id: post
    uses: slack.post_message
    with: { channel: "#alerts", text: "{{ data.service_name }}" }
"""

INVOICES = """
name: invoices
on: billing.invoice.generated
steps:
  - id: post
    uses: slack.post_message
    with: { channel: "{{ env.BILLING_CHANNEL }}", text: "{{ data.invoice_id }}" }
"""

BROKEN = """
name: alerts
on: service.status.changed
steps:
  - id: post
    uses: slack.post_mesage
    with: { channel: "#alerts", text: "{{ data.service_name }" }
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "recipes"
    d.mkdir()
    _write(d / "alerts.yaml", ALERTS)
    return d


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "hookline.yaml", "env: [BILLING_CHANNEL]\n")


@pytest.fixture
def source(folder: Path, config_file: Path) -> RecipeSource:
    return RecipeSource([folder], config=load_config(config_file), interval=60)


def _records(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    """What the recipe source logged at ``level`` or above, but the warnings every load gives
    for these test recipes, which have no on_failure (tests/recipes/test_cli.py checks them)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hookline.recipes"
        and r.levelno >= level
        and "has no on_failure" not in r.getMessage()
    ]


def test_start_up_logs_the_names_and_the_fingerprint_hookline_check_prints(
    folder: Path,
    config_file: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _write(folder / "invoices.yaml", INVOICES)
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        source = RecipeSource([folder], config=load_config(config_file), interval=60)
    [line] = _records(caplog)
    short = source.short_fingerprint
    assert f"2 recipes (alerts, invoices), fingerprint {short}" in line
    assert str(folder) in line and "looked at every 60s" in line

    monkeypatch.setenv("HOOKLINE_RECIPES", str(folder))
    monkeypatch.setenv("HOOKLINE_CONFIG", str(config_file))
    monkeypatch.setenv("BILLING_CHANNEL", "#billing")  # check fails on an unset one
    out = CliRunner().invoke(main, ["check"], catch_exceptions=False).output
    assert out.strip().endswith(f"fingerprint {short}"), out
    doc = CliRunner().invoke(main, ["check", "--format", "json"]).output
    assert f'"fingerprint": "{short}"' in doc


def test_the_fingerprint_is_the_same_wherever_the_files_are(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "elsewhere" / "deploy"
    shutil.copytree(folder, copy)
    monkeypatch.chdir(tmp_path)
    config = HooklineConfig(env=["BILLING_CHANNEL"])
    here = check_recipes([Path("recipes")], config=config).fingerprint
    there = check_recipes([copy.resolve()], config=config).fingerprint
    assert here == there
    # ... but not for other env: allowlists (they decide what env.NAME shows)
    assert check_recipes([copy], config=HooklineConfig(env=[])).fingerprint != here


def test_a_new_file_is_swapped_in_and_logged(
    source: RecipeSource, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = source.short_fingerprint
    alerts = source.get("alerts")
    _write(folder / "invoices.yaml", INVOICES)
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        assert source.check() is True
    assert [r.name for r in source] == ["alerts", "invoices"]
    assert source.get("alerts") is not alerts  # the whole set is new ...
    assert alerts is not None and alerts.name == "alerts"  # ... the old one still whole
    [line] = _records(caplog)
    assert line == (
        f"recipes reloaded: 2 recipes (alerts, invoices), fingerprint "
        f"{source.short_fingerprint} (was {before}); added: invoices"
    )
    assert source.fingerprint == check_recipes([folder], config=source.config).fingerprint
    assert source.reloads == 1


def test_a_touch_or_a_save_without_change_is_not_a_reload(
    source: RecipeSource, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = folder / "alerts.yaml"
    current = source.current
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))
    path.write_text(path.read_text())
    with caplog.at_level(logging.DEBUG, "hookline.recipes"):
        assert source.check() is False
    assert source.current is current and source.reloads == 0
    assert _records(caplog, logging.DEBUG) == []


def test_a_broken_edit_is_refused_once_and_the_previous_set_stays(
    source: RecipeSource, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    current, short = source.current, source.short_fingerprint
    path = _write(folder / "alerts.yaml", BROKEN)
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        assert source.check() is False
    assert source.current is current
    errors = [r for r in caplog.records if r.name == "hookline.recipes"]
    assert {r.levelno for r in errors} == {logging.ERROR}
    expected = [str(p) for p in check_recipes([folder], config=source.config).problems]
    assert len(expected) == 2  # the action's name and the template: one line each
    assert [r.getMessage() for r in errors] == [
        f"recipe reload refused: {p}; the previous recipes stay active ({short})" for p in expected
    ]
    assert all(re.match(rf"{re.escape(str(path))}:\d+:\d+: ", p) for p in expected)
    assert source.refused == expected

    caplog.clear()
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))
    assert source.check() is False  # the same broken edit: not reported again
    assert _records(caplog) == []

    _write(path, ALERTS)  # undone: the active set is the files again
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        assert source.check() is False
    assert source.current is current and source.refused == []
    assert _records(caplog) == [
        f"the recipe files are back to the active recipes ({short}); the refused edit is gone"
    ]


def test_a_removed_file_removes_its_recipe(
    folder: Path, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(folder / "invoices.yaml", INVOICES)
    source = RecipeSource([folder], config=load_config(config_file), interval=60)
    (folder / "invoices.yaml").unlink()
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        assert source.check() is True
    assert source.get("invoices") is None and len(source) == 1
    assert _records(caplog)[-1].endswith("; removed: invoices")


def test_an_edit_is_named_changed(
    source: RecipeSource, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(folder / "alerts.yaml", ALERTS.replace("#alerts", "#ops"))
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        assert source.check() is True
    alerts = source.get("alerts")
    assert alerts is not None and alerts.steps[0].with_["channel"] == "#ops"
    assert _records(caplog)[-1].endswith("; changed: alerts")


def test_hookline_yaml_env_list_is_reloaded_with_the_recipes(
    source: RecipeSource, folder: Path, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(folder / "invoices.yaml", INVOICES)
    assert source.check() is True
    current = source.current

    # the recipe reads env.BILLING_CHANNEL: an allowlist without it is refused
    _write(config_file, "env: [OTHER]\n")
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        assert source.check() is False
    assert source.current is current and source.config.env == ["BILLING_CHANNEL"]
    [refusal] = _records(caplog)
    assert "invoices.yaml:" in refusal and "BILLING_CHANNEL" in refusal
    assert refusal.startswith("recipe reload refused: ")

    caplog.clear()
    _write(config_file, "env: [BILLING_CHANNEL, OTHER]\n")
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        assert source.check() is True
    assert source.config.env == ["BILLING_CHANNEL", "OTHER"]
    assert _records(caplog)[-1].endswith("; hookline.yaml env: changed")

    caplog.clear()
    _write(config_file, "env: [BILLING_CHANNEL, OTHER\n")
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        assert source.check() is False
    [refusal] = _records(caplog)
    assert f"{config_file}: not valid YAML" in refusal

    # a change elsewhere in hookline.yaml is not a new recipe set
    _write(config_file, "env: [BILLING_CHANNEL, OTHER]\nreceiver: {max_body_bytes: 10}\n")
    assert source.check() is False and source.refused == []


def test_a_load_that_saw_the_files_change_is_dropped_and_retried(
    source: RecipeSource, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An editor half-way through a save: the half-written file is not reported."""
    path = folder / "alerts.yaml"
    _write(path, BROKEN)
    load = source._load

    def mid_save() -> tuple[LoadResult | None, HooklineConfig | None, list[str]]:
        result = load()
        _write(path, ALERTS.replace("#alerts", "#saved") + "\n# a longer file\n")
        return result

    source._load = mid_save  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        assert source.check() is False
        source._load = load  # type: ignore[method-assign]
        assert source.check() is True
    assert [
        r.levelno
        for r in caplog.records
        if r.name == "hookline.recipes" and "has no on_failure" not in r.getMessage()
    ] == [logging.INFO]
    alerts = source.get("alerts")
    assert alerts is not None and alerts.steps[0].with_["channel"] == "#saved"


def test_start_up_refuses_a_broken_set(folder: Path) -> None:
    _write(folder / "alerts.yaml", BROKEN)
    with pytest.raises(RecipeLoadError) as err:
        RecipeSource([folder], config=HooklineConfig())
    assert len(err.value.problems) == 2


@pytest.mark.anyio
async def test_watch_looks_every_interval_until_stopped(folder: Path) -> None:
    source = RecipeSource([folder], config=HooklineConfig(env=["BILLING_CHANNEL"]), interval=0.02)
    stop = asyncio.Event()
    watching = asyncio.create_task(source.watch(stop))
    _write(folder / "invoices.yaml", INVOICES)
    for _ in range(500):
        if source.get("invoices") is not None:
            break
        await asyncio.sleep(0.01)
    assert source.get("invoices") is not None
    stop.set()
    await asyncio.wait_for(watching, 1)


@pytest.mark.anyio
async def test_lookup_looks_at_the_files_before_saying_a_recipe_is_not_loaded(
    folder: Path,
) -> None:
    source = RecipeSource([folder], config=HooklineConfig(env=["BILLING_CHANNEL"]), interval=60)
    assert await source.lookup("invoices") is None
    _write(folder / "invoices.yaml", INVOICES)
    recipe = await source.lookup("invoices")  # no watch running: the lookup looked
    assert recipe is not None and recipe.name == "invoices"

    off = RecipeSource([folder], config=HooklineConfig(env=["BILLING_CHANNEL"]), interval=0)
    (folder / "invoices.yaml").unlink()
    assert await off.lookup("invoices") is not None  # reloading off: the start-up set stays
    await asyncio.wait_for(off.watch(asyncio.Event()), 1)  # returns at once


def test_not_loaded_names_the_active_set_and_a_refused_edit(
    source: RecipeSource, folder: Path
) -> None:
    message = not_loaded(source, "invoices")
    assert message.startswith(
        f"recipe 'invoices' is not loaded by this worker (it has 1 recipe (alerts), fingerprint "
        f"{source.short_fingerprint}): it was removed or renamed after the event was dispatched"
    )
    assert "refused" not in message
    _write(folder / "alerts.yaml", BROKEN)
    source.check()
    assert not_loaded(source, "invoices").endswith(
        f"; this worker refused the last edit of its recipes: {source.refused[0]}"
    )


@pytest.mark.anyio
async def test_watch_survives_a_failing_look_and_says_so_once(
    source: RecipeSource, caplog: pytest.LogCaptureFixture
) -> None:
    looks = 0

    def broken() -> bool:
        nonlocal looks
        looks += 1
        raise PermissionError(13, "Permission denied", "recipes/private")

    source.check = broken  # type: ignore[method-assign]
    source.interval = 0.01
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, "hookline.recipes"):
        watching = asyncio.create_task(source.watch(stop))
        while looks < 5:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(watching, 1)
    [line] = _records(caplog, logging.ERROR)
    assert line == (
        f"cannot look at the recipe files (the active recipes stay, "
        f"{source.short_fingerprint}); trying again every 0.01s"
    )


def test_an_undone_edit_is_said_even_when_hookline_yaml_changed_meanwhile(
    source: RecipeSource, folder: Path, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    current = source.current
    _write(folder / "alerts.yaml", BROKEN)
    assert source.check() is False and source.refused
    caplog.clear()
    _write(folder / "alerts.yaml", ALERTS)
    _write(config_file, "env: [BILLING_CHANNEL]\nreceiver: {max_body_bytes: 10}\n")
    with caplog.at_level(logging.INFO, "hookline.recipes"):
        assert source.check() is False
    assert source.current is current and source.refused == []
    assert _records(caplog) == [
        f"the recipe files are back to the active recipes ({source.short_fingerprint}); the "
        "refused edit is gone"
    ]
