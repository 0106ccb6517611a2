"""Prefect's server stops mid-stream and comes back: every accepted event completes, none is
lost, none runs twice."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookline.config import HooklineConfig
from hookline.engine.errors import PrefectUnavailable
from hookline.engine.prefect_server import PrefectServer
from hookline.retry import RetryPolicy
from tests.engine.conftest import sample
from tests.engine.harness import running_engine
from tests.waiting import wait_until
from vendor_fakes import FakeVendors

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[PrefectServer]:
    server = PrefectServer(tmp_path / "prefect")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_prefect_down_mid_stream_loses_and_duplicates_nothing(
    own_server: PrefectServer, tmp_path: Path, recipes_dir: Path, fakes: FakeVendors
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: own_server.api_url}):
        async with running_engine(
            own_server.api_url,
            tmp_path / "home",
            str(recipes_dir),
            HooklineConfig(env=[]),
            {**os.environ, **fakes.env},
        ) as eng:
            eng.dispatcher.unavailable_retry = RetryPolicy(
                attempts=None, backoff=1.0, max_delay=2.0, jitter=0.0
            )
            ids = [await eng.put(sample(current_status="degraded")) for _ in range(6)]
            await wait_until(lambda: fakes.slack.messages, what="a first run's alert")
            await asyncio.to_thread(own_server.stop)
            ids += [await eng.put(sample(current_status="degraded")) for _ in range(6)]

            async def dispatcher_sees_prefect_down() -> bool:
                try:
                    await eng.dispatcher.readiness()
                except PrefectUnavailable:
                    return True
                return False

            await wait_until(dispatcher_sees_prefect_down, what="the dispatcher noticing")
            await asyncio.to_thread(own_server.start)
            entries = [await eng.wait_final(i, timeout=120) for i in ids]

    assert [e.status for e in entries] == ["done"] * 12, [e.last_error for e in entries]
    # exactly one Slack alert per event: no step ran twice
    texts = [m["text"] for m in fakes.slack.messages]
    assert len(texts) == 12
    assert all(len(e.flow_runs) == 1 for e in entries)
