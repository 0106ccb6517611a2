"""`hookline up`: the whole of Hookline on one machine, in one command.

Starts the embedded Prefect server (SQLite under HOOKLINE_HOME, services tuned for Hookline;
skipped when PREFECT_API_URL points at a server already), then runs the receiver, the
dispatcher and an in-process worker in this process. A stored event wakes the dispatcher at
once, and the dispatcher hands each new flow run straight to the local worker, so a signed
event reaches its first step without waiting for a poll. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import uvicorn

from hookline.config import HooklineConfig, get_settings, private_dir, private_file
from hookline.engine.errors import EngineError
from hookline.engine.prefect_server import PrefectServer, port_is_free
from hookline.errors import HooklineError
from hookline.recipes.matcher import RecipeSet


class AlreadyRunningError(EngineError):
    """Another `hookline up` owns this HOOKLINE_HOME."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def up_state(home: Path) -> dict[str, Any]:
    """What a running `hookline up` wrote to HOOKLINE_HOME/up.json (receiver_url,
    prefect_ui_url, prefect_api_url, pid); empty if there is none. It is removed when `up`
    stops, so it names the Prefect server `up` runs (or ran, if it was killed)."""
    try:
        state = json.loads((home / "up.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def claim_home(home: Path, info: dict[str, Any]) -> Path:
    """Write HOOKLINE_HOME/up.json, or raise if a live `hookline up` already wrote it."""
    private_dir(home)
    state = home / "up.json"
    if state.exists():
        old = up_state(home)
        pid = old.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            raise AlreadyRunningError(
                f"hookline up is already running here (pid {pid}): receiver "
                f"{old.get('receiver_url')}, Prefect UI {old.get('prefect_ui_url')}. "
                f"Stop it with Ctrl-C in its terminal (or kill {pid}), or use another "
                "HOOKLINE_HOME."
            )
    state.write_text(json.dumps({**info, "pid": os.getpid()}, indent=2))
    return state


# The signing secrets `hookline up` makes up when unset, so the local stack's sources are on:
# variable -> (file under HOOKLINE_HOME, how a new one is made). Both are above the 16-byte
# minimum the receiver enforces for a signing key; Slack's own secrets are 32 hex digits.
DEV_SECRETS: dict[str, tuple[str, Callable[[], str]]] = {
    "SOLVEFORCE_WEBHOOK_SECRET": ("dev-secret", lambda: "whsec_dev_" + secrets.token_hex(16)),
    "SLACK_SIGNING_SECRET": ("dev-slack-secret", lambda: secrets.token_hex(16)),
}


def dev_secret(home: Path, variable: str = "SOLVEFORCE_WEBHOOK_SECRET") -> str:
    """``variable`` (a key of `DEV_SECRETS`) from the environment, else a development secret
    kept in HOOKLINE_HOME (made once), which is then put in the environment."""
    if os.environ.get(variable):
        return os.environ[variable]
    name, make = DEV_SECRETS[variable]
    path = private_dir(home) / name
    if path.exists():
        private_file(path)  # tightened if an older version left it readable by others
    else:
        private_file(path, make() + "\n")
    secret = path.read_text().strip()
    os.environ[variable] = secret
    return secret


class _NotifyingInbox:
    """The receiver's view of the inbox: every stored event wakes the dispatcher."""

    def __init__(self, inbox: Any, notify: Callable[[], None]) -> None:
        self._inbox = inbox
        self._notify = notify

    async def put(self, *args: Any, **kwargs: Any) -> Any:
        result = await self._inbox.put(*args, **kwargs)
        self._notify()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inbox, name)


#: Recipe runs `hookline up`'s worker executes at once (its ``--limit``); see `_serve`.
UP_LIMIT = 6


def run_up(
    *, host: str, port: int, prefect_port: int, preview: bool, limit: int = UP_LIMIT
) -> None:
    from hookline.engine.prefect_internals import check_prefect

    check_prefect()  # before the Prefect server starts: the internals Hookline uses
    settings = get_settings()
    home = settings.home.resolve()
    receiver_url = f"http://{host}:{port}"
    external = os.environ.get("PREFECT_API_URL")
    server: PrefectServer | None = None
    if external:
        api_url = external
        ui_url = api_url.removesuffix("/").removesuffix("/api")
    else:
        server = PrefectServer(home / "prefect", host="127.0.0.1", port=prefect_port)
        api_url, ui_url = server.api_url, server.ui_url
    claim_home(
        home, {"receiver_url": receiver_url, "prefect_ui_url": ui_url, "prefect_api_url": api_url}
    )
    try:
        if not port_is_free(port, host):
            raise HooklineError(f"port {port} on {host} is in use; pass --port")
        secret = dev_secret(home)
        slack_secret = dev_secret(home, "SLACK_SIGNING_SECRET")
        if server is not None:
            if not port_is_free(prefect_port):
                raise HooklineError(
                    f"port {prefect_port} is in use (another Prefect server?); pass "
                    "--prefect-port or set PREFECT_API_URL to use that server"
                )
            click.echo(f"starting Prefect server (SQLite under {server.home}) ...")
            server.start()
        os.environ["PREFECT_API_URL"] = api_url
        os.environ.setdefault("PREFECT_UI_URL", ui_url)
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_UI_URL: ui_url}):
            asyncio.run(
                _serve(host, port, receiver_url, ui_url, secret, slack_secret, preview, limit)
            )
    finally:
        if server is not None:
            click.echo("stopping Prefect server ...")
            server.stop()
        (home / "up.json").unlink(missing_ok=True)


def _print_banner(
    receiver_url: str,
    ui_url: str,
    recipes: RecipeSet,
    secret: str,
    preview: bool,
    config: HooklineConfig | None = None,
    slack_secret: str | None = None,
) -> None:
    """What `hookline up` prints once its receiver listens: where things are, what to try."""
    from hookline.connectors import unconfigured

    previews = unconfigured(config)
    click.echo("")
    click.echo(f"  Hookline receiver  {receiver_url}/webhooks/solveforce")
    click.echo(f"  Prefect UI         {ui_url}")
    for n, line in enumerate(_recipe_lines(recipes)):
        click.echo(f"  {'recipes' if n == 0 else '':<19}{line}")
    click.echo(f"  signing secret     {secret[:10]}... (SOLVEFORCE_WEBHOOK_SECRET)")
    if slack_secret is not None and (config is None or "slack" in config.sources):
        click.echo(f"  Slack source       {receiver_url}/webhooks/slack")
        click.echo(f"  Slack secret       {slack_secret[:10]}... (SLACK_SIGNING_SECRET)")
    if previews and preview:
        click.echo(
            f"  PREVIEW MODE for   {', '.join(previews)}: not configured, so their steps "
            "record what they would send (see each run's artifact); "
            "docs/connectors.md says how to configure them"
        )
    click.echo("")
    click.echo(
        "  next, in another terminal:  .venv/bin/hookline send service.status.changed "
        "--set data.current_status=outage"
    )
    click.echo("  then:                       .venv/bin/hookline events")
    if slack_secret is not None and (config is None or "slack" in config.sources):
        click.echo(
            "  on-call's Acknowledge:      .venv/bin/hookline click outage.acknowledge "
            "svc_voice_001"
        )
    click.echo("  Ctrl-C stops everything.")
    click.echo("")


def _recipe_lines(recipes: RecipeSet, limit: int = 20) -> list[str]:
    """The banner's recipes: count and fingerprint (as `hookline check` prints it), then the
    names when there are not too many."""
    head = f"{len(recipes)} loaded, fingerprint {recipes.short_fingerprint}"
    if len(recipes) > limit:
        return [head + " (`hookline check` lists them)"]
    return [head, *textwrap.wrap(", ".join(r.name for r in recipes), 66, break_on_hyphens=False)]


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: `hookline up` stops all its parts together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(
    host: str,
    port: int,
    receiver_url: str,
    ui_url: str,
    secret: str,
    slack_secret: str,
    preview: bool,
    limit: int = UP_LIMIT,
) -> None:
    from hookline.engine.app import configure_process_logging, freeze_startup_heap, open_engine
    from hookline.engine.metrics import EngineCollector
    from hookline.receiver.app import add_metrics, create_app

    configure_process_logging()
    stop = asyncio.Event()
    async with open_engine(preview=preview) as eng:
        # `limit` runs at once (6: a run mostly waits, for Prefect's server or a vendor; with
        # 50 ms vendor calls bench/sustained.py measured 0.72-0.77 of bare Prefect flows at 4,
        # 0.83 at 6, 0.88-0.99 at 8, but at 8 a new run's first step waits behind the others:
        # p99 1.3 s at 80 % load, 0.7-0.9 s at 4 and 6) and 4 creates at once (the best of
        # 1/2/4 with bench/e2e.py on 2 cores, on the embedded SQLite server (its transactions
        # queue for the write lock, see prefect_serve.py, so no write gate is needed) and on
        # PostgreSQL alike).
        worker = eng.worker(poll_seconds=2.0, limit=limit)
        dispatcher = eng.dispatcher(worker, concurrency=4)
        app = create_app(
            eng.config,
            inbox=_NotifyingInbox(eng.inbox, dispatcher.notify),  # type: ignore[arg-type]
            checks={"dispatch": dispatcher.readiness},
        )
        add_metrics(app, EngineCollector(dispatcher, worker))
        server = _QuietServer(
            uvicorn.Config(
                app, host=host, port=port, log_level="warning", lifespan="on", proxy_headers=False
            )
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def serve_http() -> None:
            await server.serve()
            stop.set()

        async def stopper() -> None:
            await stop.wait()
            server.should_exit = True

        jobs = asyncio.gather(
            serve_http(), stopper(), dispatcher.run(stop), worker.run(stop), eng.recipes.watch(stop)
        )
        # the banner tells users to send an event: print it once the receiver listens
        while not server.started and not jobs.done() and not stop.is_set():
            await asyncio.sleep(0.05)
        if server.started:
            _print_banner(
                receiver_url,
                ui_url,
                eng.recipes.current,
                secret,
                preview,
                eng.config,
                slack_secret=slack_secret,
            )
            freeze_startup_heap()
        await jobs
