"""Session-wide fixtures: one real Prefect server for every test that needs one.

The server is the embedded profile `hookline up` starts (hookline.engine.prefect_server), so the
tests exercise what ships. It starts lazily — only when a test asks for `prefect_api` — and once
per session (about 10 s).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from hookline.engine.prefect_server import PrefectServer

    home: Path = tmp_path_factory.mktemp("prefect-home")
    server = PrefectServer(home)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prefect_api(prefect_server: object) -> Iterator[str]:
    """PREFECT_API_URL of the session's server, set for this process and its children."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url: str = prefect_server.api_url  # type: ignore[attr-defined]
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # send the last run logs before the server goes away
    if old is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = old
