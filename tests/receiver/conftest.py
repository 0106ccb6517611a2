"""Fixtures for the receiver and inbox tests: apps in-process, real uvicorn servers, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hookline.config import CoreSettings, HooklineConfig
from hookline.engine.prefect_server import free_port
from hookline.inbox import Inbox, PostgresInbox, SQLiteInbox
from hookline.receiver.app import create_app
from hookline.receiver.verify import sign_solveforce

SECRET = "whsec-test-solveforce"
OLD_SECRET = "whsec-test-solveforce-old"
PG_DSN = os.environ.get("HOOKLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ENV = {"SOLVEFORCE_WEBHOOK_SECRET": SECRET, "SOLVEFORCE_WEBHOOK_SECRET_OLD": OLD_SECRET}

SOURCES: dict[str, Any] = {
    "solveforce": {
        "scheme": "solveforce",
        "secrets": ["${SOLVEFORCE_WEBHOOK_SECRET}", "${SOLVEFORCE_WEBHOOK_SECRET_OLD:-}"],
    },
    "limited": {
        "scheme": "solveforce",
        "secrets": [SECRET],
        "rate_limit": {"per_second": 1, "burst": 2},
    },
    "office": {"scheme": "solveforce", "secrets": [SECRET], "allow_ips": ["10.0.0.0/8"]},
    "github": {"scheme": "github", "secrets": ["It's a Secret to Everybody"]},
    "slack": {"scheme": "slack", "secrets": ["8f742231b10e8888abcd99yyyzzz85a5"]},
    "stripe": {"scheme": "stripe", "secrets": ["whsec_stripe_test"]},
    "standard": {"scheme": "standard", "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]},
    "small": {"scheme": "solveforce", "secrets": [SECRET], "max_body_bytes": 200},
}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def event(event_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A SolveForce envelope like the spec's examples."""
    out: dict[str, Any] = {
        "event_type": "service.status.changed",
        "event_id": event_id or f"evt_{uuid.uuid4().hex[:12]}",
        "timestamp": "2024-01-15T10:30:00Z",
        "data": {"service_id": "svc_voice_001", "current_status": "degraded"},
        "account": {"id": "acc_123456", "name": "Acme Corporation"},
    }
    out.update(overrides)
    return out


def signed(body: bytes, secret: str = SECRET, **extra: str) -> dict[str, str]:
    """Headers of a correctly signed SolveForce request."""
    return {
        "content-type": "application/json",
        "x-solveforce-signature": sign_solveforce(body, secret),
        **extra,
    }


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def make_config(tmp_path: Path, **receiver: Any) -> HooklineConfig:
    cfg = HooklineConfig(sources=SOURCES, receiver=receiver)
    cfg.path = tmp_path / "hookline.yaml"
    return cfg


@dataclass
class AppHarness:
    app: Any
    client: httpx.AsyncClient
    inbox: Inbox
    now: list[float] = field(default_factory=lambda: [time.time()])
    mono: list[float] = field(default_factory=lambda: [1000.0])


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[AppHarness]:
    """The receiver in-process (httpx ASGI transport) over a SQLite inbox in tmp_path."""
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3", writer="loop")  # as hookline serve
    await inbox.open()
    now = [time.time()]
    mono = [1000.0]
    app = create_app(
        make_config(tmp_path),
        settings=CoreSettings(home=tmp_path),
        inbox=inbox,
        environ=ENV,
        clock=lambda: now[0],
        monotonic=lambda: mono[0],
    )
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        yield AppHarness(app, client, inbox, now, mono)
    await inbox.close()


# -- PostgreSQL ------------------------------------------------------------------------------


def _pg_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema name for this test, dropped afterwards."""
    if not _pg_available():
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432")
    schema = f"hl_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield schema
    asyncio.run(_drop_schema(schema))


@pytest.fixture(
    params=["sqlite", "sqlite-thread", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def any_inbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Inbox]:
    """Each backend in turn, opened, with a clock the test can move."""
    clock = [1_700_000_000.0]
    inbox: Inbox
    if request.param.startswith("sqlite"):
        writer = "thread" if request.param == "sqlite-thread" else "loop"
        inbox = SQLiteInbox(tmp_path / "inbox.sqlite3", writer=writer, clock=lambda: clock[0])
    else:
        schema = request.getfixturevalue("pg_schema")
        inbox = PostgresInbox(PG_DSN, schema=schema, clock=lambda: clock[0])
    await inbox.open()
    inbox.test_clock = clock  # type: ignore[attr-defined,union-attr]
    yield inbox
    await inbox.close()


# -- real uvicorn ------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    home: Path
    config: Path
    env: dict[str, str]
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(
    home: Path, config: Path, env: dict[str, str] | None = None, port: int | None = None
) -> Server:
    """``python -m hookline serve`` on a free port; returns once /healthz answers."""
    port = port or free_port()
    log = home / f"server-{port}.log"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HOOKLINE_", "PREFECT_API"))},
        **ENV,
        "HOOKLINE_HOME": str(home),
        "HOOKLINE_CONFIG": str(config),
        **(env or {}),
    }
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookline", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Server(url, proc, home, config, full_env, log)
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"receiver did not start: {log.read_text()}")


def write_config(path: Path, **receiver: Any) -> Path:
    path.write_text(yaml.safe_dump({"sources": SOURCES, "receiver": receiver}))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real receiver per test module."""
    home = tmp_path_factory.mktemp("receiver")
    srv = start_server(home, write_config(home / "hookline.yaml", store_timeout_seconds=1))
    yield srv
    srv.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start receivers for one test (stopped afterwards)."""
    started: list[Server] = []

    def factory(**kw: Any) -> Server:
        kw.setdefault("home", tmp_path)
        kw.setdefault("config", write_config(tmp_path / "hookline.yaml"))
        srv = start_server(**kw)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop(signal.SIGKILL)
