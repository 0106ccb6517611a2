"""`hookline prefect-server` on PostgreSQL keeps its database connections under load."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.docs.conftest import clean_env
from tests.stack import pg, pg_available, prefect_on_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.mark.skipif(not pg_available(), reason="needs PostgreSQL on 127.0.0.1:5432")
def test_concurrent_api_calls_reuse_the_servers_postgres_connections(tmp_path: Path) -> None:
    # Prefect's default pool keeps 5 connections and closes each overflow connection as soon
    # as it is returned: under a burst (a worker's runs, the dispatcher's creates and follow
    # reads) that was 1.2 new PostgreSQL sessions, each a fork and a login, per recipe run
    # (bench/README.md, "PostgreSQL: the server's connection pool"). The profile keeps 20 open.
    database = f"hl_prefect_pool_{uuid.uuid4().hex[:8]}"
    env = clean_env(PREFECT_HOME=str(tmp_path / "prefect-home"))
    with prefect_on_postgres(tmp_path, env, database=database) as (api, _server):

        async def burst() -> None:
            async with httpx.AsyncClient(base_url=api, timeout=30) as client:
                for _ in range(10):  # 10 rounds of 16 requests at once, each using the database
                    answers = await asyncio.gather(
                        *(client.post("/flow_runs/filter", json={"limit": 5}) for _ in range(16))
                    )
                    assert {a.status_code for a in answers} == {200}

        sessions = f"SELECT sessions FROM pg_stat_database WHERE datname = '{database}'"
        before = asyncio.run(pg(sessions, db="postgres"))
        asyncio.run(burst())
        time.sleep(1.5)  # backends report their statistics within a second
        opened = asyncio.run(pg(sessions, db="postgres")) - before
    # with Prefect's default pool: 5 + 11 per round, over 100
    assert opened <= 25, f"{opened} PostgreSQL sessions opened for 160 API calls"
