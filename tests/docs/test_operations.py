"""docs/operations.md, run as written against a scaled-out Hookline on PostgreSQL: Prefect's
server on PostgreSQL (`prefect server start`), the inbox on PostgreSQL
(HOOKLINE_DATABASE_URL), `hookline serve --workers 4`, `hookline dispatch` and
`hookline worker`, as separate processes, with the fake vendors and two webhook secrets (the
rotation block). Example hosts, ports and ids in the commands are replaced by the test's."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result

from hookline.config import get_settings, load_config
from hookline.engine.prefect_server import free_port
from hookline.engine.send import send
from hookline.receiver.sources import load_receiver_config, load_sources
from hookline.receiver.verify import sign_solveforce
from tests.docs.conftest import (
    REPO,
    Proc,
    bash,
    clean_env,
    code_block,
    console_block,
    start,
)
from tests.stack import PG
from tests.stack import pg as _pg
from tests.stack import pg_available as _pg_available
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

NEW_SECRET, OLD_SECRET = "whsec-docs-new-secret", "whsec-docs-old-secret"
DOC = "docs/operations.md"


def rotation_variables() -> tuple[str, str]:
    """(the previous-secret variable, the secret variable), as step 1 of the rotation says."""
    text = (REPO / DOC).read_text()
    m = re.search(r"1\. Set `(\w+)` to the current secret and `(\w+)`", text)
    assert m, "the rotation steps changed: update this test"
    return m.group(1), m.group(2)


def hookline(*args: str, env: dict[str, str]) -> Result:
    """A one-shot `hookline` command, in-process (fast); settings re-read for ``env``, and
    its Prefect server, not the one another test's session fixture may have installed."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hookline.cli import main

    get_settings.cache_clear()
    try:
        with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
            return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        get_settings.cache_clear()


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    receiver: str
    prefect_api: str
    fakes: FakeVendors
    procs: dict[str, Proc]

    def post(self, payload: dict[str, Any], secret: str = NEW_SECRET) -> httpx.Response:
        body = json.dumps(payload).encode()
        return httpx.post(
            f"{self.receiver}/webhooks/solveforce",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-SolveForce-Signature": sign_solveforce(body, secret),
            },
        )

    def status(self, event_id: str) -> str:
        out = hookline("events", "--limit", "1000", env=self.env).output
        m = re.search(rf"(\w+)\s+solveforce:{re.escape(event_id)}\s", out)
        return m.group(1) if m else "missing"

    def wait(self, event_id: str, want: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.status(event_id)) != want:
            assert got not in ("done", "failed") or got == want, (event_id, got)
            assert time.monotonic() < deadline, (event_id, got)
            time.sleep(0.2)


def substitute(command: str, **values: str) -> str:
    for old, new in values.items():
        command = command.replace(old, new)
    return command


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not _pg_available():
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432")
    home = tmp_path_factory.mktemp("ops")
    if not asyncio.run(_pg("SELECT 1 FROM pg_database WHERE datname = 'hookline_docs_prefect'")):
        asyncio.run(_pg("CREATE DATABASE hookline_docs_prefect"))
    schema = f"hl_docs_{uuid.uuid4().hex[:8]}"
    pport, rport = free_port(), free_port()

    # hookline.yaml as shipped; the docs' rotation block is what it says
    config = yaml.safe_load((REPO / "hookline.yaml").read_text())
    documented = yaml.safe_load(code_block(DOC, "yaml"))["sources"]["solveforce"]
    assert documented["secrets"] == config["sources"]["solveforce"]["secrets"]
    (home / "hookline.yaml").write_text(yaml.safe_dump(config))
    previous, current = rotation_variables()
    (home / "recipes").symlink_to(REPO / "recipes")

    fakes = FakeVendors()
    fakes.__enter__()
    env = clean_env(
        **fakes.env,
        **{current: NEW_SECRET, previous: OLD_SECRET},  # rotation step 1
        PREFECT_HOME=str(home / "prefect-home"),
    )
    exports, _ = console_block(DOC, "export HOOKLINE_DATABASE_URL")
    for line in exports[:2]:
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = substitute(
            value,
            **{
                "postgresql://hookline:change-me@db.internal:5432/hookline": (
                    f"{PG}/test?schema={schema}"
                ),
                "http://prefect.internal:4200/api": f"http://127.0.0.1:{pport}/api",
            },
        )
    procs: dict[str, Proc] = {}
    try:
        # Prefect's server on PostgreSQL, as the docs start it.
        words = shlex.split(exports[2])
        var, _, url = words[0].partition("=")
        url = url.replace(
            "postgresql+asyncpg://prefect:change-me@db.internal:5432/prefect",
            "postgresql+asyncpg://postgres@127.0.0.1:5432/hookline_docs_prefect",
        )
        argv = substitute(" ".join(words[1:]), **{"0.0.0.0": "127.0.0.1", "4200": str(pport)})
        assert argv.split()[:2] == ["hookline", "prefect-server"], argv
        procs["prefect"] = start(
            argv.split(), cwd=home, env={**env, var: url}, log=home / "prefect.log"
        )
        procs["prefect"].wait_http(f"http://127.0.0.1:{pport}/api/health", timeout=90)

        # The three processes of "Separate processes".
        for line in console_block(DOC, "hookline serve")[0]:
            argv = substitute(line, **{"0.0.0.0": "127.0.0.1", "8000": str(rport)}).split()
            procs[argv[1]] = start(argv, cwd=home, env=env, log=home / f"{argv[1]}.log")
        receiver = f"http://127.0.0.1:{rport}"
        procs["serve"].wait_http(receiver + "/healthz")
        procs["dispatch"].wait_for("dispatcher running")
        procs["worker"].wait_for("polling work pool 'hookline' (limit 8)")
        yield Stack(home, env, receiver, env["PREFECT_API_URL"], fakes, procs)
    finally:
        for p in procs.values():  # signal all, then wait: they stop in parallel
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.stop()
        fakes.__exit__(None, None, None)
        asyncio.run(_pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def test_health_checks(stack: Stack) -> None:
    commands, output = console_block(DOC, "curl -s http://127.0.0.1:8000/healthz")
    port = stack.receiver.rsplit(":", 1)[1]
    healthz, readyz = (c.replace("8000", port) for c in commands)
    assert bash(healthz, cwd=stack.home, env=stack.env) == output[0]
    ready = json.loads(bash(readyz, cwd=stack.home, env=stack.env))
    assert ready["status"] == "ready"
    assert {c["name"]: c["ok"] for c in ready["checks"]} == {"inbox": True, "prefect_api": True}
    assert "PostgreSQL" in json.dumps(ready) or "postgres" in json.dumps(ready).lower()
    # The receiver's startup (inbox open, log flusher) ran in every `serve` worker process.
    assert "lifespan' protocol appears unsupported" not in stack.procs["serve"].output()


def test_both_secrets_of_the_rotation_block_are_accepted(stack: Stack) -> None:
    from hookline import samples

    for secret, status in ((NEW_SECRET, 200), (OLD_SECRET, 200), ("whsec-someone-else", 401)):
        payload = samples.load("webhook.test")
        payload["event_id"] = f"test_{uuid.uuid4().hex[:8]}"
        assert stack.post(payload, secret).status_code == status
    # An empty rotation slot is skipped, not an error.
    previous, current = rotation_variables()
    config = load_config(stack.home / "hookline.yaml")
    env = {current: NEW_SECRET}
    sources = load_sources(config, load_receiver_config(config), environ=env)
    assert len(sources["solveforce"].keys) == 1


def test_rotation_step_4_retires_the_old_secret(stack: Stack) -> None:
    """Step 4: unset the previous-secret variable, restart the receivers: only the new
    secret is accepted (a receiver started the way the docs start it, without it)."""
    from hookline import samples

    previous, _ = rotation_variables()
    env = {k: v for k, v in stack.env.items() if k != previous}
    port = free_port()
    proc = start(
        ["hookline", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=stack.home,
        env=env,
        log=stack.home / "serve-rotated.log",
    )
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz")
        url = f"http://127.0.0.1:{port}/webhooks/solveforce"
        for secret, status in ((NEW_SECRET, 200), (OLD_SECRET, 401)):
            payload = samples.load("webhook.test")
            payload["event_id"] = f"test_{uuid.uuid4().hex[:8]}"
            assert send(payload, url=url, secret=secret).status_code == status
    finally:
        proc.stop()


def test_send_to_a_receiver_url(stack: Stack) -> None:
    [command], _ = console_block(DOC, "hookline send")
    argv = shlex.split(
        command.replace("https://hooks.example.com", stack.receiver).removeprefix("hookline ")
    )
    r = hookline(*argv, env=stack.env)
    assert r.exit_code == 0, r.output
    event_id = r.output.split()[1]
    assert r.output.startswith(f"service.status.changed {event_id} -> 200 ")
    assert stack.status(event_id) in ("pending", "dispatched", "done")  # stored


def test_failed_event_oncall_page_and_replay(stack: Stack) -> None:
    from hookline import samples

    f = stack.fakes
    f.servicenow.fail_next(100, status=400, path="/api/now/table/incident")
    payload = samples.load("security.alert.created")
    event_id = payload["event_id"] = f"evt_docs_{uuid.uuid4().hex[:8]}"
    assert stack.post(payload).status_code == 200
    stack.wait(event_id, "failed")

    # on_failure paged on-call with the step, the error and the run link.
    page = next(m for m in f.slack.messages if f"{event_id}" in m.get("text", ""))
    assert page["channel"] == channel_id("#oncall")
    assert "failed at step incident" in page["text"] and "/runs/flow-run/" in page["text"]

    commands = console_block(DOC, "hookline events --status")[0]
    failed_cmd, show_cmd, replay_cmd, replay_all, since = commands
    out = hookline(*shlex.split(failed_cmd)[1:], env=stack.env).output
    assert f"failed     solveforce:{event_id}  security.alert.created  (1 failed try)" in out
    assert "    security-alert: Failed  http://127.0.0.1:" in out and "    error: " in out
    show = shlex.split(show_cmd.replace("evt_1234567890", event_id))[1:]

    def shown(step: str) -> str:
        """`hookline events show`, once Prefect recorded the step (task runs reach the
        server after their flow run ended)."""
        deadline = time.monotonic() + 15
        while not re.search(step, out := hookline(*show, env=stack.env).output, flags=re.M):
            assert time.monotonic() < deadline, out
            time.sleep(0.2)
        return out

    shown(r"^    incident +Failed ")

    f.servicenow.reset()  # ServiceNow is back
    alerts_before = [m for m in f.slack.messages if "security alert (critical)" in m["text"]]
    r = hookline(*shlex.split(replay_cmd.replace("evt_1234567890", event_id))[1:], env=stack.env)
    assert r.exit_code == 0 and f"requeued solveforce:{event_id}" in r.output, r.output
    stack.wait(event_id, "done")
    assert len(f.servicenow.incidents) == 1
    alerts_after = [m for m in f.slack.messages if "security alert (critical)" in m["text"]]
    assert len(alerts_after) == len(alerts_before) == 1  # the alert step was not repeated

    r = hookline(*shlex.split(replay_all)[1:], env=stack.env)
    assert r.exit_code == 0 and "0 event(s) requeued" in r.output, r.output
    out = hookline(*shlex.split(since)[1:], env=stack.env).output
    assert f"done       solveforce:{event_id}" in out
    out = shown(r"^    incident +Completed$")
    assert "status                    done (after 1 failed try)" in out
    assert "earlier error (resolved)  security-alert: failed: " in out


ENGINE_METRICS = ("hookline_dispatcher_", "hookline_worker_")


def test_metrics_are_the_documented_ones(stack: Stack) -> None:
    [command], _ = console_block(DOC, "curl -s http://127.0.0.1:8000/metrics")
    text = bash(
        command.replace("8000", stack.receiver.rsplit(":", 1)[1]), cwd=stack.home, env=stack.env
    )
    exposed = set(re.findall(r"^# TYPE (hookline_\w+) (\w+)", text, flags=re.M))
    doc = (REPO / DOC).read_text()
    documented = {
        (n, t)
        for n, t in re.findall(r"^\| `(hookline_\w+)` \| (\w+) \|", doc, flags=re.M)
        if not n.startswith(ENGINE_METRICS)  # `hookline up` only: tests/engine/test_metrics.py
    }
    # prometheus_client adds a `<name>_created` gauge per counter and histogram (the docs say so)
    assert documented == {(n, t) for n, t in exposed if not n.endswith("_created")}
    assert "_created" in doc
    # `serve --workers 4`: each process counts its own requests, and a scrape reaches one.
    outcomes = set(re.findall(r'hookline_webhook_requests_total\{outcome="(\w+)"', text))
    row = next(line for line in doc.splitlines() if "`hookline_webhook_requests_total`" in line)
    assert all(f"`{o}`" in row for o in outcomes)


def test_signature_by_hand_matches_the_receiver(stack: Stack) -> None:
    [command], _ = console_block(DOC, "printf '%s' \"$body\"")
    body = '{"event_type":"webhook.test","event_id":"t1","data":{"test":true}}'
    out = bash(command, cwd=stack.home, env={**stack.env, "body": body}).strip()
    assert "sha256=" + out == sign_solveforce(body.encode(), NEW_SECRET)
