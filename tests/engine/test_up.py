"""`hookline up` as a user runs it (what `make up` runs): its own embedded Prefect server on
SQLite, receiver, dispatcher and worker; preview mode without vendor credentials; a second
`up` in the same place refuses; Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hookline.engine.prefect_server import free_port, port_is_free

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HOOKLINE = str(Path(sys.executable).parent / "hookline")


def _env(home: Path) -> dict[str, str]:
    drop = ("HOOKLINE_", "PREFECT_", "SLACK_", "SERVICENOW_", "SALESFORCE_", "INVENTORY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.pop("SOLVEFORCE_WEBHOOK_SECRET", None)
    env.update(HOOKLINE_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = path.read_text(errors="replace") if path.exists() else ""
        if text in out:
            return out
        if proc.poll() is not None:
            raise AssertionError(f"hookline up exited {proc.returncode}:\n{out}")
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not printed after {timeout}s:\n{out}")


def _click(url: str, secret: str) -> str:
    """Post the click Slack would send for an alert's button, signed by slack_sdk."""
    from slack_sdk.signature import SignatureVerifier

    from tests.receiver.test_slack_source import BLOCK_ACTIONS, CLICK_ID, form

    body, ts = form(BLOCK_ACTIONS), str(int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": ts,
        "x-slack-signature": str(signature),
    }
    r = httpx.post(url, content=body, headers=headers, timeout=10)
    assert (r.status_code, r.content) == (200, b""), r.text
    return CLICK_ID


def test_up_runs_end_to_end_refuses_a_second_copy_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port, prefect_port = free_port(), free_port()
    log = tmp_path / "up.log"
    env = _env(home)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [HOOKLINE, "up", "--port", str(port), "--prefect-port", str(prefect_port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        banner = _wait_for(log, "Ctrl-C stops everything", proc, timeout=90)
        assert f"http://127.0.0.1:{port}/webhooks/solveforce" in banner
        assert f"http://127.0.0.1:{prefect_port}" in banner
        assert "PREVIEW MODE" in banner
        # the Slack source is on, with the development secret `up` made and shows
        assert f"http://127.0.0.1:{port}/webhooks/slack" in banner
        slack_secret = (home / "dev-slack-secret").read_text().strip()
        assert f"{slack_secret[:10]}... (SLACK_SIGNING_SECRET)" in banner

        url = f"http://127.0.0.1:{port}/webhooks/solveforce"
        sent = subprocess.run(
            [
                HOOKLINE,
                "send",
                "service.status.changed",
                "--url",
                url,
                "--set",
                "data.current_status=outage",
                "--set",
                "data.impact=high",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sent.returncode == 0, sent.stderr
        assert '"status":"accepted"' in sent.stdout

        deadline = time.monotonic() + 60
        listing = ""
        while time.monotonic() < deadline:
            listing = subprocess.run(
                [HOOKLINE, "events"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=30,
                env={**env, "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api"},
            ).stdout
            if " done " in listing or " failed " in listing:
                break
            time.sleep(0.5)
        assert " done " in listing, listing
        assert f"http://127.0.0.1:{prefect_port}/runs/flow-run/" in listing

        click_id = _click(f"http://127.0.0.1:{port}/webhooks/slack", slack_secret)
        shown = subprocess.run(
            [HOOKLINE, "events", "show", click_id],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api"},
        ).stdout
        # stored under its stable id, and shown as the parsed payload, not url-encoded text
        assert "slack.block_actions" in shown and '"action_id": "acknowledge"' in shown, shown

        second = subprocess.run(
            [HOOKLINE, "up", "--port", str(free_port()), "--prefect-port", str(free_port())],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert f"already running here (pid {proc.pid})" in second.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()
    assert not (home / "up.json").exists()
    assert port_is_free(port) and port_is_free(prefect_port)
