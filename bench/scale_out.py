"""Scale-out benchmark: Hookline as separate processes on PostgreSQL, 1 worker vs 2 workers,
and the time to recover the runs of a SIGKILLed worker.

    .venv/bin/python bench/scale_out.py [--events 150] [--work-ms 50] [--worker-timeout 15]

Prefect's server is `hookline prefect-server` (Hookline's production profile) on a fresh
PostgreSQL database; the inbox is a fresh schema of database `test`; one `hookline serve`,
one `hookline dispatch` and 1 or 2 `hookline worker --limit 8`, all real processes. Two
recipes match each event; each makes a call to a loopback sink that answers after
``--work-ms`` (a SaaS API's latency), then posts its side effect. Printed per phase:

- **throughput**: recipe runs/s from the first accepted event to the last one `done`, with
  1 worker and with 2 (the ratio is the scale-out gain on this 2-core machine);
- **recovery**: with 2 workers, one is SIGKILLed while it has runs in flight; the time from
  the SIGKILL until every event is `done` again, next to ``--worker-timeout`` (the dispatcher
  waits that long for a heartbeat before it recovers the runs).

Every phase also checks that each (event, recipe) side effect happened exactly once by its
idempotency key.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from hookline.config import CoreSettings  # noqa: E402
from hookline.engine.prefect_server import free_port  # noqa: E402
from hookline.engine.send import send  # noqa: E402
from hookline.inbox import open_inbox  # noqa: E402
from tests.docs.conftest import Proc, clean_env, start  # noqa: E402
from tests.engine.test_scale_out import RECIPE_YAML, Sink, sink_server  # noqa: E402
from tests.stack import PG, pg, pg_available, prefect_on_postgres  # noqa: E402

SECRET = "whsec-scale-bench-0123456789"
RECIPES = ("relay-a", "relay-b")


async def statuses(settings: CoreSettings) -> Counter[str]:
    inbox = await open_inbox(settings)
    try:
        return Counter({k: v for k, v in (await inbox.counts()).items() if v})
    finally:
        await inbox.close()


def phase(
    home: Path,
    env: dict[str, str],
    sink: Sink,
    *,
    workers: int,
    events: int,
    kill: bool,
    worker_timeout: float,
) -> dict[str, Any]:
    from hookline import samples

    schema = f"hl_bench_{uuid.uuid4().hex[:8]}"
    settings = CoreSettings(home=home, database_url=f"{PG}/test?schema={schema}")
    env = {**env, "HOOKLINE_DATABASE_URL": str(settings.database_url)}
    procs: list[Proc] = []
    sink.effects.clear()

    def run(name: str, *args: str, **extra: str) -> Proc:
        procs.append(
            start(["hookline", *args], cwd=home, env={**env, **extra}, log=home / f"{name}.log")
        )
        return procs[-1]

    try:
        port = free_port()
        receiver = run("serve", "serve", "--host", "127.0.0.1", "--port", str(port))
        dispatcher = run(
            "dispatch", "dispatch", "--worker-timeout", str(worker_timeout), "--lease", "15"
        )
        ws = [
            run(
                f"worker{i}",
                "worker",
                "--limit",
                "8",
                "--poll",
                "0.2",
                "--heartbeat",
                "2",
                SCALE_WORKER=f"w{i}",
            )
            for i in range(workers)
        ]
        receiver.wait_http(f"http://127.0.0.1:{port}/healthz")
        dispatcher.wait_for("dispatcher running")
        for w in ws:
            w.wait_for("polling work pool")
        url = f"http://127.0.0.1:{port}/webhooks/solveforce"
        payloads = []
        for n in range(events):
            p = samples.load("service.status.changed")
            p["event_id"] = f"evt_bench_{n:04d}_{uuid.uuid4().hex[:6]}"
            payloads.append(p)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: send(p, url=url, secret=SECRET), payloads))
        assert all(a.status_code == 200 for a in answers)
        killed_at = None
        while True:
            counts = asyncio.run(statuses(settings))
            if kill and killed_at is None:
                with sink.lock:
                    busy = sink.working["w0"]
                if busy >= 2 and sum(1 for e in sink.effects if e["worker"] == "w0") >= 10:
                    ws[0].proc.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
            if counts.get("done", 0) == events:
                break
            if time.monotonic() - started > 600:
                raise SystemExit(f"not done after 600 s: {counts}")
            time.sleep(0.2)
        took = time.monotonic() - started
        keys = Counter(e["key"] for e in sink.effects)
        return {
            "workers": workers,
            "events": events,
            "runs": events * len(RECIPES),
            "seconds": took,
            "runs_per_s": events * len(RECIPES) / took,
            "recovery_s": (time.monotonic() - killed_at) if killed_at else None,
            "distinct_effects": len(keys),
            "repeated_effects": sum(1 for n in keys.values() if n > 1),
        }
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            p.stop()
        asyncio.run(pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=150)
    ap.add_argument("--work-ms", type=float, default=50.0)
    ap.add_argument("--worker-timeout", type=float, default=15.0)
    args = ap.parse_args()
    if not pg_available():
        raise SystemExit("PostgreSQL is not listening on 127.0.0.1:5432")
    with tempfile.TemporaryDirectory(prefix="hookline-scale-") as tmp:
        home = Path(tmp)
        (home / "recipes").mkdir()
        for name in RECIPES:
            (home / "recipes" / f"{name}.yaml").write_text(
                textwrap.dedent(RECIPE_YAML.format(name=name))
            )
        config = {
            "sources": {
                "solveforce": {"scheme": "solveforce", "secrets": ["${SOLVEFORCE_SECRET}"]}
            },
            "env": ["SCALE_WORKER", "SINK_URL"],
        }
        (home / "hookline.yaml").write_text(yaml.safe_dump(config))
        with sink_server(work_seconds=args.work_ms / 1000) as sink:
            env = clean_env(
                SOLVEFORCE_SECRET=SECRET,
                SINK_URL=sink.url,
                PREFECT_HOME=str(home / "prefect-home"),
                HOOKLINE_HOME=str(home / "hookline-home"),
            )
            with prefect_on_postgres(home, env) as (api, _server):
                env["PREFECT_API_URL"] = api
                results = [
                    phase(
                        home,
                        env,
                        sink,
                        workers=1,
                        events=args.events,
                        kill=False,
                        worker_timeout=args.worker_timeout,
                    ),
                    phase(
                        home,
                        env,
                        sink,
                        workers=2,
                        events=args.events,
                        kill=False,
                        worker_timeout=args.worker_timeout,
                    ),
                    phase(
                        home,
                        env,
                        sink,
                        workers=2,
                        events=args.events,
                        kill=True,
                        worker_timeout=args.worker_timeout,
                    ),
                ]
    for r in results:
        what = (
            "2 workers, one SIGKILLed"
            if r["recovery_s"] is not None
            else f"{r['workers']} worker(s)"
        )
        print(
            f"{what}: {r['runs']} runs in {r['seconds']:.1f}s = {r['runs_per_s']:.2f} runs/s; "
            f"effects {r['distinct_effects']}/{r['runs']} distinct, "
            f"{r['repeated_effects']} repeated"
            + (
                f"; all done {r['recovery_s']:.1f}s after the SIGKILL "
                f"(worker timeout {args.worker_timeout:g}s)"
                if r["recovery_s"] is not None
                else ""
            )
        )
    print(f"2 workers / 1 worker: {results[1]['runs_per_s'] / results[0]['runs_per_s']:.2f}")


if __name__ == "__main__":
    main()
