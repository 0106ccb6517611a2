"""Scale-out, tested under load and crashes: Hookline as separate processes on PostgreSQL.

Prefect's server (`hookline prefect-server`) on a fresh PostgreSQL database, the inbox in a
fresh schema of database `test`; two `hookline serve`, two `hookline dispatch` and workers,
all real subprocesses. 110 signed service.status.changed events go to both receivers in turn
(plus duplicates, each to the receiver that did not store it); two recipes match each, so
220 runs. Each recipe makes a slow call to a loopback sink, then its side effect (a POST
carrying Hookline's idempotency key).

Dispatcher 0 is SIGKILLed mid-batch, holding claimed events. Every run is created before a
worker starts, so 220 runs are in flight: more than Prefect answers in one query (200).
Then two workers start, and worker 0 is SIGKILLed with runs in flight; a supervisor starts a
new one. Every event must still end `done`, every (event, recipe) must have exactly one
Completed run that the inbox points at, and every side effect must have happened exactly
once (by its idempotency key; a POST re-sent by the recovery of the killed worker's
in-flight run is the only repeat allowed, as with any vendor that honours idempotency
keys), in bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import signal
import socket
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from hookline.config import CoreSettings
from hookline.engine.prefect_server import free_port
from hookline.engine.send import send
from hookline.inbox import InboxEntry, open_inbox
from tests.docs.conftest import Proc, clean_env, start
from tests.stack import PG, pg, pg_available, prefect_on_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SECRET = "whsec-scale-out-0123456789"
EVENTS = 110  # 220 runs in flight: more than Prefect's 200 per query
RECIPES = ("relay-a", "relay-b")
WORKER_LIMIT = 8
WORKER_TIMEOUT = 8.0
LEASE = 8.0
RECIPE_YAML = """
name: {name}
on: service.status.changed
defaults: {{ retries: 3, retry_backoff: 0.2s, timeout: 10s }}
steps:
  - id: work
    uses: http.request
    with:
      method: GET
      url: "{{{{ env.SINK_URL }}}}/work"
      params: {{ event: "{{{{ event_id }}}}", recipe: "{{{{ recipe.name }}}}",
                 worker: "{{{{ env.SCALE_WORKER }}}}" }}
  - id: effect
    uses: http.request
    with:
      url: "{{{{ env.SINK_URL }}}}/effect"
      json: {{ event: "{{{{ event_id }}}}", recipe: "{{{{ recipe.name }}}}",
               worker: "{{{{ env.SCALE_WORKER }}}}" }}
      idempotency_header: Idempotency-Key
"""


@dataclass
class Sink:
    """The vendor: /work takes 0.25 s and changes nothing; /effect records each POST."""

    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    effects: list[dict[str, Any]] = field(default_factory=list)
    working: Counter[str] = field(default_factory=Counter)  # worker -> calls in flight now
    worked: Counter[str] = field(default_factory=Counter)


@contextlib.contextmanager
def sink_server(work_seconds: float = 0.25) -> Iterator[Sink]:
    sink = Sink()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a killed worker
                self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            worker = parse_qs(urlsplit(self.path).query).get("worker", ["?"])[0]
            with sink.lock:
                sink.working[worker] += 1
                sink.worked[worker] += 1
            try:
                time.sleep(work_seconds)
            finally:
                with sink.lock:
                    sink.working[worker] -= 1
            self._answer({"ok": True})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with sink.lock:
                sink.effects.append({**body, "key": self.headers.get("Idempotency-Key")})
            self._answer({"recorded": True})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class ScaledOut:
    urls: list[str]  # the two receivers' /webhooks/solveforce
    prefect_api: str
    inbox: CoreSettings
    sink: Sink
    receivers: list[Proc]
    dispatchers: list[Proc]
    workers: list[Proc]
    start_worker: Any  # i -> `hookline worker` as w<i>, stopped with the others

    def add_worker(self, i: int) -> Proc:
        w: Proc = self.start_worker(i)
        w.wait_for(f"polling work pool 'hookline' (limit {WORKER_LIMIT})")
        self.workers.append(w)
        return w

    def assert_running(self, *, except_: tuple[Proc, ...] = ()) -> None:
        for p in [*self.receivers, *self.dispatchers, *self.workers]:
            if p not in except_:
                assert p.proc.poll() is None, f"{p.args} exited:\n{p.output()}"


def write_project(home: Path) -> None:
    """The RECIPES and a hookline.yaml with the SolveForce source, in ``home``."""
    (home / "recipes").mkdir()
    for name in RECIPES:
        (home / "recipes" / f"{name}.yaml").write_text(
            textwrap.dedent(RECIPE_YAML.format(name=name))
        )
    config = {
        "sources": {"solveforce": {"scheme": "solveforce", "secrets": ["${SOLVEFORCE_SECRET}"]}},
        "env": ["SCALE_WORKER", "SINK_URL"],
    }
    (home / "hookline.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ScaledOut]:
    if not pg_available():
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432")
    home = tmp_path
    write_project(home)
    schema = f"hl_scale_{uuid.uuid4().hex[:8]}"
    inbox = CoreSettings(home=home / "hookline-home", database_url=f"{PG}/test?schema={schema}")
    procs: list[Proc] = []
    try:
        with sink_server() as sink:
            env = clean_env(
                SOLVEFORCE_SECRET=SECRET,
                SINK_URL=sink.url,
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
                        run(
                            f"dispatch{i}",
                            "dispatch",
                            "--concurrency",
                            "4",
                            "--worker-timeout",
                            str(WORKER_TIMEOUT),
                            "--lease",
                            str(LEASE),
                            # every event's runs in Prefect before a worker starts (below)
                            "--max-waiting",
                            str(4 * EVENTS),
                        )
                        for i in range(2)
                    ]

                    def worker(i: int) -> Proc:
                        limit = str(WORKER_LIMIT)
                        return run(
                            f"worker{i}",
                            *("worker", "--limit", limit, "--poll", "0.2", "--heartbeat", "2"),
                            SCALE_WORKER=f"w{i}",
                        )

                    for r, port in zip(receivers, ports, strict=True):
                        r.wait_http(f"http://127.0.0.1:{port}/healthz")
                    for d in dispatchers:
                        d.wait_for("dispatcher running")
                    yield ScaledOut(
                        urls=[f"http://127.0.0.1:{p}/webhooks/solveforce" for p in ports],
                        prefect_api=api,
                        inbox=inbox,
                        sink=sink,
                        receivers=receivers,
                        dispatchers=dispatchers,
                        workers=[],
                        start_worker=worker,
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


async def dispatched_now(settings: CoreSettings) -> int:
    inbox = await open_inbox(settings)
    try:
        return (await inbox.counts())["dispatched"]
    finally:
        await inbox.close()


async def recipe_runs(api: str) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        async with get_client() as client:
            runs: list[Any] = []
            for name in RECIPES:
                offset = 0
                while True:
                    page = await client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(
                            tags=FlowRunFilterTags(all_=[f"recipe:{name}"])
                        ),
                        limit=200,  # the server's maximum
                        offset=offset,
                    )
                    runs += page
                    offset += len(page)
                    if len(page) < 200:
                        break
            return runs


async def claimed_by(api: str, runs: list[Any]) -> set[str]:
    """The workers the runs' Pending states name ("claimed by <worker>")."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    names: set[str] = set()
    with temporary_settings(updates={PREFECT_API_URL: api}):
        async with get_client() as client:
            for r in runs:
                for state in await client.read_flow_run_states(r.id):
                    if state.is_pending() and (state.message or "").startswith("claimed by "):
                        names.add(state.message.removeprefix("claimed by "))
    return names


def worker_name(proc: Proc) -> str:
    return f"hookline-{socket.gethostname()}-{proc.proc.pid}"


def test_two_of_each_survive_load_and_sigkill(stack: ScaledOut) -> None:
    from hookline import samples

    payloads = []
    for n in range(EVENTS):
        payload = samples.load("service.status.changed")
        payload["event_id"] = f"evt_scale_{n:03d}_{uuid.uuid4().hex[:8]}"
        payloads.append(payload)
    event_ids = [p["event_id"] for p in payloads]

    def deliver(n: int) -> list[httpx.Response]:
        answers = [send(payloads[n], url=stack.urls[n % 2], secret=SECRET)]
        if n % 8 == 3:  # SolveForce delivers it again, to the other receiver
            answers.append(send(payloads[n], url=stack.urls[(n + 1) % 2], secret=SECRET))
        return answers

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(deliver, range(EVENTS)))
    for n, (first, *again) in enumerate(answers):
        assert (first.status_code, first.json()["status"]) == (200, "accepted"), (n, first.text)
        for dup in again:
            assert (dup.status_code, dup.json()["status"]) == (200, "duplicate"), (n, dup.text)

    # SIGKILL dispatcher 0 mid-batch: events dispatched, others still claimed by it
    d0 = stack.dispatchers[0]
    deadline = time.monotonic() + 60
    while asyncio.run(dispatched_now(stack.inbox)) < EVENTS // 4:
        assert time.monotonic() < deadline, "nothing dispatched after 60 s"
        time.sleep(0.05)
    d0.proc.send_signal(signal.SIGKILL)
    d0.proc.wait(10)

    # every event dispatched (dispatcher 1 takes over what 0 had claimed when its lease
    # ends) before any worker starts: 220 runs in flight, past the 200 that one Prefect
    # query can return, so following must page
    deadline = time.monotonic() + 120
    while (in_flight := 2 * asyncio.run(dispatched_now(stack.inbox))) < 2 * EVENTS:
        assert time.monotonic() < deadline, f"only {in_flight} runs created after 120 s"
        time.sleep(0.2)
    most_in_flight = in_flight
    w0, _w1 = stack.add_worker(0), stack.add_worker(1)

    # SIGKILL worker 0 while it has calls in flight
    deadline = time.monotonic() + 60
    while True:
        with stack.sink.lock:
            busy = stack.sink.working["w0"]
            done_by_w0 = stack.sink.worked["w0"]
        if busy >= 2 and done_by_w0 >= 20:
            w0.proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "worker 0 never had runs in flight"
        time.sleep(0.05)
    killed_at = time.monotonic()
    w0.proc.wait(10)
    # a supervisor restarts the worker: a new process, so a new worker to the work pool
    w2 = stack.add_worker(2)

    # Every event ends done, in bounded time.
    deadline = time.monotonic() + 240
    while True:
        entries = asyncio.run(inbox_entries(stack.inbox, event_ids))
        statuses = Counter(e.status for e in entries.values())
        most_in_flight = max(most_in_flight, 2 * statuses["dispatched"])
        assert statuses["failed"] == 0, [e for e in entries.values() if e.status == "failed"]
        if statuses["done"] == EVENTS:
            break
        stack.assert_running(except_=(w0, d0))
        assert time.monotonic() < deadline, f"not all done 240 s after the SIGKILL: {statuses}"
        time.sleep(0.5)
    settled = time.monotonic()
    print(
        f"\n{EVENTS} events x {len(RECIPES)} recipes: all done {settled - started:.1f}s after "
        f"the first send, {settled - killed_at:.1f}s after the worker's SIGKILL; "
        f"most runs in flight: {most_in_flight}"
    )
    assert most_in_flight > 200  # past Prefect's query limit: following had to page

    # One Completed run per (event, recipe), the one the inbox points at; the killed worker's
    # runs in flight were recovered as Crashed.
    runs = asyncio.run(recipe_runs(stack.prefect_api))
    completed = [r for r in runs if r.state.type.value == "COMPLETED"]
    assert Counter(r.name for r in completed) == Counter(
        f"{name}/{eid}" for eid in event_ids for name in RECIPES
    )
    assert {r.state.type.value for r in runs} <= {"COMPLETED", "CRASHED"}
    crashed = [r for r in runs if r.state.type.value == "CRASHED"]
    assert crashed, "the killed worker had runs in flight: they must be recovered"
    # each run's Pending state names the worker that claimed it: the crashed ones, w0
    assert asyncio.run(claimed_by(stack.prefect_api, crashed)) == {worker_name(w0)}
    run_ids = {r.name: str(r.id) for r in completed}
    for eid, entry in entries.items():
        assert entry.flow_runs == {name: run_ids[f"{name}/{eid}"] for name in RECIPES}, entry
    assert asyncio.run(claimed_by(stack.prefect_api, completed[:40])) <= {
        worker_name(w) for w in [*stack.workers, w2]
    }

    # Every side effect exactly once by its idempotency key; a POST repeats only where the
    # killed worker's run was in flight.
    effects = list(stack.sink.effects)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for e in effects:
        by_key.setdefault(e["key"], []).append(e)
    assert Counter((v[0]["event"], v[0]["recipe"]) for v in by_key.values()) == Counter(
        (eid, name) for eid in event_ids for name in RECIPES
    )
    repeated = {k: v for k, v in by_key.items() if len(v) > 1}
    assert len(repeated) <= WORKER_LIMIT, repeated
    assert all(v[0]["worker"] == "w0" and len(v) == 2 for v in repeated.values()), repeated
    assert {"w0", "w1"} <= {e["worker"] for e in effects} <= {"w0", "w1", "w2"}
