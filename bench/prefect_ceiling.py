"""Prefect's own ceiling on this machine: bare async flow runs with N trivial tasks, created
from a deployment and executed in one long-lived process — the same path `hookline worker`
uses, minus Hookline. bench/e2e.py runs it next to Hookline on the same server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.flow_engine import run_flow_async
from prefect.states import Pending
from prefect.utilities.engine import propose_state


@task(persist_result=False, cache_policy=NO_CACHE)
async def trivial(i: int) -> int:
    return i


@flow(name="bench-bare", persist_result=False, validate_parameters=False)
async def bare(n_tasks: int) -> None:
    for i in range(n_tasks):
        await trivial.with_options(name=f"t{i}", task_run_name=f"t{i}")(i)


async def ceiling(
    client: Any, *, runs: int, n_tasks: int, concurrency: int, shared: bool = False
) -> dict[str, float]:
    """Create ``runs`` flow runs and execute them in-process, ``concurrency`` at a time.

    ``shared``: with what `hookline worker` shares between runs (`shared_run_context` in
    hookline/engine/prefect_internals.py: one client pair, one suspension observer, a local
    result storage); otherwise each run
    does what Prefect does for a run on its own."""
    return await run_bare(
        client,
        bare,
        [{"n_tasks": n_tasks}] * runs,
        concurrency=concurrency,
        shared=shared,
        entrypoint="bench/prefect_ceiling.py:bare",
    )


async def run_bare(
    client: Any,
    flow_: Any,
    parameters: list[dict[str, Any]],
    *,
    concurrency: int,
    shared: bool,
    entrypoint: str,
) -> dict[str, float]:
    """Create one run of ``flow_`` per parameter set from a deployment and execute them
    in-process, ``concurrency`` at a time (``shared``: as in `ceiling`)."""
    if not shared:
        return await _ceiling(client, parameters, concurrency, flow_, entrypoint)
    import tempfile
    from pathlib import Path

    from hookline.engine.prefect_internals import local_result_storage, shared_run_context

    async with shared_run_context():
        storage = local_result_storage(Path(tempfile.gettempdir()))
        return await _ceiling(
            client, parameters, concurrency, flow_.with_options(result_storage=storage), entrypoint
        )


async def _ceiling(
    client: Any, parameters: list[dict[str, Any]], concurrency: int, flow_: Any, entrypoint: str
) -> dict[str, float]:
    runs = len(parameters)
    try:
        await client.create_work_pool(WorkPoolCreate(name="bench-bare", type="hookline"))
    except ObjectAlreadyExists:
        pass
    fid = await client.create_flow(flow_)
    did = await client.create_deployment(
        fid, name="bench", work_pool_name="bench-bare", entrypoint=entrypoint
    )
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    stamp = time.time()

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            fr = await client.create_flow_run_from_deployment(
                did, parameters=parameters[i], idempotency_key=f"bare-{stamp}-{i}"
            )
            await propose_state(client, Pending(), flow_run_id=fr.id)
            await run_flow_async(flow_, flow_run=fr, parameters=parameters[i], return_type="state")
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(runs)))
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "runs": runs,
        "wall_s": wall,
        "runs_per_s": runs / wall,
        "p50_s": latencies[len(latencies) // 2],
        "p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }
