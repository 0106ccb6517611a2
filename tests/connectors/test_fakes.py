"""The fakes run standalone for end-to-end tests and demos in another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hookline.connectors import build_client, servicenow, slack
from hookline.connectors.errors import TransientError
from vendor_fakes import RemoteFake

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    port_file = tmp_path_factory.mktemp("fakes") / "fakes.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vendor_fakes", "--port-file", str(port_file)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert proc.poll() is None, "python -m vendor_fakes exited"
            assert time.monotonic() < deadline, "python -m vendor_fakes did not start"
            time.sleep(0.05)
        yield json.loads(port_file.read_text(encoding="utf-8"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_another_process_drives_the_fakes_through_control_endpoints(
    standalone: dict[str, Any],
) -> None:
    env = standalone["env"]
    ca = env["SSL_CERT_FILE"]
    remote = RemoteFake(standalone["control"]["slack"], ca_file=ca)
    remote.reset()
    remote.fail_next(1, status=429, retry_after=4, path="chat.postMessage")
    client = build_client("slack", environ=env)

    with pytest.raises(TransientError) as caught:
        slack.post_message(client, channel="#demo", text="hello")
    assert caught.value.retry_after == 4.0
    slack.post_message(client, channel="#demo", text="hello")

    calls = remote.calls()
    assert [c["status"] for c in calls] == [429, 200, 200]
    assert calls[1]["json"]["text"] == "hello"
    assert len(remote.state()["messages"]) == 1


def test_standalone_servicenow_is_idempotent_across_processes(
    standalone: dict[str, Any],
) -> None:
    env = standalone["env"]
    remote = RemoteFake(standalone["control"]["servicenow"], ca_file=env["SSL_CERT_FILE"])
    remote.reset()
    client = build_client("servicenow", environ=env)
    servicenow.create_incident(client, short_description="x", correlation_id="k")
    servicenow.create_incident(client, short_description="x", correlation_id="k")
    assert len(remote.state()["incident"]) == 1
