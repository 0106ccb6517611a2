"""Engine commands fail with a message that says what to do."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hookline import samples
from hookline.config import CoreSettings
from hookline.inbox import open_inbox
from tests.docs.conftest import clean_env, start
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

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


@pytest.mark.parametrize(
    "args", [["--lease", "5"], ["--concurrency", "2", "--worker-timeout", "9"]]
)
def test_worker_refuses_dispatcher_options_without_dispatch(args: list[str]) -> None:
    """A dispatcher option on a worker without its dispatcher would be silently ignored."""
    done = subprocess.run(
        [HOOKLINE, "worker", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    named = ", ".join(a for a in args if a.startswith("--"))
    assert f"Error: {named}: only with --dispatch" in done.stderr


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


@pytest.mark.slow
def test_worker_with_dispatch_runs_a_stored_event_without_waiting_for_its_poll(
    prefect_api: str, tmp_path: Path, fakes: FakeVendors
) -> None:
    """`hookline worker --dispatch` is a whole engine in one process: its dispatcher hands
    each new run to its worker, so an event runs long before the worker's next poll."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "echo.yaml").write_text(
        "name: echo\non: service.status.changed\nsteps:\n  - id: post\n"
        "    uses: slack.post_message\n"
        '    with: { channel: "#one-process", text: "{{ data.current_status }}" }\n'
    )
    env = clean_env(
        **fakes.env,
        PREFECT_API_URL=prefect_api,
        HOOKLINE_HOME=str(tmp_path / "home"),
        HOOKLINE_RECIPES=str(recipes),
        HOOKLINE_CONFIG=str(REPO / "hookline.yaml"),
    )
    proc = start(
        ["hookline", "worker", "--dispatch", "--poll", "600"],
        cwd=tmp_path,
        env=env,
        log=tmp_path / "worker.log",
    )
    try:
        proc.wait_for("polling work pool 'hookline'")
        # the first event may still meet the worker's first poll; the second cannot
        for status in ("degraded", "operational"):
            _store(tmp_path / "home", status)
            deadline = time.monotonic() + 60
            while status not in _posted(fakes, "#one-process"):
                assert time.monotonic() < deadline, f"{status}: not run:\n{proc.output()}"
                time.sleep(0.1)
        assert _posted(fakes, "#one-process") == ["degraded", "operational"]
    finally:
        proc.stop()


def _store(home: Path, status: str) -> None:
    payload = samples.load("service.status.changed")
    payload["event_id"] = f"evt_{uuid.uuid4().hex[:12]}"
    payload["data"]["current_status"] = status

    async def put() -> None:
        inbox = await open_inbox(CoreSettings(home=home))
        try:
            body = json.dumps(payload).encode()
            event_id, event_type = payload["event_id"], payload["event_type"]
            await inbox.put("solveforce", event_id, event_type, body, {}, None)
        finally:
            await inbox.close()

    asyncio.run(put())


def _posted(fakes: FakeVendors, channel: str) -> list[str]:
    return [m["text"] for m in fakes.slack.messages if m["channel"] == channel_id(channel)]
