"""Issue 11, item 16 (engine side): failures the dispatcher and worker used to swallow are
narrowed and logged, so a bug does not pass for an outage or silently turn a feature off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from hookline.engine import worker as worker_module
from tests.engine.harness import EngineHarness

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def test_an_unparsable_stored_event_fails_and_says_why_in_the_log(
    engine: EngineHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: any exception from Event.from_body marked the entry failed and logged nothing."""
    caplog.set_level(logging.ERROR, logger="hookline.dispatcher")
    _, entry_id = await engine.inbox.put(
        "solveforce", "evt_not_json", "service.status.changed", b"{not json", {}, None
    )
    engine.dispatcher.notify()
    entry = await engine.wait_final(entry_id)
    assert entry.status == "failed"
    assert "cannot parse stored event" in (entry.last_error or "")
    logged = [r for r in caplog.records if "evt_not_json" in r.getMessage()]
    assert logged and logged[0].levelno == logging.ERROR, caplog.text
    assert "not JSON" in logged[0].getMessage()


async def test_prefect_internals_that_moved_are_reported_loudly(
    engine: EngineHarness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: an ImportError of a private Prefect module while setting up the shared clients
    was logged at DEBUG, and Cancel from the UI then silently stopped working."""

    @contextlib.asynccontextmanager
    async def moved() -> AsyncIterator[None]:
        raise ImportError("cannot import name 'FlowRunSuspendingObserver'")
        yield  # pragma: no cover

    monkeypatch.setattr(worker_module, "shared_run_context", moved)
    caplog.set_level(logging.ERROR, logger="hookline.worker")
    w = worker_module.Worker(engine.client, poll_seconds=0.1, inbox=engine.inbox)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    for _ in range(50):
        if any("cannot share Prefect clients" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    [record] = [r for r in caplog.records if "cannot share Prefect clients" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "pinned in pyproject.toml" in record.getMessage()
