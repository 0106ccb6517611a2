"""Helpers for tests that run Hookline scaled out on the local PostgreSQL (127.0.0.1:5432, trust
auth, user postgres): a SQL one-liner and a Prefect server on a fresh, throwaway database."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hookline.engine.prefect_server import free_port
from tests.docs.conftest import Proc, start

PG = "postgresql://postgres@127.0.0.1:5432"


def pg_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


async def pg(sql: str, db: str = "test") -> Any:
    """The first value ``sql`` returns in database ``db``."""
    import asyncpg

    conn = await asyncpg.connect(f"{PG}/{db}")
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def prefect_on_postgres(
    home: Path, env: dict[str, str], *, database: str | None = None
) -> Iterator[tuple[str, Proc]]:
    """`hookline prefect-server` (Prefect's server, Hookline's profile) on a new PostgreSQL
    database (``database``, else a random name), dropped afterwards;
    yields its PREFECT_API_URL and process (log: ``home/prefect.log``)."""
    db = database or f"hl_prefect_{uuid.uuid4().hex[:8]}"
    asyncio.run(pg(f'CREATE DATABASE "{db}"', db="postgres"))
    port = free_port()
    server_env = {
        **env,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    # the production profile docs/operations.md recommends (Prefect's unused services off)
    argv = ["hookline", "prefect-server", "--host", "127.0.0.1", "--port", str(port)]
    proc: Proc | None = None
    try:
        proc = start(argv, cwd=home, env=server_env, log=home / "prefect.log")
        api = f"http://127.0.0.1:{port}/api"
        proc.wait_http(f"{api}/health", timeout=90)
        yield api, proc
    finally:
        if proc is not None:
            if proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGTERM)
            proc.stop()
        asyncio.run(pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', db="postgres"))
