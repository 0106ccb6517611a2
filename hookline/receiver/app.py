"""The receiver's ASGI app: ``POST /webhooks/{source}``, ``/healthz``, ``/readyz``,
``/metrics``, ``/openapi.json``.

The last three are admin endpoints: with ``receiver.admin_token`` (or HOOKLINE_ADMIN_TOKEN)
set they answer 401 without ``Authorization: Bearer <token>``; ``/healthz`` (liveness, says
nothing) stays open.

Webhooks are handled by `hookline.receiver.handler` (the order of checks and every answer
are described there); they reach it ahead of Starlette's middleware stack because they are
the hot path. Nothing a client sends can produce a 5xx other than 503: an unexpected
exception is logged with its traceback and answered 503 + Retry-After (the sender retries;
nothing was stored on its behalf).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hookline.config import CoreSettings, HooklineConfig, get_settings, load_config
from hookline.inbox import Inbox, open_inbox
from hookline.logs import flush_logs
from hookline.receiver.handler import ReceiverState, webhook_asgi
from hookline.receiver.metrics import ReceiverMetrics
from hookline.receiver.openapi import openapi_schema
from hookline.receiver.sources import (
    disabled_warnings,
    load_receiver_config,
    load_sources,
    unsigned_warnings,
)

log = logging.getLogger("hookline.receiver")

CheckFunc = Callable[[], Awaitable[str | None]]
"""A readiness check: returns a detail string when fine, raises (any exception) when not."""


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type="application/json",
    )


def _is_webhook(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST":
        return False  # lifespan scopes have no path
    path: str = scope["path"]
    return path.startswith("/webhooks/") and len(path) > 10 and "/" not in path[10:]


class _Webhooks:
    """``POST /webhooks/<source>`` as plain ASGI (mounted as the route's endpoint too)."""

    def __init__(self, app: ASGIApp, state: ReceiverState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _is_webhook(scope):
            await webhook_asgi(self.state, scope, receive, send)
        else:
            await self.app(scope, receive, send)


class ReceiverApp(Starlette):
    """The receiver: webhooks go straight to the handler, ahead of Starlette's middleware
    stack (the hot path); everything else is a normal Starlette app."""

    def __init__(self, state: ReceiverState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state.hookline = state
        self._guarded = _NoServerErrors(
            _Webhooks(_not_found, state), state.config.retry_after_seconds
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _is_webhook(scope):
            await self._guarded(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await _json(404, {"error": "not_found"})(scope, receive, send)


async def healthz(request: Request) -> Response:
    """Alive: the process answers."""
    return _json(200, {"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when every check passes; 503 with the check list otherwise."""
    st: ReceiverState = request.app.state.hookline

    async def run(name: str, check: CheckFunc) -> dict[str, Any]:
        try:
            async with asyncio.timeout(5.0):
                detail = await check()
            return {"name": name, "ok": True, "detail": detail or "ok"}
        except Exception as exc:
            return {"name": name, "ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}

    results = await asyncio.gather(*(run(n, c) for n, c in st.checks.items()))
    ok = all(r["ok"] for r in results)
    if not ok:
        log.warning("not ready", extra={"failed": [r["name"] for r in results if not r["ok"]]})
    return _json(200 if ok else 503, {"status": "ready" if ok else "not_ready", "checks": results})


DEPTH_MAX_AGE = 5.0
"""Seconds an inbox depth read by /metrics is reused: a COUNT ... GROUP BY over the whole inbox
runs on the SQLite writer, so it must not run once per scrape (5 parallel scrapes of a 400k
row inbox held acks back by 0.27 s)."""


class _InboxDepth:
    """The inbox depth for /metrics: read at most every `DEPTH_MAX_AGE` seconds, in the
    background (a scrape answers with the last figures; only the very first one waits)."""

    def __init__(self, state: ReceiverState) -> None:
        self.state = state
        self.read_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        st = self.state
        try:
            async with asyncio.timeout(5.0):
                counts = await st.inbox.counts()
                oldest = await st.inbox.oldest()
            for status, n in counts.items():
                st.metrics.inbox_depth.labels(status).set(n)
            for status, age in oldest.items():
                st.metrics.inbox_oldest.labels(status).set(age)
        except Exception as exc:  # the scrape still answers, with the last figures
            log.warning("inbox depth unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
        finally:
            self.read_at = st.monotonic()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def refresh(self) -> None:
        """Start a read if the figures are stale; wait for it only if there are none yet."""
        now = self.state.monotonic()
        if self.read_at is not None and now - self.read_at < DEPTH_MAX_AGE:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._read())
        if self.read_at is None:
            await asyncio.shield(self._task)


async def metrics(request: Request) -> Response:
    """Prometheus text format; the inbox depth is at most a few seconds old."""
    st: ReceiverState = request.app.state.hookline
    depth: _InboxDepth = request.app.state.inbox_depth
    await depth.refresh()
    return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    """The OpenAPI document of the receiver."""
    st: ReceiverState = request.app.state.hookline
    return _json(200, openapi_schema(sorted(st.sources)))


def _admin(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
    """``endpoint``, answering 401 unless the request carries ``Authorization: Bearer
    <receiver.admin_token>`` (when a token is configured)."""

    async def guarded(request: Request) -> Response:
        st: ReceiverState = request.app.state.hookline
        token = st.config.admin_token
        if token:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            ok = scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode("utf-8", "backslashreplace"), token.encode("utf-8")
            )
            if not ok:
                return _json(401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"})
        return await endpoint(request)

    guarded.__name__ = guarded.__qualname__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    return guarded


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    headers = exc.headers if isinstance(exc, HTTPException) else None
    error = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return _json(status, {"error": error}, headers)


class _NoServerErrors:
    """Turn an unexpected exception into 503 + Retry-After (the only 5xx the receiver sends)."""

    def __init__(self, app: ASGIApp, retry_after: int) -> None:
        self.app = app
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_)
        except Exception:
            log.exception("unexpected error", extra={"path": scope.get("path", "")[:200]})
            if started:
                raise
            response = _json(
                503,
                {"error": "unavailable", "detail": "internal error; retry later"},
                {"Retry-After": str(self.retry_after)},
            )
            await response(scope, receive, send)


async def _prefect_check(url: str) -> str:
    import httpx

    async with httpx.AsyncClient(timeout=3.0) as client:
        r = await client.get(url.rstrip("/") + "/health")
    if r.status_code != 200:
        raise RuntimeError(f"{url}/health answered {r.status_code}")
    return f"{url} healthy"


async def _flush_logs_periodically() -> None:
    while True:
        await asyncio.sleep(0.5)
        flush_logs()


def create_app(
    config: HooklineConfig | None = None,
    *,
    settings: CoreSettings | None = None,
    inbox: Inbox | None = None,
    checks: Mapping[str, CheckFunc] | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] | None = None,
    monotonic: Callable[[], float] | None = None,
) -> Starlette:
    """Build the receiver app.

    Args:
        config: parsed hookline.yaml (default: `load_config()`).
        settings: core settings (default: `get_settings()`).
        inbox: an inbox to share (the app then does not close it); default: its own
            `open_inbox(settings)`, opened at startup and closed at shutdown.
        checks: extra readiness checks, name -> async callable (e.g. the engine's dispatch
            lag); more can be added later with `add_readiness_check`.
        environ: the environment for ``${VAR}`` secrets and PREFECT_API_URL.

    Raises:
        ConfigError: hookline.yaml's ``sources``/``receiver`` are invalid or a secret is unset.
    """
    settings = settings if settings is not None else get_settings()
    config = config if config is not None else load_config(settings.config)
    env = os.environ if environ is None else environ
    rconfig = load_receiver_config(config, environ=env)
    sources = load_sources(config, rconfig, environ=env)
    for warning in unsigned_warnings(sources) + disabled_warnings(sources):
        log.warning(warning)
    owns = inbox is None
    if inbox is None:
        inbox = open_inbox(
            settings,
            sqlite_synchronous=rconfig.sqlite_synchronous,
            sqlite_writer=rconfig.sqlite_writer,
        )
    state = ReceiverState(
        sources=sources,
        config=rconfig,
        inbox=inbox,
        owns_inbox=owns,
        metrics=ReceiverMetrics(),
        checks={},
        clock=clock if clock is not None else time.time,
        monotonic=monotonic if monotonic is not None else time.monotonic,
        proxies=rconfig.proxy_networks,
    )

    async def inbox_writable() -> str:
        await state.inbox.ping()
        return f"{state.inbox.description} writable"

    state.checks["inbox"] = inbox_writable
    prefect_url = env.get("PREFECT_API_URL")
    if prefect_url:

        async def prefect() -> str:
            return await _prefect_check(prefect_url)

        state.checks["prefect_api"] = prefect
    state.checks.update(checks or {})

    depth = _InboxDepth(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.inbox.open()
        log.info(
            "receiver ready",
            extra={"inbox": state.inbox.description, "sources": ",".join(sorted(sources))},
        )
        flusher = asyncio.create_task(_flush_logs_periodically())
        try:
            yield
        finally:
            flusher.cancel()
            depth.cancel()
            flush_logs()
            if state.owns_inbox:
                await state.inbox.close()

    app = ReceiverApp(
        state,
        routes=[
            # POSTs are answered by _Webhooks before routing; the route answers 405 otherwise.
            Route("/webhooks/{source}", _Webhooks(_not_found, state), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", _admin(readyz), methods=["GET"]),
            Route("/metrics", _admin(metrics), methods=["GET"]),
            Route("/openapi.json", _admin(openapi), methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.add_middleware(_NoServerErrors, retry_after=rconfig.retry_after_seconds)
    app.state.inbox_depth = depth
    if not rconfig.admin_token:
        log.info(
            "/metrics, /readyz and /openapi.json are open: set HOOKLINE_ADMIN_TOKEN (or"
            " receiver.admin_token) to require a bearer token, or expose /webhooks/ only"
        )
    return app


def add_metrics(app: Starlette, collector: Collector) -> None:
    """Report ``collector``'s metrics on ``/metrics`` too (the engine of `hookline up`)."""
    state: ReceiverState = app.state.hookline
    state.metrics.registry.register(collector)


def add_readiness_check(app: Starlette, name: str, check: CheckFunc) -> None:
    """Add (or replace) a readiness check reported by ``/readyz``."""
    state: ReceiverState = app.state.hookline
    state.checks[name] = check
