"""The Prefect internals Hookline uses: all in hookline/engine/prefect_internals.py, all
checked at start-up (issue 11, item 18; issue 13, item 6)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hookline.engine.prefect_internals import (
    INTERNALS,
    PrefectCompatError,
    check_prefect,
    problems,
)


def test_the_installed_prefect_has_every_internal_hookline_uses() -> None:
    assert problems() == []
    check_prefect()
    names = {i.name for i in INTERNALS}
    assert {
        "run_flow_async",
        "propose_state",
        "observe_flow_run_suspension",
        "FlowRunCancellingObserver",
        "FlowRunSuspendingObserver",
        "AioSqliteConfiguration.begin_transaction",
    } <= names


#: Prefect modules Hookline may import from anywhere: its documented API.
PUBLIC = {
    "prefect",
    "prefect.artifacts",
    "prefect.blocks.system",
    "prefect.cache_policies",
    "prefect.cli",  # the `prefect` command itself (prefect_serve runs it)
    "prefect.client.orchestration",
    "prefect.client.schemas.filters",
    "prefect.client.schemas.objects",
    "prefect.client.schemas.actions",
    "prefect.client.schemas.responses",
    "prefect.client.schemas.sorting",
    "prefect.context",
    "prefect.deployments",
    "prefect.exceptions",
    "prefect.flow_runs",
    "prefect.logging",
    "prefect.logging.handlers",
    "prefect.settings",
    "prefect.states",
}


def _prefect_imports(path: Path) -> set[tuple[str, str]]:
    import ast

    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prefect"):
            found |= {(node.module or "", alias.name) for alias in node.names}
    return found


def test_every_prefect_internal_is_used_from_one_module_and_checked_at_start_up() -> None:
    import hookline

    package = Path(hookline.__file__).parent
    internals = package / "engine" / "prefect_internals.py"
    elsewhere = {
        (str(path.relative_to(package)), module, name)
        for path in package.rglob("*.py")
        if path != internals
        for module, name in _prefect_imports(path)
        if module not in PUBLIC
    }
    assert elsewhere == set(), "Prefect internals used outside prefect_internals.py"
    checked = {(i.module, i.name.split(".")[0]) for i in INTERNALS}
    used = {(m, n) for m, n in _prefect_imports(internals) if m not in PUBLIC}
    # what the module reaches into, other than types for annotations, is checked at start-up
    modules = {i.module for i in INTERNALS}  # `from prefect.x import y` where y is a module
    unchecked = {(m, n) for m, n in used if (m, n) not in checked and f"{m}.{n}" not in modules} - {
        ("prefect._internal.observers", "OnCancellingCallback")
    }
    assert unchecked == set()


def test_a_changed_signature_fails_loudly_and_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect import flow_engine

    def run_flow_async(flow: object, *, context: object = None) -> None:  # a future Prefect
        return None

    monkeypatch.setattr(flow_engine, "run_flow_async", run_flow_async)
    monkeypatch.delattr(flow_engine, "observe_flow_run_suspension")
    with pytest.raises(PrefectCompatError) as info:
        check_prefect()
    message = str(info.value)
    assert "prefect.flow_engine.run_flow_async(flow" in message
    assert "no parameter flow_run, parameters, return_type" in message
    assert "prefect.flow_engine.observe_flow_run_suspension: missing" in message
    assert "make install" in message and "prefect>=3.9.1,<3.10" in message


def test_engine_entry_points_refuse_to_start_on_an_incompatible_prefect(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`hookline worker` and `hookline dispatch` (open_engine) and `hookline up` (run_up)
    stop before they start anything, with the message."""
    from prefect._internal import observers

    from hookline.engine.app import open_engine
    from hookline.engine.up import run_up

    monkeypatch.delattr(observers, "FlowRunCancellingObserver")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("HOOKLINE_HOME", str(tmp_path / "home"))

    async def engine() -> None:
        async with open_engine():
            raise AssertionError("the engine started")

    with pytest.raises(PrefectCompatError, match="FlowRunCancellingObserver: missing"):
        asyncio.run(engine())
    with pytest.raises(PrefectCompatError, match="Cancel from the Prefect UI"):
        run_up(host="127.0.0.1", port=0, prefect_port=0, preview=True)
    assert not (tmp_path / "home").exists()  # nothing was started or written
