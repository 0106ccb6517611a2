"""The receiver's ASGI app: ``POST /webhooks/{source}``, ``/healthz``, ``/readyz``, ``/metrics``.

A webhook is answered 200 only once it is committed to the inbox. Checks run cheapest first:

    404 unknown source -> 403 IP not allowed -> 413 declared too large -> 415 not JSON
    -> 413 read too large -> 401 signature -> 429 rate limit -> 400 JSON / envelope
    -> inbox.put -> 200 accepted | 200 duplicate | 503 cannot store (Retry-After)

The rate limit counts verified requests only, so unsigned floods cannot use up a sender's
budget. Nothing a client sends can produce a 5xx other than 503: an unexpected exception is
logged with its traceback and answered 503 + Retry-After (the sender retries; nothing was
stored on its behalf).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hookline.config import CoreSettings, HooklineConfig, get_settings, load_config
from hookline.inbox import Inbox, SQLiteInbox, open_inbox
from hookline.receiver.envelope import decode_json, parse_event
from hookline.receiver.errors import EnvelopeError, SignatureError
from hookline.receiver.logs import flush_logs
from hookline.receiver.metrics import ReceiverMetrics
from hookline.receiver.openapi import openapi_schema
from hookline.receiver.ratelimit import TokenBucket, retry_after_header
from hookline.receiver.sources import (
    Network,
    ReceiverConfig,
    Source,
    load_receiver_config,
    load_sources,
)
from hookline.receiver.verify import SIGNATURE_HEADERS

log = logging.getLogger("hookline.receiver")

TEST_EVENT_TYPE = "webhook.test"
CheckFunc = Callable[[], Awaitable[str | None]]
"""A readiness check: returns a detail string when fine, raises (any exception) when not."""

# Headers never stored with an event, whatever the scheme.
_NEVER_STORED = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRETISH = ("secret", "token", "signature", "password", "api-key", "apikey")


@dataclass
class ReceiverState:
    """Everything the handlers need; ``app.state.hookline``."""

    sources: dict[str, Source]
    config: ReceiverConfig
    inbox: Inbox
    owns_inbox: bool
    metrics: ReceiverMetrics
    checks: dict[str, CheckFunc]
    clock: Callable[[], float]
    monotonic: Callable[[], float]
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    proxies: tuple[Network, ...] = ()


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type="application/json",
    )


def audit_headers(
    headers: Mapping[str, str], secrets: tuple[str, ...], client: str | None
) -> dict[str, str]:
    """The headers kept with an event: none that is or carries a signature or a secret."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        n = name.lower()
        if n in SIGNATURE_HEADERS or n in _NEVER_STORED or any(s in n for s in _SECRETISH):
            continue
        if any(s and s in value for s in secrets):
            continue
        kept[n] = value
    if client is not None:
        kept["x-hookline-client"] = client
    return kept


def _client_ip(request: Request, proxies: tuple[Network, ...]) -> str | None:
    peer = request.client.host if request.client else None
    if not proxies or peer is None:
        return peer
    hops = [peer]
    xff = request.headers.get("x-forwarded-for")
    if xff:
        hops = [h.strip() for h in xff.split(",") if h.strip()] + [peer]
    # The right-most address that is not one of our proxies is the client.
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return hop
        if not any(ip in net for net in proxies):
            return hop
    return hops[0]


def _allowed(client: str | None, networks: tuple[Network, ...]) -> bool:
    if not networks:
        return True
    if client is None:
        return False
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _slack_challenge(body: bytes) -> str | None:
    try:
        payload = decode_json(body)
    except EnvelopeError:
        return None
    if isinstance(payload, dict) and payload.get("type") == "url_verification":
        challenge = payload.get("challenge")
        return challenge if isinstance(challenge, str) else None
    return None


async def receive_webhook(request: Request) -> Response:
    """``POST /webhooks/{source}``."""
    st: ReceiverState = request.app.state.hookline
    started = st.monotonic()
    name = request.path_params["source"]
    source = st.sources.get(name)
    m = st.metrics
    if source is None:
        m.requests.labels("_unknown", "unknown_source").inc()
        log.info("unknown source", extra={"source": name[:100], "outcome": "unknown_source"})
        return _json(404, {"error": "unknown_source", "detail": f"no source named {name!r}"})

    client = _client_ip(request, st.proxies)
    if not _allowed(client, source.networks):
        m.requests.labels(name, "forbidden").inc()
        log.warning(
            "address not allowed", extra={"source": name, "client": client, "outcome": "forbidden"}
        )
        return _json(403, {"error": "forbidden"})

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > source.max_body_bytes:
        m.requests.labels(name, "too_large").inc()
        log.info(
            "body too large", extra={"source": name, "outcome": "too_large", "bytes": declared}
        )
        return _json(413, {"error": "too_large", "limit_bytes": source.max_body_bytes})

    if not _is_json(request.headers.get("content-type")):
        m.requests.labels(name, "unsupported_media_type").inc()
        log.info("not JSON", extra={"source": name, "outcome": "unsupported_media_type"})
        return _json(415, {"error": "unsupported_media_type", "detail": "send application/json"})

    try:
        body = await _read_body(request, source.max_body_bytes)
    except _TooLarge:
        m.requests.labels(name, "too_large").inc()
        log.info("body too large", extra={"source": name, "outcome": "too_large"})
        return _json(413, {"error": "too_large", "limit_bytes": source.max_body_bytes})

    try:
        source.verify(
            body, request.headers, secrets=source.keys, now=st.clock(), tolerance=source.tolerance
        )
    except SignatureError as exc:
        m.requests.labels(name, "bad_signature").inc()
        m.signature_failures.labels(name, exc.reason).inc()
        log.warning(
            "signature rejected",
            extra={
                "source": name,
                "outcome": "bad_signature",
                "reason": exc.reason,
                "detail": exc.detail,
                "client": client,
            },
        )
        return _json(401, {"error": "invalid_signature"})

    if source.rate_limit is not None:
        bucket = st.buckets.get(name)
        if bucket is None:
            rl = source.rate_limit
            bucket = st.buckets[name] = TokenBucket(rl.per_second, rl.burst, clock=st.monotonic)
        wait = bucket.take()
        if wait > 0:
            m.requests.labels(name, "rate_limited").inc()
            log.warning("rate limited", extra={"source": name, "outcome": "rate_limited"})
            return _json(429, {"error": "rate_limited"}, {"Retry-After": retry_after_header(wait)})

    if source.scheme == "slack" and b"url_verification" in body:
        challenge = _slack_challenge(body)
        if challenge is not None:
            # Slack's one-time handshake when the URL is registered: echo it, store nothing.
            return _json(200, {"challenge": challenge})

    try:
        event = parse_event(body, request.headers, source)
    except EnvelopeError as exc:
        m.requests.labels(name, "bad_request").inc()
        log.info(
            "invalid event",
            extra={
                "source": name,
                "outcome": "bad_request",
                "field": exc.field,
                "detail": exc.detail,
            },
        )
        return _json(400, {"error": "invalid_event", "field": exc.field, "detail": exc.detail})

    is_test = event.event_type == TEST_EVENT_TYPE
    ctx = {"source": name, "event_id": event.event_id, "event_type": event.event_type}
    try:
        async with asyncio.timeout(st.config.store_timeout_seconds):
            inserted, entry_id = await st.inbox.put(
                name,
                event.event_id,
                event.event_type,
                body,
                audit_headers(request.headers, source.secret_texts, client),
                event.event_time,
                # A test delivery proves the endpoint works; it runs no recipe.
                status="done" if is_test else "pending",
            )
    except Exception as exc:  # any store failure, timeout included: the sender must retry
        m.requests.labels(name, "unavailable").inc()
        log.error(
            "cannot store event",
            extra={**ctx, "outcome": "unavailable", "error": f"{type(exc).__name__}: {exc}"},
        )
        return _json(
            503,
            {"error": "unavailable", "detail": "cannot store the event; retry later"},
            {"Retry-After": str(st.config.retry_after_seconds)},
        )
    outcome = "accepted" if inserted else "duplicate"
    m.requests.labels(name, outcome).inc()
    if not inserted:
        m.duplicates.labels(name).inc()
    elapsed = st.monotonic() - started
    m.ack_seconds.labels(name).observe(elapsed)
    log.info(
        outcome,
        extra={**ctx, "outcome": outcome, "entry_id": entry_id, "ms": round(elapsed * 1000, 2)},
    )
    return _json(200, {"status": outcome, "event_id": event.event_id})


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


async def metrics(request: Request) -> Response:
    """Prometheus text format; inbox depth is read at scrape time."""
    st: ReceiverState = request.app.state.hookline
    try:
        async with asyncio.timeout(5.0):
            counts = await st.inbox.counts()
        for status, n in counts.items():
            st.metrics.inbox_depth.labels(status).set(n)
    except Exception as exc:
        log.warning("inbox depth unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
    return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    """The OpenAPI document of the receiver."""
    st: ReceiverState = request.app.state.hookline
    return _json(200, openapi_schema(sorted(st.sources)))


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
    rconfig = load_receiver_config(config)
    sources = load_sources(config, rconfig, environ=env)
    owns = inbox is None
    if inbox is None:
        inbox = open_inbox(settings)
        if isinstance(inbox, SQLiteInbox):
            inbox.synchronous = rconfig.sqlite_synchronous
            inbox.writer = os.environ.get("HOOKLINE_SQLITE_WRITER", "thread")  # type: ignore[assignment]
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
            flush_logs()
            if state.owns_inbox:
                await state.inbox.close()

    app = Starlette(
        routes=[
            Route("/webhooks/{source}", receive_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.hookline = state
    app.add_middleware(_NoServerErrors, retry_after=rconfig.retry_after_seconds)
    return app


def add_readiness_check(app: Starlette, name: str, check: CheckFunc) -> None:
    """Add (or replace) a readiness check reported by ``/readyz``."""
    state: ReceiverState = app.state.hookline
    state.checks[name] = check
