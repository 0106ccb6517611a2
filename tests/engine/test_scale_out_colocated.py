"""Scale-out with whole engines: several `hookline worker --dispatch` processes on PostgreSQL.

Each process runs a dispatcher and a worker; its dispatcher hands the runs it creates to its
own worker (the fastest topology, bench/README.md "Sustained"). Two of them share the inbox
and the Prefect server (`hookline prefect-server` on a fresh database); one receiver takes
EVENTS signed events, two recipes match each. Engine 0 is SIGKILLed with calls in flight and
events claimed, and a supervisor starts a new one: the surviving dispatcher takes over the
dead one's claimed events when their lease ends and recovers its worker's runs when its
heartbeats stop. Every (event, recipe) must end with one Completed run that the inbox points
at, and every side effect must happen exactly once by its idempotency key (a POST re-sent by
the recovery of a run that was in flight in the killed process is the only repeat allowed).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hookline.config import CoreSettings
from hookline.engine.prefect_server import free_port
from hookline.engine.send import send
from tests.docs.conftest import Proc, clean_env, start
from tests.engine import test_scale_out as scale
from tests.stack import PG, pg, pg_available, prefect_on_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SECRET = "whsec-colocated-0123456789"
EVENTS = 80
LIMIT = 8
TIMEOUT = 6.0  # --worker-timeout and --lease


@dataclass
class Engines:
    url: str
    prefect_api: str
    inbox: CoreSettings
    sink: scale.Sink
    procs: list[Proc]
    start_engine: Any  # i -> a new `hookline worker --dispatch` as e<i>


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    if not pg_available():
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432")
    home = tmp_path
    scale.write_project(home)
    schema = f"hl_coloc_{uuid.uuid4().hex[:8]}"
    inbox = CoreSettings(home=home / "hookline-home", database_url=f"{PG}/test?schema={schema}")
    procs: list[Proc] = []
    try:
        with scale.sink_server() as sink:
            env = clean_env(
                SOLVEFORCE_SECRET=SECRET,
                SINK_URL=sink.url,
                PREFECT_HOME=str(home / "prefect-home"),
                HOOKLINE_HOME=str(inbox.home),
                HOOKLINE_DATABASE_URL=str(inbox.database_url),
            )
            with prefect_on_postgres(home, env) as (api, _server):
                env["PREFECT_API_URL"] = api

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

                def engine(i: int) -> Proc:
                    p = run(
                        f"engine{i}",
                        *("worker", "--dispatch", "--limit", str(LIMIT), "--poll", "0.2"),
                        *("--heartbeat", "1", "--worker-timeout", str(TIMEOUT)),
                        *("--lease", str(TIMEOUT)),
                        SCALE_WORKER=f"e{i}",
                    )
                    p.wait_for(f"polling work pool 'hookline' (limit {LIMIT})")
                    return p

                try:
                    port = free_port()
                    receiver = run("serve", "serve", "--host", "127.0.0.1", "--port", str(port))
                    receiver.wait_http(f"http://127.0.0.1:{port}/healthz")
                    yield Engines(
                        url=f"http://127.0.0.1:{port}/webhooks/solveforce",
                        prefect_api=api,
                        inbox=inbox,
                        sink=sink,
                        procs=procs,
                        start_engine=engine,
                    )
                finally:  # signal all, then wait, before Prefect goes away
                    for p in procs:
                        if p.proc.poll() is None:
                            p.proc.send_signal(signal.SIGTERM)
                    for p in procs:
                        p.stop()
    finally:
        asyncio.run(pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def test_two_whole_engines_share_a_storm_and_survive_a_sigkill(engines: Engines) -> None:
    from hookline import samples

    e0, e1 = engines.start_engine(0), engines.start_engine(1)
    payloads = []
    for n in range(EVENTS):
        payload = samples.load("service.status.changed")
        payload["event_id"] = f"evt_coloc_{n:03d}_{uuid.uuid4().hex[:8]}"
        payloads.append(payload)
    event_ids = [p["event_id"] for p in payloads]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: send(p, url=engines.url, secret=SECRET), payloads))
    assert {(a.status_code, a.json()["status"]) for a in answers} == {(200, "accepted")}

    # SIGKILL engine 0 while its worker has calls in flight (its dispatcher holds events too)
    deadline = time.monotonic() + 90
    while True:
        with engines.sink.lock:
            busy, done_by_e0 = engines.sink.working["e0"], engines.sink.worked["e0"]
        if busy >= 2 and done_by_e0 >= 20:
            e0.proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "engine 0 never had runs in flight"
        time.sleep(0.05)
    killed_at = time.monotonic()
    e0.proc.wait(10)
    e2 = engines.start_engine(2)  # its supervisor restarts it: a new worker to the pool

    deadline = time.monotonic() + 180
    while True:
        entries = asyncio.run(scale.inbox_entries(engines.inbox, event_ids))
        statuses = Counter(e.status for e in entries.values())
        assert statuses["failed"] == 0, [e for e in entries.values() if e.status == "failed"]
        if statuses["done"] == EVENTS:
            break
        for p in (e1, e2):
            assert p.proc.poll() is None, f"{p.args} exited:\n{p.output()}"
        assert time.monotonic() < deadline, f"not all done 180 s after the SIGKILL: {statuses}"
        time.sleep(0.5)
    print(f"\nall {EVENTS} events done {time.monotonic() - killed_at:.1f}s after the SIGKILL")

    # one Completed run per (event, recipe), the one the inbox points at; the killed
    # process's runs in flight were recovered as Crashed
    runs = asyncio.run(scale.recipe_runs(engines.prefect_api))
    completed = [r for r in runs if r.state.type.value == "COMPLETED"]
    assert Counter(r.name for r in completed) == Counter(
        f"{name}/{eid}" for eid in event_ids for name in scale.RECIPES
    )
    assert {r.state.type.value for r in runs} <= {"COMPLETED", "CRASHED"}
    crashed = [r for r in runs if r.state.type.value == "CRASHED"]
    assert crashed, "the killed engine had runs in flight: they must be recovered"
    assert asyncio.run(scale.claimed_by(engines.prefect_api, crashed)) == {scale.worker_name(e0)}
    run_ids = {r.name: str(r.id) for r in completed}
    for eid, entry in entries.items():
        assert entry.flow_runs == {name: run_ids[f"{name}/{eid}"] for name in scale.RECIPES}

    # every side effect exactly once by its idempotency key, but for the killed runs' resends
    by_key: dict[str, list[dict[str, Any]]] = {}
    for e in list(engines.sink.effects):
        by_key.setdefault(e["key"], []).append(e)
    assert Counter((v[0]["event"], v[0]["recipe"]) for v in by_key.values()) == Counter(
        (eid, name) for eid in event_ids for name in scale.RECIPES
    )
    repeated = {k: v for k, v in by_key.items() if len(v) > 1}
    assert len(repeated) <= LIMIT, repeated
    assert all(v[0]["worker"] == "e0" and len(v) == 2 for v in repeated.values()), repeated
    # all three engines worked the storm (each dispatcher hands its own runs to its worker)
    workers = Counter(e["worker"] for e in engines.sink.effects)
    assert set(workers) == {"e0", "e1", "e2"}, workers
