"""`hookline up` as a user edits its recipes: the banner names the recipes and the fingerprint
`hookline check` prints; a recipe copied into the folder runs for the next event; a broken edit
is refused once, in the log, while the previous recipe keeps running; a removal brings the
fingerprint back to the start-up one."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.docs.conftest import REPO, clean_env, free_port, start
from tests.fakes import FakeVendors
from tests.fakes.slack import channel_id

pytestmark = pytest.mark.slow

ECHO = """
name: status-echo
on: service.status.changed
steps:
  - id: post
    uses: slack.post_message
    with: { channel: "#reload", text: "{{ data.service_name }} is {{ data.current_status }}" }
"""


def _until(condition: Callable[[], bool], what: str, output: Callable[[], str]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after 60s\n{output()}"
        time.sleep(0.1)


def test_up_reloads_recipes_and_shows_their_fingerprint(
    prefect_api: str, tmp_path: Path, fakes: FakeVendors
) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(REPO / "recipes", recipes)
    env = clean_env(
        **fakes.env,
        PREFECT_API_URL=prefect_api,
        HOOKLINE_HOME=str(tmp_path / "home"),
        HOOKLINE_RECIPES=str(recipes),
        HOOKLINE_CONFIG=str(REPO / "hookline.yaml"),
        HOOKLINE_RECIPES_RELOAD_SECONDS="0.3",
    )

    def check() -> str:
        r = subprocess.run(
            [sys.executable, "-m", "hookline", "check"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        [fingerprint] = re.findall(r"fingerprint ([0-9a-f]{12})$", r.stdout.strip())
        return fingerprint

    def send(status: str) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "hookline", "send", "service.status.changed"]
            + ["--url", f"http://127.0.0.1:{port}/webhooks/solveforce"]
            + ["--set", f"data.current_status={status}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr

    def posted() -> list[str]:
        return [m["text"] for m in fakes.slack.messages if m["channel"] == channel_id("#reload")]

    port = free_port()
    proc = start(
        ["hookline", "up", "--port", str(port)], cwd=tmp_path, env=env, log=tmp_path / "up.log"
    )
    try:
        proc.wait_for("Ctrl-C stops everything")
        out = proc.output()
        [(count, first)] = re.findall(r"  recipes +(\d+) loaded, fingerprint ([0-9a-f]{12})\n", out)
        assert count == "9" and "service-outage, service-provisioned," in out
        assert first == check()
        assert f"fingerprint {first}, from {recipes} (looked at every 0.3s)" in out

        # a recipe copied in: reloaded, logged, and it runs for the next event
        (recipes / "status-echo.yaml").write_text(textwrap.dedent(ECHO).lstrip())
        proc.wait_for("recipes reloaded: ")
        [(second, was)] = re.findall(
            r"recipes reloaded: 10 recipes \(.*\), fingerprint ([0-9a-f]{12}) "
            r"\(was ([0-9a-f]{12})\); added: status-echo",
            proc.output(),
        )
        assert was == first and second == check() != first
        send("operational")
        _until(
            lambda: posted() == ["Primary Voice Service is operational"],
            "the new recipe ran",
            proc.output,
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
            f"{recipes / 'status-echo.yaml'}:5:11: step 'post': uses: unknown action" in refusals[0]
        )
        assert refusals[0].endswith(f"the previous recipes stay active ({second})")
        assert "ERROR" in refusals[0]
        send("degraded")
        _until(lambda: len(posted()) == 2, "the old version ran", proc.output)
        assert posted()[1] == "Primary Voice Service is degraded"

        # removed: back to the files (and the fingerprint) it started with
        (recipes / "status-echo.yaml").unlink()
        _until(lambda: "removed: status-echo" in proc.output(), "removal reloaded", proc.output)
        assert f"fingerprint {first} (was {second}); removed: status-echo" in proc.output()
    finally:
        code = proc.stop()
    assert code == 0, proc.output()
