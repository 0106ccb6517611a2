"""Scale-out, tested: Hookline as separate processes on PostgreSQL, two of each.

Prefect's server on a fresh PostgreSQL database, the inbox in a fresh schema of database
`test`; two `hookline serve`, two `hookline dispatch --concurrency 4` and two `hookline worker`,
all real subprocesses, with the fake vendors in another process. A stream of signed
service.status.changed events goes to both receivers in turn (plus duplicates, each to the
receiver that did not store it); a two-step recipe posts each event to the fake Slack.

Every event must end `done` with exactly one Completed flow run, each step must have run exactly
once, and both workers must have executed runs: each worker process has its own SCALE_WORKER,
which the recipe reads as `env.SCALE_WORKER`, so every Slack message names the worker that sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hookline.config import CoreSettings
from hookline.engine.send import send
from hookline.inbox import InboxEntry, open_inbox
from tests.docs.conftest import REPO, Proc, clean_env, free_port, start
from tests.fakes import RemoteFake
from tests.stack import PG, pg, pg_available, prefect_on_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SECRET = "whsec-scale-out-secret"
EVENTS = 40
RECIPE = "relay"
RECIPE_YAML = f"""
name: {RECIPE}
on: service.status.changed
defaults: {{ retries: 2, retry_backoff: 0.1s, timeout: 10s }}
steps:
  - id: first
    uses: slack.post_message
    with:
      channel: "#scale-out"
      text: "first {{{{ event_id }}}} by {{{{ env.SCALE_WORKER }}}}"
  - id: second
    uses: slack.post_message
    with:
      channel: "{{{{ steps.first.channel }}}}"
      thread_ts: "{{{{ steps.first.ts }}}}"
      text: "second {{{{ event_id }}}} by {{{{ env.SCALE_WORKER }}}}"
"""


@dataclass
class ScaledOut:
    urls: list[str]  # the two receivers' /webhooks/solveforce
    prefect_api: str
    inbox: CoreSettings
    slack: RemoteFake
    procs: list[Proc]

    def assert_running(self) -> None:
        for p in self.procs:
            assert p.proc.poll() is None, f"{p.args} exited:\n{p.output()}"


@contextlib.contextmanager
def fake_vendors(home: Path) -> Iterator[dict[str, Any]]:
    """`python -m tests.fakes` in another process; yields its env/control JSON."""
    port_file, log = home / "fakes.json", home / "fakes.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes", "--port-file", str(port_file)],
            cwd=REPO,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the fake vendors did not start"
            time.sleep(0.05)
        yield json.loads(port_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ScaledOut]:
    if not pg_available():
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432")
    home = tmp_path
    (home / "recipes").mkdir()
    (home / "recipes" / f"{RECIPE}.yaml").write_text(textwrap.dedent(RECIPE_YAML))
    config = {
        "sources": {"solveforce": {"scheme": "solveforce", "secrets": ["${SOLVEFORCE_SECRET}"]}},
        "env": ["SCALE_WORKER"],
    }
    (home / "hookline.yaml").write_text(yaml.safe_dump(config))
    schema = f"hl_scale_{uuid.uuid4().hex[:8]}"
    inbox = CoreSettings(home=home / "hookline-home", database_url=f"{PG}/test?schema={schema}")
    procs: list[Proc] = []
    try:
        with fake_vendors(home) as fakes:
            env = clean_env(
                **fakes["env"],
                SOLVEFORCE_SECRET=SECRET,
                PREFECT_HOME=str(home / "prefect-home"),
                HOOKLINE_HOME=str(inbox.home),
                HOOKLINE_DATABASE_URL=str(inbox.database_url),
            )
            with prefect_on_postgres(home, env) as (api, _server):
                env["PREFECT_API_URL"] = api
                try:
                    ports = [free_port(), free_port()]

                    def run(name: str, *args: str, **extra: str) -> Proc:
                        procs.append(
                            start(
                                ["hookline", *args],
                                cwd=home,
                                env={**env, **extra},
                                log=home / f"{name}.log",
                            )
                        )
                        return procs[-1]

                    # all six start at once; each then waits for its own readiness line
                    receivers = [
                        run(f"serve{i}", "serve", "--host", "127.0.0.1", "--port", str(port))
                        for i, port in enumerate(ports)
                    ]
                    dispatchers = [
                        run(f"dispatch{i}", "dispatch", "--concurrency", "4") for i in range(2)
                    ]
                    workers = [
                        run(
                            f"worker{i}",
                            "worker",
                            "--limit",
                            "4",
                            "--poll",
                            "0.2",
                            SCALE_WORKER=f"w{i}",
                        )
                        for i in range(2)
                    ]
                    for r, port in zip(receivers, ports, strict=True):
                        r.wait_http(f"http://127.0.0.1:{port}/healthz")
                    for d in dispatchers:
                        d.wait_for("dispatcher running")
                    for w in workers:
                        w.wait_for("polling work pool 'hookline' (limit 4)")
                    yield ScaledOut(
                        urls=[f"http://127.0.0.1:{p}/webhooks/solveforce" for p in ports],
                        prefect_api=api,
                        inbox=inbox,
                        slack=RemoteFake(
                            fakes["control"]["slack"], ca_file=fakes["env"]["SSL_CERT_FILE"]
                        ),
                        procs=procs,
                    )
                finally:  # signal all, then wait (in parallel), before Prefect goes away
                    for p in procs:
                        if p.proc.poll() is None:
                            p.proc.send_signal(signal.SIGTERM)
                    for p in procs:
                        p.stop()
    finally:
        asyncio.run(pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


async def inbox_entries(settings: CoreSettings, event_ids: list[str]) -> dict[str, InboxEntry]:
    inbox = await open_inbox(settings)
    try:
        out: dict[str, InboxEntry] = {}
        for eid in event_ids:
            entry = await inbox.find("solveforce", eid)
            assert entry is not None, eid
            out[eid] = entry
        return out
    finally:
        await inbox.close()


async def recipe_runs(api: str) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        async with get_client() as client:
            runs: list[Any] = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"recipe:{RECIPE}"])),
                limit=200,  # the server's maximum; more than EVENTS
            )
            return runs


def test_two_of_each_run_every_event_once(stack: ScaledOut) -> None:
    from hookline import samples

    payloads = []
    for n in range(EVENTS):
        payload = samples.load("service.status.changed")
        payload["event_id"] = f"evt_scale_{n:02d}_{uuid.uuid4().hex[:8]}"
        payloads.append(payload)
    event_ids = [p["event_id"] for p in payloads]

    def deliver(n: int) -> list[httpx.Response]:
        answers = [send(payloads[n], url=stack.urls[n % 2], secret=SECRET)]
        if n % 8 == 3:  # SolveForce delivers it again, to the other receiver
            answers.append(send(payloads[n], url=stack.urls[(n + 1) % 2], secret=SECRET))
        return answers

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(deliver, range(EVENTS)))
    for n, (first, *again) in enumerate(answers):
        assert (first.status_code, first.json()["status"]) == (200, "accepted"), (n, first.text)
        for dup in again:
            assert (dup.status_code, dup.json()["status"]) == (200, "duplicate"), (n, dup.text)
    assert sum(len(a) for a in answers) == EVENTS + EVENTS // 8

    # Every event ends done, none failed on the way, on the first attempt.
    deadline = time.monotonic() + 90
    while True:
        entries = asyncio.run(inbox_entries(stack.inbox, event_ids))
        statuses = Counter(e.status for e in entries.values())
        assert statuses["failed"] == 0, [e for e in entries.values() if e.status == "failed"]
        if statuses["done"] == EVENTS:
            break
        stack.assert_running()
        assert time.monotonic() < deadline, f"not all done after 90 s: {statuses}"
        time.sleep(0.25)
    assert all(e.attempts == 0 for e in entries.values()), entries

    # Exactly one flow run per (event, recipe), Completed, and the one the inbox points at.
    runs = asyncio.run(recipe_runs(stack.prefect_api))
    assert Counter(r.name for r in runs) == Counter(f"{RECIPE}/{eid}" for eid in event_ids)
    assert {r.state.type.value for r in runs} == {"COMPLETED"}
    run_ids = {r.name: str(r.id) for r in runs}
    for eid, entry in entries.items():
        assert entry.flow_runs == {RECIPE: run_ids[f"{RECIPE}/{eid}"]}, entry

    # Each step ran once per event: two Slack messages, the second in the first's thread,
    # both sent by the same worker.
    messages = stack.slack.state()["messages"]
    assert len(messages) == 2 * EVENTS, messages
    sent: dict[str, dict[str, dict[str, Any]]] = {eid: {} for eid in event_ids}
    for m in messages:
        step, eid, _by, worker = m["text"].split()
        assert step not in sent[eid], (eid, step, messages)
        sent[eid][step] = {**m, "worker": worker}
    ran_on: Counter[str] = Counter()
    for eid, steps in sent.items():
        assert set(steps) == {"first", "second"}, (eid, steps)
        assert steps["second"]["thread_ts"] == steps["first"]["ts"], (eid, steps)
        assert steps["second"]["worker"] == steps["first"]["worker"], (eid, steps)
        ran_on[steps["first"]["worker"]] += 1

    # Both workers executed runs.
    assert set(ran_on) == {"w0", "w1"}, ran_on
