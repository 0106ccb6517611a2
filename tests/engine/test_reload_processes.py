"""Recipes edited under running processes, as a user runs them: `hookline up`'s banner names
the recipes and the fingerprint `hookline check` prints; a recipe copied into the folder runs
for the next event; a broken edit is refused once, in the log, while the previous recipe keeps
running; a removal brings the fingerprint back to the start-up one. Separate `hookline
dispatch` and `hookline worker` processes reload to the same fingerprint."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from hookline import samples
from hookline.config import CoreSettings
from hookline.engine.prefect_server import free_port
from hookline.inbox import open_inbox
from tests.docs.conftest import REPO, Proc, clean_env, start
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

pytestmark = pytest.mark.slow

#: The shipped recipes, one file each (the copy the processes load).
SHIPPED = len(list((REPO / "recipes").glob("*.yaml")))

ECHO = """
name: status-echo
on: service.status.changed
steps:
  - id: post
    uses: slack.post_message
    with: { channel: "#reload", text: "{{ data.service_name }} is {{ data.current_status }}" }
"""


def _until(condition: Callable[[], bool], what: str, *procs: Proc) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        logs = "\n".join(p.output() for p in procs)
        assert time.monotonic() < deadline, f"{what}: not after 60s\n{logs}"
        time.sleep(0.1)


def _env(prefect_api: str, tmp_path: Path, fakes: FakeVendors) -> dict[str, str]:
    """A copy of the shipped recipes, looked at every 0.3 s."""
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    return clean_env(
        **fakes.env,
        PREFECT_API_URL=prefect_api,
        HOOKLINE_HOME=str(tmp_path / "home"),
        HOOKLINE_RECIPES=str(tmp_path / "recipes"),
        HOOKLINE_CONFIG=str(REPO / "hookline.yaml"),
        HOOKLINE_RECIPES_RELOAD_SECONDS="0.3",
    )


def _hookline(env: dict[str, str], cwd: Path, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "hookline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _checked(env: dict[str, str], cwd: Path) -> str:
    """The fingerprint `hookline check` prints for the same files."""
    [fingerprint] = re.findall(r"fingerprint ([0-9a-f]{12})$", _hookline(env, cwd, "check").strip())
    return fingerprint


def _posted(fakes: FakeVendors) -> list[str]:
    return [m["text"] for m in fakes.slack.messages if m["channel"] == channel_id("#reload")]


def test_up_reloads_recipes_and_shows_their_fingerprint(
    prefect_api: str, tmp_path: Path, fakes: FakeVendors
) -> None:
    env = _env(prefect_api, tmp_path, fakes)
    recipes = tmp_path / "recipes"
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/solveforce"

    def send(status: str) -> None:
        args = ["service.status.changed", "--url", url, "--set", f"data.current_status={status}"]
        _hookline(env, tmp_path, "send", *args)

    proc = start(
        ["hookline", "up", "--port", str(port)], cwd=tmp_path, env=env, log=tmp_path / "up.log"
    )
    try:
        proc.wait_for("Ctrl-C stops everything")
        out = proc.output()
        [(count, first)] = re.findall(r"  recipes +(\d+) loaded, fingerprint ([0-9a-f]{12})\n", out)
        assert int(count) == SHIPPED and "service-outage, service-provisioned," in out
        assert first == _checked(env, tmp_path)
        assert f"fingerprint {first}, from {recipes} (looked at every 0.3s)" in out

        # a recipe copied in: reloaded, logged, and it runs for the next event
        (recipes / "status-echo.yaml").write_text(textwrap.dedent(ECHO).lstrip())
        proc.wait_for("recipes reloaded: ")
        [(second, was)] = re.findall(
            rf"recipes reloaded: {SHIPPED + 1} recipes \(.*\), fingerprint ([0-9a-f]{{12}}) "
            r"\(was ([0-9a-f]{12})\); added: status-echo",
            proc.output(),
        )
        assert was == first and second == _checked(env, tmp_path) != first
        send("operational")
        _until(
            lambda: _posted(fakes) == ["Primary Voice Service is operational"], "new recipe", proc
        )

        # a broken edit: refused, logged once with its file and line, the old recipe still runs
        broken = textwrap.dedent(ECHO).lstrip().replace("slack.post_message", "slack.post_mesage")
        (recipes / "status-echo.yaml").write_text(broken)
        proc.wait_for("recipe reload refused: ")
        time.sleep(1.5)  # five more looks at the same files
        refusals = [
            line for line in proc.output().splitlines() if "recipe reload refused: " in line
        ]
        assert len(refusals) == 1, refusals
        assert (
            f"{recipes / 'status-echo.yaml'}:5:11: step 'post': uses: unknown action"
            in (refusals[0])
        )
        assert refusals[0].endswith(f"the previous recipes stay active ({second})")
        assert "ERROR" in refusals[0]
        send("degraded")
        _until(lambda: len(_posted(fakes)) == 2, "the old version ran", proc)
        assert _posted(fakes)[1] == "Primary Voice Service is degraded"

        # removed: back to the files (and the fingerprint) it started with
        (recipes / "status-echo.yaml").unlink()
        _until(lambda: "removed: status-echo" in proc.output(), "removal reloaded", proc)
        assert f"fingerprint {first} (was {second}); removed: status-echo" in proc.output()
    finally:
        code = proc.stop()
    assert code == 0, proc.output()


def test_separate_dispatcher_and_worker_converge_on_the_new_recipes(
    prefect_api: str, tmp_path: Path, fakes: FakeVendors
) -> None:
    env = _env(prefect_api, tmp_path, fakes)
    first = _checked(env, tmp_path)
    procs = {
        name: start(["hookline", *argv], cwd=tmp_path, env=env, log=tmp_path / f"{name}.log")
        for name, argv in (("dispatch", ["dispatch"]), ("worker", ["worker", "--poll", "0.2"]))
    }
    try:
        procs["dispatch"].wait_for("dispatcher running")
        procs["worker"].wait_for("polling work pool")
        for p in procs.values():
            p.wait_for(f"recipes: {SHIPPED} recipes (billing-invoice, billing-payment, ")
            assert f"fingerprint {first}, from " in p.output()

        (tmp_path / "recipes" / "status-echo.yaml").write_text(textwrap.dedent(ECHO).lstrip())
        second = _checked(env, tmp_path)
        for p in procs.values():
            p.wait_for(f"fingerprint {second} (was {first}); added: status-echo")

        payload = samples.load("service.status.changed")
        payload["event_id"] = f"evt_{uuid.uuid4().hex[:12]}"
        payload["data"]["current_status"] = "operational"

        async def put() -> None:
            inbox = await open_inbox(CoreSettings(home=tmp_path / "home"))
            try:
                body = json.dumps(payload).encode()
                await inbox.put(
                    "solveforce", payload["event_id"], payload["event_type"], body, {}, None
                )
            finally:
                await inbox.close()

        asyncio.run(put())
        _until(
            lambda: _posted(fakes) == ["Primary Voice Service is operational"],
            "the new recipe ran",
            *procs.values(),
        )
    finally:
        for p in procs.values():
            p.stop()
