"""The embedded Prefect server `hookline up` starts, configured for Hookline's workload.

Prefect's server runs a dozen background services; on SQLite every one of them competes for
the single database write lock with the flow-run creates and state changes Hookline needs, and
each lost race is a 503 "database is locked" that the Prefect client answers with a 2^n s
backoff. The embedded profile keeps only what recipe runs use (see docs/architecture.md and
bench/README.md for the measurements):

- kept: the task-run recorder (task runs in the UI are recorded from events), in batches: by
  default it wrote every task-run event in a transaction of its own, three per step; it now
  writes what came in each second in one (a step shows in the UI up to 1 s later; the server's
  CPU per paced run fell by a fifth, bench/README.md);
- off: scheduler and late-runs (Hookline never schedules; runs are picked up in milliseconds),
  triggers/automations, pause expirations, repossessor, database vacuum, and the three
  periodic writers that collided most with flow-run creates: the event persister (the UI's
  Events page stays empty; runs, task runs, logs and artifacts are unaffected), the foreman
  (marks silent workers offline) and cancellation cleanup (Hookline runs in-process, so there
  is no infrastructure to clean up).

Its transactions also begin IMMEDIATE, so overlapping writes wait for the lock instead of
failing into a 503 (see prefect_serve.py).

How much each of these buys is measured by bench/prefect_ceiling.py and bench/e2e.py; the
figures are in bench/README.md. For Prefect's full feature set, run a PostgreSQL-backed
server with its defaults and point PREFECT_API_URL at it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from hookline.engine.errors import EngineError
from hookline.engine.prefect_serve import IMMEDIATE_ENV

EMBEDDED_PROFILE: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_CLEANUP_RECONCILER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_ENABLED": "false",
    # PostgreSQL: keep a connection per request in flight. Prefect's default pool (5, plus 10
    # overflow connections closed as soon as they are returned) opened 1.2 new PostgreSQL
    # sessions per recipe run under a burst, each a fork and a login; 20 kept open: 16 in
    # the whole burst, and 5.25 -> 6.32 runs/s (bench/sustained.py; bench/README.md).
    # SQLite ignores it.
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
    # SQLite: wait for the write lock instead of failing fast into a client backoff
    "PREFECT_SERVER_DATABASE_TIMEOUT": "30",
    "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30",
    # ... including transactions that read before they write (see prefect_serve.py)
    IMMEDIATE_ENV: "1",
    # task-run events written in one transaction a second, not one each (Prefect's default
    # batch is 1). The interval is whole seconds: Prefect truncates it with int(), and 0
    # would flush in a busy loop
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


class PrefectServerError(EngineError):
    """The embedded Prefect server did not start; the message points at its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now (TIME_WAIT leftovers do not count,
    as for uvicorn, which binds with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_healthy(
    api_url: str,
    *,
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Block until ``GET {api_url}/health`` answers, or raise PrefectServerError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PrefectServerError(
                f"Prefect server exited with code {proc.returncode}; see {log_path}"
            )
        try:
            if httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise PrefectServerError(f"Prefect server not healthy after {timeout:.0f}s; see {log_path}")


class PrefectServer:
    """A `prefect server start` subprocess with its own PREFECT_HOME."""

    def __init__(
        self,
        home: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        database_url: str | None = None,
        profile: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.database_url = database_url
        self.profile = dict(EMBEDDED_PROFILE if profile is None else profile)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / "prefect-server.log"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PREFECT_API_URL", None)
        env.update(self.profile)
        env["PREFECT_HOME"] = str(self.home)
        env["PREFECT_SERVER_UI_API_URL"] = self.api_url
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        return env

    def command(self) -> list[str]:
        """`prefect server start`, through `prefect_serve` when the profile asks for it."""
        if self.profile.get(IMMEDIATE_ENV) == "1":
            prefect = [sys.executable, "-m", "hookline.engine.prefect_serve"]
        else:
            prefect = [shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"]
        return [*prefect, "server", "start", "--host", self.host, "--port", str(self.port)]

    def start(self, *, timeout: float = 90.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            self.command(),
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        try:
            wait_healthy(self.api_url, timeout=timeout, proc=self.proc, log_path=self.log_path)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> PrefectServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
