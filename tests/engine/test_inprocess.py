"""The embedded Prefect profile and what the worker shares between in-process runs."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from hookline.engine.prefect_server import PrefectServer
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness

pytestmark = pytest.mark.anyio


async def _write_storm(n: int) -> list[int]:
    """``n`` concurrent flow-run creates, each then driven Pending -> Running -> Completed,
    with the Prefect client's own retries off: the HTTP status of every failed call."""
    from prefect import flow, get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings
    from prefect.states import Completed, Pending, Running

    @flow(name="hookline-test-write-storm")
    def storm() -> None:  # never executed: only its runs' states are driven
        pass

    failures: list[int] = []
    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):
        async with get_client() as client:
            pool = WorkPoolCreate(name="write-storm", type="hookline-test")
            try:  # a pool of its own, so no test worker ever picks these runs up
                await client.create_work_pool(pool)
            except ObjectAlreadyExists:
                pass
            flow_id = await client.create_flow(storm)
            deployment_id = await client.create_deployment(
                flow_id, name="storm", work_pool_name="write-storm", entrypoint="x.py:storm"
            )

            async def one(i: int) -> None:
                try:
                    run = await client.create_flow_run_from_deployment(
                        deployment_id, idempotency_key=f"storm-{asyncio.get_running_loop()}-{i}"
                    )
                    for state in (Pending(), Running(), Completed()):
                        await client.set_flow_run_state(run.id, state)
                except PrefectHTTPStatusError as exc:
                    failures.append(exc.response.status_code)

            await asyncio.gather(*(one(i) for i in range(n)))
    return failures


async def test_embedded_server_queues_concurrent_writes_instead_of_answering_503(
    prefect_server: PrefectServer, prefect_api: str
) -> None:
    """A default SQLite Prefect answers 503 "database is locked" to overlapping writes
    (transactions that read before they write cannot wait for the lock); the embedded profile
    begins them IMMEDIATE, so they wait their turn (hookline/engine/prefect_serve.py)."""
    assert prefect_server.command()[:3] == [sys.executable, "-m", "hookline.engine.prefect_serve"]
    assert await _write_storm(40) == []


async def test_worker_builds_no_prefect_client_per_run(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each client Prefect builds costs a TLS context (~20 ms of CPU); the worker's runs share
    one pair (hookline/engine/prefect_internals.py)."""
    from prefect.client import orchestration

    await engine.run(sample(current_status="degraded"))  # the worker has set up its sharing
    built: list[str] = []
    for cls in (orchestration.PrefectClient, orchestration.SyncPrefectClient):
        original = cls.__init__

        def counting(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            built.append(type(self).__name__)
            __original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)

    entries = await asyncio.gather(
        *(engine.run(sample(current_status="degraded")) for _ in range(3))
    )

    assert [e.status for e in entries] == ["done"] * 3
    assert built == []


def test_the_embedded_task_run_recorder_writes_in_batches_a_second_apart() -> None:
    """Prefect's default batch of 1 made every task-run event (three per step) a write
    transaction of its own; the interval must be whole seconds: Prefect's recorder takes
    int() of it, and 0 flushes in a busy loop (hookline/engine/prefect_server.py)."""
    from hookline.engine.prefect_server import EMBEDDED_PROFILE

    prefix = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_"
    assert int(EMBEDDED_PROFILE[prefix + "BATCH_SIZE"]) > 1
    interval = float(EMBEDDED_PROFILE[prefix + "FLUSH_INTERVAL"])
    assert interval == int(interval) >= 1
