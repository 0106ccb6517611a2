"""Engine commands fail with a message that says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HOOKLINE = str(Path(sys.executable).parent / "hookline")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["worker", "dispatch"])
def test_worker_and_dispatch_need_a_prefect_server(command: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HOOKLINE_"))}
    env["HOOKLINE_HOME"] = str(tmp_path)
    done = subprocess.run(
        [HOOKLINE, command], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "PREFECT_API_URL is not set" in done.stderr
    assert "hookline up" in done.stderr


def test_replay_of_an_unknown_event_says_where_to_look(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HOOKLINE_"))}
    env["HOOKLINE_HOME"] = str(tmp_path)
    done = subprocess.run(
        [HOOKLINE, "replay", "evt_nope"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "no event 'evt_nope' in the inbox (see `hookline events`)" in done.stderr


async def _inbox_with(home: Path, *events: tuple[str, str]) -> None:
    from hookline.inbox import SQLiteInbox

    async with SQLiteInbox(home / "inbox.sqlite3") as inbox:
        for source, event_id in events:
            await inbox.put(source, event_id, "webhook.test", b'{"data": {}}', {}, None)


def test_events_show_names_the_sources_of_an_id_they_share(tmp_path: Path) -> None:
    import asyncio
    import json

    asyncio.run(_inbox_with(tmp_path, ("solveforce", "evt_1"), ("github", "evt_1")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HOOKLINE_"))}
    env["HOOKLINE_HOME"] = str(tmp_path)

    def show(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HOOKLINE, "events", "show", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    clash = show("evt_1")
    assert clash.returncode == 1
    assert clash.stderr == (
        "error: event id 'evt_1' is in 2 sources: solveforce:evt_1, github:evt_1; name one as "
        "SOURCE:EVENT_ID, e.g. `hookline events show solveforce:evt_1`\n"
    )
    one = show("github:evt_1", "--json")
    assert one.returncode == 0, one.stderr
    shown = json.loads(one.stdout)
    assert (shown["source"], shown["event_id"], shown["status"]) == ("github", "evt_1", "pending")
    assert shown["payload"] == {"data": {}} and shown["runs"] == {}
    missing = show("github:evt_2")
    assert missing.returncode == 1
    assert "no event 'github:evt_2' in the inbox (see `hookline events`)" in missing.stderr


def test_a_wrong_artifacts_section_stops_the_worker_at_start(tmp_path: Path) -> None:
    config = tmp_path / "hookline.yaml"
    config.write_text((REPO / "hookline.yaml").read_text() + "  show_payload: true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HOOKLINE_"))}
    # validated before Prefect is called: nothing listens on port 9
    env.update(
        HOOKLINE_HOME=str(tmp_path),
        HOOKLINE_CONFIG=str(config),
        PREFECT_API_URL="http://127.0.0.1:9/api",
    )
    done = subprocess.run(
        [HOOKLINE, "worker"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert (
        f"{config}: artifacts.show_payload: Extra inputs are not permitted (valid keys: "
        "payload: true|false, mask: [key names])"
    ) in done.stderr
