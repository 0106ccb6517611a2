"""End-to-end benchmark: signed webhook -> receiver -> inbox -> dispatcher -> Prefect flow run ->
in-process worker -> 3 recipe steps against a fake vendor, next to Prefect's own ceiling (a bare
async flow with 3 trivial tasks, created from a deployment and executed in-process) measured on
the same server in the same run.

    .venv/bin/python bench/e2e.py [--events 60] [--profiles embedded,default,postgres]

Profiles: `embedded` is the SQLite Prefect server `hookline up` starts (services tuned, see
hookline/engine/prefect_server.py); `default` is a plain `prefect server start` on SQLite;
`postgres` is the embedded profile on the local PostgreSQL, with Hookline's inbox there too.
Prints, per profile: the ceiling's runs/s, Hookline's sustained recipe runs/s (first accepted
-> last completed), the ratio, and the latency distribution accepted -> first step running and
accepted -> run completed. Timings come from Prefect's own run records.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from hookline.engine.prefect_serve import IMMEDIATE_ENV  # noqa: E402
from hookline.engine.prefect_server import EMBEDDED_PROFILE, PrefectServer, free_port  # noqa: E402

RECIPE = """
name: bench
on: service.status.changed
defaults: { retries: 0 }
steps:
  - id: first
    uses: http.request
    with:
      url: "{{ env.HOOKLINE_FAKE_ECHO_URL }}/first"
      method: POST
      json: { id: "{{ event_id }}" }
  - id: second
    uses: http.request
    with:
      url: "{{ env.HOOKLINE_FAKE_ECHO_URL }}/second"
      method: POST
      json: { id: "{{ event_id }}" }
  - id: third
    uses: http.request
    with:
      url: "{{ env.HOOKLINE_FAKE_ECHO_URL }}/third"
      method: POST
      json: { id: "{{ event_id }}" }
"""

SECRET = "bench-secret-0123456789"
PACED = 15


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def run_hookline(
    api_url: str,
    work: Path,
    n_events: int,
    limit: int,
    concurrency: int,
    database_url: str | None,
    gate_on: bool,
) -> dict[str, Any]:
    import httpx
    import uvicorn
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    from hookline.config import CoreSettings, load_config
    from hookline.engine.deployment import ensure_deployment
    from hookline.engine.dispatcher import Dispatcher
    from hookline.engine.up import _NotifyingInbox, _QuietServer
    from hookline.engine.worker import Worker
    from hookline.flows import runtime
    from hookline.inbox import open_inbox
    from hookline.receiver.app import create_app
    from hookline.recipes import load_recipes
    from vendor_fakes import FakeVendors

    recipes_dir = work / "recipes"
    recipes_dir.mkdir()
    (recipes_dir / "bench.yaml").write_text(textwrap.dedent(RECIPE))
    config = load_config(ROOT / "hookline.yaml")
    config.env = [*config.env, "HOOKLINE_FAKE_ECHO_URL"]
    settings = CoreSettings(home=work / "home", recipes=str(recipes_dir), database_url=database_url)
    settings.home.mkdir()
    recipes = load_recipes(settings.recipe_paths, config=config)
    port = free_port()
    with FakeVendors(tls=False) as fakes:
        environ = {**os.environ, **fakes.env, "SOLVEFORCE_WEBHOOK_SECRET": SECRET}
        inbox = await open_inbox(settings)
        async with get_client() as client:
            deployment_id = await ensure_deployment(client)
            runtime.install(
                runtime.Runtime(inbox=inbox, recipes=recipes, config=config, environ=environ)
            )
            gate = asyncio.Lock() if gate_on else None
            worker = Worker(client, limit=limit, poll_seconds=2.0, write_gate=gate)
            dispatcher = Dispatcher(
                inbox,
                recipes,
                client,
                deployment_id,
                concurrency=concurrency,
                write_gate=gate,
            )
            dispatcher.hand_to(worker)
            app = create_app(
                config,
                settings=settings,
                environ=environ,
                inbox=_NotifyingInbox(inbox, dispatcher.notify),
            )  # type: ignore[arg-type]
            server = _QuietServer(
                uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
            )
            stop = asyncio.Event()
            jobs = asyncio.gather(server.serve(), dispatcher.run(stop), worker.run(stop))
            while not server.started:
                await asyncio.sleep(0.05)
            accepted: dict[str, float] = {}
            paced: set[str] = set()
            url = f"http://127.0.0.1:{port}/webhooks/solveforce"

            async def wait_all(total: int) -> None:
                deadline = time.time() + 600
                while True:
                    counts = await inbox.counts()
                    if counts.get("done", 0) + counts.get("failed", 0) >= total:
                        return
                    if time.time() > deadline:
                        raise SystemExit(f"not finished after 600 s: {counts}")
                    await asyncio.sleep(0.05)

            async with httpx.AsyncClient() as http:
                from hookline import samples

                async def send_one() -> str:
                    payload = samples.load("service.status.changed")
                    payload["event_id"] = f"evt_bench_{uuid.uuid4().hex[:12]}"
                    body = json.dumps(payload).encode()
                    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                    r = await http.post(
                        url,
                        content=body,
                        headers={"Content-Type": "application/json", "X-SolveForce-Signature": sig},
                    )
                    if r.status_code != 200:
                        raise SystemExit(f"receiver answered {r.status_code}: {r.text}")
                    accepted[payload["event_id"]] = time.time()
                    return str(payload["event_id"])

                # phase 1, latency: one event at a time on an idle system
                for i in range(PACED):
                    paced.add(await send_one())
                    await wait_all(i + 1)
                    await asyncio.sleep(0.3)
                # phase 2, throughput: a burst, measured first accepted -> last completed
                for _ in range(n_events):
                    await send_one()
            await wait_all(PACED + n_events)
            stop.set()
            server.should_exit = True
            await jobs
            entries = await inbox.list(limit=n_events + PACED + 10)
            run_ids = {e.event_id: e.flow_runs["bench"] for e in entries if e.flow_runs}
            ids = [uuid.UUID(r) for r in run_ids.values()]
            runs, task_runs = [], []
            for i in range(0, len(ids), 100):  # the API answers at most 200 rows per call
                chunk = FlowRunFilter(id=FlowRunFilterId(any_=ids[i : i + 100]))
                runs += await client.read_flow_runs(flow_run_filter=chunk, limit=100)
                task_runs += await client.read_task_runs(
                    flow_run_filter=chunk,
                    task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["first"])),
                    limit=100,
                )
            by_id = {str(r.id): r for r in runs}
            first_step = {
                str(t.flow_run_id): t.start_time.timestamp() for t in task_runs if t.start_time
            }
            runtime.install(None)
            from prefect.logging.handlers import APILogHandler

            await APILogHandler.aflush()
        await inbox.close()
    failed = sum(1 for e in entries if e.status != "done")
    idle = {eid: rid for eid, rid in run_ids.items() if eid in paced}
    burst = {eid: rid for eid, rid in run_ids.items() if eid not in paced}

    def lat(runs: dict[str, str]) -> tuple[list[float], list[float]]:
        to_first = [
            first_step[rid] - accepted[eid] for eid, rid in runs.items() if rid in first_step
        ]
        to_done = [
            by_id[rid].end_time.timestamp() - accepted[eid]
            for eid, rid in runs.items()
            if by_id[rid].end_time
        ]
        return to_first, to_done

    idle_first, idle_done = lat(idle)
    burst_first, burst_done = lat(burst)
    first = min(accepted[e] for e in burst)
    last = max(by_id[rid].end_time.timestamp() for rid in burst.values() if by_id[rid].end_time)
    return {
        "events": n_events,
        "failed": failed,
        "runs_per_s": len(burst) / (last - first),
        "idle_first_step_p50": pct(idle_first, 0.5),
        "idle_first_step_p99": pct(idle_first, 0.99),
        "idle_done_p50": pct(idle_done, 0.5),
        "idle_done_p99": pct(idle_done, 0.99),
        "burst_first_step_p50": pct(burst_first, 0.5),
        "burst_first_step_p99": pct(burst_first, 0.99),
        "burst_done_p50": pct(burst_done, 0.5),
        "burst_done_p99": pct(burst_done, 0.99),
    }


async def run_ceiling(n: int, *, shared: bool) -> dict[str, Any]:
    from prefect import get_client

    from bench.prefect_ceiling import ceiling

    async with get_client() as client:
        await ceiling(client, runs=3, n_tasks=3, concurrency=1, shared=shared)  # warm-up
        best: dict[str, Any] | None = None
        for conc in (1, 2):
            r = await ceiling(client, runs=n, n_tasks=3, concurrency=conc, shared=shared)
            r["concurrency"] = conc
            if best is None or r["runs_per_s"] > best["runs_per_s"]:
                best = r
        assert best is not None
        return best


def fresh_postgres_db(name: str) -> str:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def profile_run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    work = Path(tempfile.mkdtemp(prefix=f"hookline-bench-{name}-"))
    profile = dict(EMBEDDED_PROFILE)
    db = None
    inbox_url = None
    if name == "default":
        profile = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    elif name == "deferred":  # the embedded profile minus BEGIN IMMEDIATE, for comparison
        profile.pop(IMMEDIATE_ENV)
    elif name == "postgres":
        db = fresh_postgres_db("hookline_bench_prefect")
        inbox_url = f"postgresql://postgres@127.0.0.1:5432/test?schema=bench_{uuid.uuid4().hex[:8]}"
    server = PrefectServer(work / "prefect", profile=profile, database_url=db)
    server.start()
    try:
        os.environ["PREFECT_API_URL"] = server.api_url
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            ceiling = asyncio.run(run_ceiling(args.events, shared=False))
            ceiling_shared = asyncio.run(run_ceiling(args.events, shared=True))
            # as `hookline up` wires them, unless told otherwise
            limit, conc, gate_on = args.limit, args.concurrency, args.gate == "on"
            hook = asyncio.run(
                run_hookline(server.api_url, work, args.events, limit, conc, inbox_url, gate_on)
            )
            hook.update(limit=limit, concurrency=conc, write_gate=gate_on)
    finally:
        server.stop()
    return {"profile": name, "ceiling": ceiling, "ceiling_shared": ceiling_shared, "hookline": hook}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--profiles", default="embedded,default,postgres")
    parser.add_argument("--limit", type=int, default=6, help="worker limit (`hookline up`: 6)")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="dispatcher concurrency (`hookline up`: 4)"
    )
    parser.add_argument(
        "--gate",
        choices=["on", "off"],
        default="off",
        help="one Prefect writer at a time between dispatcher and worker (`hookline up`: off)",
    )
    parser.add_argument("--http-log", type=Path, help="write every Prefect API request here")
    args = parser.parse_args()
    if args.http_log:
        import logging

        handler = logging.FileHandler(args.http_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        httpx_logger = logging.getLogger("httpx")
        httpx_logger.addHandler(handler)
        httpx_logger.setLevel(logging.INFO)
        httpx_logger.propagate = False
    results = [profile_run(p, args) for p in args.profiles.split(",") if p]
    print()
    print(
        "ceiling: bare 3-task flow runs executed in-process, each on its own (plain) and with\n"
        "what `hookline worker` shares between runs (shared); ratio = hookline / shared ceiling\n"
    )
    print(
        f"{'profile':<10} {'ceiling plain/shared':>21} {'hookline runs/s':>16} {'ratio':>6} "
        f"{'idle: ->1st step p50/p99':>25} {'->done p50/p99':>15} "
        f"{'burst: ->1st step p50/p99':>26} {'->done p50/p99':>15} {'failed':>6}"
    )
    for r in results:
        c, cs, h = r["ceiling"], r["ceiling_shared"], r["hookline"]
        print(
            f"{r['profile']:<10} {c['runs_per_s']:>14.2f}/{cs['runs_per_s']:<6.2f} "
            f"{h['runs_per_s']:>16.2f} {h['runs_per_s'] / cs['runs_per_s']:>6.2f} "
            f"{h['idle_first_step_p50']:>17.3f}/{h['idle_first_step_p99']:<7.3f} "
            f"{h['idle_done_p50']:>7.3f}/{h['idle_done_p99']:<7.3f} "
            f"{h['burst_first_step_p50']:>18.3f}/{h['burst_first_step_p99']:<7.3f} "
            f"{h['burst_done_p50']:>7.3f}/{h['burst_done_p99']:<7.3f} {h['failed']:>6}"
        )
    by = {r["profile"]: r for r in results}
    if "embedded" in by and "default" in by:
        gain = by["embedded"]["hookline"]["runs_per_s"] / by["default"]["hookline"]["runs_per_s"]
        print(f"\nembedded profile vs default `prefect server start`: {gain:.2f}x recipe runs/s")
    print("\n" + json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
