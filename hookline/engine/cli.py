"""Engine commands: worker, dispatch, up, send, events, replay."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from hookline.cli import CommandError
from hookline.config import get_settings
from hookline.engine.app import (
    Engine,
    configure_process_logging,
    freeze_startup_heap,
    open_engine,
    stop_on_signals,
)
from hookline.errors import HooklineError
from hookline.inbox import SCHEDULED, STATUSES

T = TypeVar("T")


def _run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``; a `HooklineError` ends the command with its message."""
    try:
        return asyncio.run(main)
    except HooklineError as exc:
        raise CommandError(str(exc)) from None


def _run_engine(jobs: Callable[[Engine, asyncio.Event], list[Coroutine[Any, Any, None]]]) -> None:
    """An engine process (`worker`, `dispatch`): ``jobs`` and the recipe reloader run until
    SIGINT or SIGTERM."""
    configure_process_logging()

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        async with open_engine() as eng:
            running = jobs(eng, stop)
            freeze_startup_heap()
            await asyncio.gather(*running, eng.recipes.watch(stop))

    _run(main())


def _dispatcher_options(worker: bool) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The dispatcher's options, for `hookline dispatch` and `hookline worker --dispatch`
    (where they apply to the worker's own dispatcher)."""
    only = " Only with --dispatch." if worker else ""
    options = [
        click.option(
            "--concurrency",
            default=4,
            show_default=True,
            help="Flow-run creates at once (a plain SQLite-backed Prefect server: 1)." + only,
        ),
        click.option(
            "--worker-timeout",
            default=60.0,
            show_default=True,
            help="Seconds without a heartbeat after which a worker is dead and its runs are "
            "recovered (crashed and sent again, or scheduled again)." + only,
        ),
        click.option(
            "--lease",
            default=60.0,
            show_default=True,
            help="Seconds a claimed event stays with this dispatcher: if it dies, another "
            "takes the event over after this long." + only,
        ),
        click.option(
            "--max-in-flight",
            type=click.IntRange(min=1),
            default=1000,
            show_default=True,
            help="Events in Prefect at once (their runs Scheduled to Running); in a storm the "
            "rest wait in the inbox, pending. Keep it well above the workers' total --limit."
            + only,
        ),
    ]

    def apply(f: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


@click.command()
@click.option("--limit", default=8, show_default=True, help="Recipe runs executed at once.")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between work-pool polls.")
@click.option("--work-pool", default="hookline", show_default=True)
@click.option(
    "--heartbeat",
    default=10.0,
    show_default=True,
    help="Seconds between heartbeats to the work pool (dispatchers recover the runs of a "
    "worker silent for their --worker-timeout).",
)
@click.option(
    "--dispatch/--no-dispatch",
    default=False,
    show_default=True,
    help="Also run a dispatcher in this process: it hands the runs it creates to this worker "
    "(the fastest topology; any number of such processes may share a PostgreSQL inbox).",
)
@_dispatcher_options(worker=True)
def worker(
    limit: int, poll: float, work_pool: str, heartbeat: float, dispatch: bool, **options: Any
) -> None:
    """Execute recipe runs from the Prefect work pool, in this process."""
    if not dispatch:
        ctx = click.get_current_context()
        given = [
            "--" + name.replace("_", "-")
            for name in options
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only with --dispatch")

    def jobs(eng: Engine, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        w = eng.worker(
            work_pool=work_pool, limit=limit, poll_seconds=poll, heartbeat_seconds=heartbeat
        )
        running = [w.run(stop)]
        if dispatch:
            d = eng.dispatcher(w, work_pool=work_pool, **_dispatcher_fields(options))
            running.append(d.run(stop))
        click.echo(f"worker {w.name} polling work pool {work_pool!r} (limit {limit})")
        return running

    _run_engine(jobs)


def _dispatcher_fields(options: dict[str, Any]) -> dict[str, Any]:
    """`_dispatcher_options`' values as `Dispatcher` fields."""
    fields = dict(options)
    fields["lease_seconds"] = fields.pop("lease")
    return fields


@click.command()
@_dispatcher_options(worker=False)
@click.option(
    "--max-waiting",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Runs created and not yet taken by a worker, at most; in a storm the rest wait in "
    "the inbox, pending. Keep it above the workers' total --limit plus 32 each.",
)
@click.option("--work-pool", default="hookline", show_default=True)
def dispatch(work_pool: str, **options: Any) -> None:
    """Move inbox entries into Prefect flow runs and follow them to done/failed."""

    def jobs(eng: Engine, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        d = eng.dispatcher(work_pool=work_pool, **_dispatcher_fields(options))
        click.echo("dispatcher running")
        return [d.run(stop)]

    _run_engine(jobs)


@click.command(
    "prefect-server",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4200, show_default=True)
@click.pass_context
def prefect_server(ctx: click.Context, host: str, port: int) -> None:
    """`prefect server start` with Hookline's server profile (any other option is Prefect's).

    The background services Hookline does not use are off (scheduler, late runs,
    automations, pause expirations, repossessor, vacuum, event persister, foreman,
    cancellation cleanup), as for `hookline up`'s embedded server; the database is
    PREFECT_API_DATABASE_CONNECTION_URL's (PostgreSQL in production).
    """
    from hookline.engine.prefect_server import EMBEDDED_PROFILE

    argv = [
        sys.executable,
        "-m",
        "hookline.engine.prefect_serve",
        "server",
        "start",
        "--host",
        host,
        "--port",
        str(port),
        *ctx.args,
    ]
    off = sorted(
        k.removeprefix("PREFECT_SERVER_SERVICES_").removesuffix("_ENABLED").lower()
        for k, v in EMBEDDED_PROFILE.items()
        if k.startswith("PREFECT_SERVER_SERVICES_") and v == "false"
    )
    click.echo(f"Prefect server with Hookline's profile; services off: {', '.join(off)}")
    env = {**os.environ, **EMBEDDED_PROFILE}
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)


def dev_secret_path() -> Path:
    return get_settings().home / "dev-secret"


def default_secret() -> str | None:
    """SOLVEFORCE_WEBHOOK_SECRET, else the development secret `hookline up` generated."""
    if os.environ.get("SOLVEFORCE_WEBHOOK_SECRET"):
        return os.environ["SOLVEFORCE_WEBHOOK_SECRET"]
    p = dev_secret_path()
    return p.read_text().strip() if p.exists() else None


@click.command()
@click.argument("event_type", required=False)
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Send this JSON file instead of a built-in sample.",
)
@click.option(
    "--url",
    default=None,
    help="Receiver URL [default: $HOOKLINE_URL or http://127.0.0.1:8000/webhooks/solveforce].",
)
@click.option(
    "--secret",
    default=None,
    help="Signing secret [default: $SOLVEFORCE_WEBHOOK_SECRET or the one `hookline up` made].",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a field, e.g. --set data.current_status=outage (repeatable).",
)
@click.option("--keep-id", is_flag=True, help="Keep the sample's event_id and timestamp.")
@click.option("--list", "list_", is_flag=True, help="List the built-in samples.")
def send(
    event_type: str | None,
    file: Path | None,
    url: str | None,
    secret: str | None,
    sets: tuple[str, ...],
    keep_id: bool,
    list_: bool,
) -> None:
    """Sign and send a SolveForce sample event (or --file) to a running Hookline."""
    from hookline import samples
    from hookline.engine import send as sender

    if list_:
        for name in samples.names():
            click.echo(name)
        return
    url = url or os.environ.get("HOOKLINE_URL") or "http://127.0.0.1:8000/webhooks/solveforce"
    secret = secret or default_secret()
    if not secret:
        raise CommandError("no signing secret: pass --secret or set SOLVEFORCE_WEBHOOK_SECRET")
        return
    try:
        payload = sender.build_event(event_type, file, sets=sets, keep_id=keep_id)
        response = sender.send(payload, url=url, secret=secret)
    except sender.SendError as exc:
        raise CommandError(str(exc)) from None
        return
    click.echo(
        f"{payload['event_type']} {payload['event_id']} -> {response.status_code} "
        f"{response.text.strip()}"
    )
    if response.status_code != 200:
        sys.exit(1)


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(value[:-1]) * units[value[-1]])
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: use 30m, 2h, 1d or an ISO 8601 time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _known_secrets() -> list[str]:
    """Secret values to mask in what `hookline events show` prints: the environment's
    secret-looking variables and the development signing secret of `hookline up`."""
    from hookline.recipes.dryrun import secret_values

    return secret_values({**os.environ, "HOOKLINE_DEV_SECRET": default_secret() or ""})


@click.group(invoke_without_command=True)
@click.option(
    "--status",
    type=click.Choice([*STATUSES, SCHEDULED]),
    help="scheduled: timers not due yet (stored as pending; --status pending leaves them out).",
)
@click.option("--since", default=None, help="30m, 2h, 1d or an ISO 8601 time.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def events(
    ctx: click.Context, status: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """List inbox entries with their runs' Prefect states and UI links.

    `hookline events show EVENT_ID` shows one event: payload, runs and steps.
    """
    import json

    from hookline.engine import events as view
    from hookline.inbox import open_inbox

    if ctx.invoked_subcommand is not None:
        return
    since_dt = _parse_since(since)
    address = view.prefect_address(get_settings().home)

    async def main() -> tuple[list[Any], dict[int, str], view.PrefectView]:
        inbox = await open_inbox(get_settings())
        try:
            stored = "pending" if status == SCHEDULED else status
            entries: list[Any] = await inbox.list(status=stored, since=since_dt, limit=limit)
            if stored == "pending":  # timers not due yet are listed as scheduled
                now = inbox.now()
                entries = [e for e in entries if e.scheduled(now) == (status == SCHEDULED)]
            covering: dict[int, str] = {}
            for e in entries:
                if e.superseded_by is not None and e.superseded_by not in covering:
                    by = await inbox.get(e.superseded_by)
                    covering[e.superseded_by] = by.event_id if by else str(e.superseded_by)
        finally:
            await inbox.close()
        runs = [rid for e in entries for rid in e.flow_runs.values()]
        return entries, covering, await view.read_prefect(address, runs)

    entries, covering, prefect = asyncio.run(main())
    if prefect.problem:
        click.echo(prefect.problem, err=True)
    for e in entries:
        by = covering.get(e.superseded_by) if e.superseded_by is not None else None
        if as_json:
            line = view.entry_json(e, prefect, address, by)
            click.echo(json.dumps(line, separators=(",", ":")))
        else:
            click.echo("\n".join(view.entry_lines(e, prefect, address, by)))
    if not entries and not as_json:
        click.echo("no events" + (f" with status {status}" if status else ""))


@events.command("show")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def events_show(event_id: str, as_json: bool) -> None:
    """One event: its metadata, payload (secrets masked), runs with their Prefect states and
    links, and each step's outcome. EVENT_ID may be SOURCE:EVENT_ID when sources share ids."""
    import json

    from hookline.engine import events as view
    from hookline.inbox import open_inbox

    address = view.prefect_address(get_settings().home)

    async def main() -> tuple[view.Detail, view.PrefectView]:
        inbox = await open_inbox(get_settings())
        try:
            detail = await view.load_detail(inbox, await view.resolve(inbox, event_id))
        finally:
            await inbox.close()
        runs = detail.entry.flow_runs.values()
        return detail, await view.read_prefect(address, runs, steps=True)

    detail, prefect = _run(main())
    if prefect.problem:
        click.echo(prefect.problem, err=True)
    secrets = _known_secrets()
    if as_json:
        click.echo(json.dumps(view.detail_json(detail, prefect, address, secrets), indent=2))
    else:
        click.echo("\n".join(view.detail_lines(detail, prefect, address, secrets)))


@click.command()
@click.argument("event_ids", nargs=-1)
@click.option("--source", default=None, help="Only this source's event with that id.")
@click.option("--all-failed", is_flag=True, help="Replay every failed event.")
def replay(event_ids: tuple[str, ...], source: str | None, all_failed: bool) -> None:
    """Run events again; steps that already succeeded for an event are not repeated."""
    from hookline.inbox import open_inbox

    if not event_ids and not all_failed:
        raise CommandError("give one or more EVENT_IDs, or --all-failed")

    async def main() -> list[str]:
        inbox = await open_inbox(get_settings())
        done: list[str] = []
        try:
            targets: list[Any] = []
            if all_failed:
                targets += await inbox.list(status="failed", limit=100_000)
            for eid in event_ids:
                found = [
                    e for e in await inbox.find_event(eid) if source is None or e.source == source
                ]
                if not found:
                    raise HooklineError(f"no event {eid!r} in the inbox (see `hookline events`)")
                targets += found
            for e in targets:
                if e.status in ("pending", "dispatched"):
                    click.echo(f"{e.source}:{e.event_id} is {e.status}; not replayed")
                    continue
                await inbox.requeue(e.id)
                done.append(f"{e.source}:{e.event_id}")
        finally:
            await inbox.close()
        return done

    replayed = _run(main())
    for r in replayed:
        click.echo(f"requeued {r}")
    click.echo(f"{len(replayed)} event(s) requeued; the dispatcher sends them to Prefect again")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, help="Receiver port.")
@click.option(
    "--prefect-port",
    default=4200,
    show_default=True,
    help="Port of the embedded Prefect server (ignored when PREFECT_API_URL is set).",
)
@click.option(
    "--preview/--no-preview",
    default=True,
    show_default=True,
    help="Steps whose connector is not configured record what they would send instead of failing.",
)
@click.option(
    "--limit",
    default=6,
    show_default=True,
    help="Recipe runs the in-process worker executes at once (see bench/README.md).",
)
def up(host: str, port: int, prefect_port: int, preview: bool, limit: int) -> None:
    """Run Hookline end to end: Prefect server, receiver, dispatcher and worker."""
    from hookline.engine.up import run_up

    try:
        run_up(host=host, port=port, prefect_port=prefect_port, preview=preview, limit=limit)
    except HooklineError as exc:
        raise CommandError(str(exc)) from None
