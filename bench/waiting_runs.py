"""What runs waiting in Prefect cost its server: the server CPU of the requests a Hookline
engine makes over and over (follow reads, the recovery pass's read, work-pool polls, creates),
with N Scheduled runs of the recipe deployment waiting in the work pool.

    .venv/bin/python bench/waiting_runs.py [--waiting 10,200,1000]

One embedded-profile Prefect server (`hookline up`'s, on SQLite) in a subprocess; its CPU
(utime + stime from /proc) is read around each request, repeated, and printed as ms per
request, for each N. The reads are the engine's own (`hookline.engine.follow.read_runs`,
`hookline.engine.worker._scheduled_runs`) over the ids of every waiting run, as a dispatcher
that keeps them all in flight does. The baseline is the smallest N, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from bench.sustained import cpu_seconds, tree  # noqa: E402
from hookline.engine.deployment import WORK_POOL, ensure_deployment  # noqa: E402
from hookline.engine.follow import _FINAL, _LIVE, read_runs  # noqa: E402
from hookline.engine.prefect_server import PrefectServer  # noqa: E402
from hookline.engine.worker import _scheduled_runs  # noqa: E402


async def measure(api_url: str, pids: list[int], counts: list[int]) -> dict[int, dict[str, float]]:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    results: dict[int, dict[str, float]] = {}
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            deployment = await ensure_deployment(client)
            ids: list[UUID] = []
            serial = 0

            async def create() -> Any:
                nonlocal serial
                serial += 1
                run = await client.create_flow_run_from_deployment(
                    deployment,
                    parameters={"entry_id": serial, "source": "bench", "event_id": f"e{serial}"},
                    idempotency_key=f"bench-waiting-{serial}",
                )
                ids.append(run.id)
                return run

            async def server_ms(request: Callable[[], Awaitable[Any]], reps: int) -> float:
                await request()  # warm
                before = cpu_seconds(pids)
                for _ in range(reps):
                    await request()
                return 1000 * (cpu_seconds(pids) - before) / reps

            sem = asyncio.Semaphore(4)

            async def one() -> None:
                async with sem:
                    await create()

            for n in counts:
                await asyncio.gather(*(one() for _ in range(max(0, n - len(ids)))))
                waiting = list(ids)
                results[n] = {
                    "follow read (ended runs among all ids)": await server_ms(
                        lambda w=waiting: read_runs(client, w, _FINAL), 10
                    ),
                    "recovery read (live runs, whole)": await server_ms(
                        lambda w=waiting: read_runs(client, w, _LIVE), 3
                    ),
                    "work-pool poll, limit 1": await server_ms(
                        lambda: _scheduled_runs(client, WORK_POOL, limit=1), 10
                    ),
                    "work-pool poll, limit 32": await server_ms(
                        lambda: _scheduled_runs(client, WORK_POOL, limit=32), 10
                    ),
                    "create from the deployment": await server_ms(create, 10),
                }
                print(f"{len(waiting)} runs waiting", flush=True)
                for name, ms in results[n].items():
                    print(f"  {name:42s} {ms:7.1f} ms server CPU", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", default="10,200,1000", help="Runs waiting, ascending.")
    args = parser.parse_args()
    counts = sorted(int(x) for x in args.waiting.split(","))
    home = Path(tempfile.mkdtemp(prefix="hookline-bench-waiting-"))
    server = PrefectServer(home)
    server.start()
    try:
        assert server.proc is not None
        results = asyncio.run(measure(server.api_url, tree(server.proc.pid), counts))
    finally:
        server.stop()
    base = results[counts[0]]
    print(f"\nratio to {counts[0]} waiting (1 = no growth):")
    for n in counts[1:]:
        ratios = ", ".join(
            f"{k.split(' (')[0]} {results[n][k] / max(v, 0.1):.1f}x" for k, v in base.items()
        )
        print(f"  {n}: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
