"""``POST /webhooks/{source}``: from raw request to a stored event and its answer.

Checks run cheapest first:

    404 unknown source (or an optional one not configured) -> 403 IP not allowed
    -> 413 declared too large -> 415 not JSON -> 413 read too large -> 401 signature
    -> 400 JSON / envelope -> 429 rate limit
    -> inbox.put -> 200 accepted | 200 duplicate | 503 cannot store (Retry-After)

A ``slack`` source also takes Slack's interactivity requests, ``application/x-www-form-
urlencoded`` with a ``payload`` field of JSON (`hookline.bodies`): verified over the raw body
like any other, then parsed (400 naming the field if the payload is missing or not a JSON
object), stored as the raw signed body, and answered 200 with an empty body, Slack's
acknowledgement (for a ``view_submission`` it closes the modal; any JSON would be read as a
``response_action``). Slack's Events API retries (``X-Slack-Retry-Num``) carry the same
``event_id``: a duplicate, answered 200; the retry number is logged.

The rate limit counts new verified events only: unsigned floods cannot use up a sender's
budget, and neither can replays of a captured body (a duplicate's token is given back, and
with the bucket empty a known event is still answered 200 duplicate). This is the hot path,
so it speaks ASGI directly (`webhook_asgi`) instead of going through Starlette's
request/response objects and middleware; everything else is Starlette.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from hookline.bodies import is_form
from hookline.inbox import Inbox, InboxError
from hookline.logs import fast_info
from hookline.receiver.envelope import ParsedEvent, decode_json, parse_event, parse_interaction
from hookline.receiver.errors import EnvelopeError, SignatureError
from hookline.receiver.metrics import ReceiverMetrics
from hookline.receiver.ratelimit import TokenBucket, retry_after_header
from hookline.receiver.sources import Network, ReceiverConfig, Source
from hookline.receiver.verify import SIGNATURE_HEADERS

log = logging.getLogger("hookline.receiver")

TEST_EVENT_TYPE = "webhook.test"
CheckFunc = Callable[[], Any]

# Headers never stored with an event, whatever the scheme.
_NEVER_STORED = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRETISH = ("secret", "token", "signature", "password", "api-key", "apikey")

_KEEP: dict[str, bool] = {}

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


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


def _log(level: int, msg: str, extra: dict[str, Any]) -> None:
    # logger.info() looks up the caller's frame for every record; at thousands of webhooks
    # a second that is a measurable share of the request, and the log line does not use it.
    if log.isEnabledFor(level):
        log.handle(log.makeRecord(log.name, level, "receiver", 0, msg, (), None, extra=extra))


def answer(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Answer:
    """An answer as (status, JSON bytes, extra headers)."""
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return status, json.dumps(body, separators=(",", ":")).encode(), extra


def audit_headers(
    headers: Mapping[str, str], secrets: tuple[str, ...], client: str | None
) -> dict[str, str]:
    """The headers kept with an event: none that is or carries a signature or a secret."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        n = name.lower()
        keep = _KEEP.get(n)
        if keep is None:
            keep = not (
                n in SIGNATURE_HEADERS or n in _NEVER_STORED or any(s in n for s in _SECRETISH)
            )
            if len(_KEEP) < 4096:  # header names repeat; bounded against header-name floods
                _KEEP[n] = keep
        if not keep:
            continue
        for secret in secrets:
            if secret and secret in value:
                break
        else:
            kept[n] = value
    if client is not None:
        kept["x-hookline-client"] = client
    return kept


def client_ip(
    peer: str | None, headers: Mapping[str, str], proxies: tuple[Network, ...]
) -> str | None:
    """The client address: the peer, or the right-most X-Forwarded-For hop not a proxy."""
    if not proxies or peer is None:
        return peer
    hops = [peer]
    xff = headers.get("x-forwarded-for")
    if xff:
        hops = [h.strip() for h in xff.split(",") if h.strip()] + [peer]
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return hop
        if not any(ip in net for net in proxies):
            return hop
    return hops[0]


def allowed(client: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether ``client`` is inside one of ``networks`` (no networks: everyone)."""
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


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, any parameters."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def scope_headers(scope: Scope) -> dict[str, str]:
    """Request headers, lower-case names, the first of repeated headers; but all the lines
    of X-Forwarded-For, joined in order (a proxy may append its line after the client's)."""
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        name = k.decode("latin-1").lower()
        if name not in out:
            out[name] = v.decode("latin-1")
        elif name == "x-forwarded-for":
            out[name] += ", " + v.decode("latin-1")
    return out


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
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


async def handle_webhook(
    st: ReceiverState, name: str, headers: dict[str, str], peer: str | None, receive: Receive
) -> Answer | None:
    """Process one delivery; None when the client went away before sending its body."""
    started = st.monotonic()
    m = st.metrics
    source = st.sources.get(name)
    if source is None:
        m.requests.labels("_unknown", "unknown_source").inc()
        _log(logging.INFO, "unknown source", {"source": name[:100], "outcome": "unknown_source"})
        return answer(404, {"error": "unknown_source", "detail": f"no source named {name!r}"})
    if source.disabled is not None:
        m.requests.labels(name, "not_configured").inc()
        _log(logging.INFO, "source not configured", {"source": name, "outcome": "not_configured"})
        detail = f"source {name!r} is disabled: {source.disabled}"
        return answer(404, {"error": "source_not_configured", "detail": detail})

    client = client_ip(peer, headers, st.proxies)
    if not allowed(client, source.networks):
        m.requests.labels(name, "forbidden").inc()
        _log(
            logging.WARNING,
            "address not allowed",
            {"source": name, "client": client, "outcome": "forbidden"},
        )
        return answer(403, {"error": "forbidden"})

    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > source.max_body_bytes:
        m.requests.labels(name, "too_large").inc()
        _log(logging.INFO, "body too large", {"source": name, "outcome": "too_large"})
        return answer(413, {"error": "too_large", "limit_bytes": source.max_body_bytes})

    content_type = headers.get("content-type")
    form = source.scheme == "slack" and is_form(content_type)
    if not form and not is_json(content_type):
        m.requests.labels(name, "unsupported_media_type").inc()
        _log(logging.INFO, "not JSON", {"source": name, "outcome": "unsupported_media_type"})
        media = "application/json"
        if source.scheme == "slack":
            media += " or application/x-www-form-urlencoded (interactivity)"
        return answer(415, {"error": "unsupported_media_type", "detail": f"send {media}"})

    try:
        body = await _read_body(receive, source.max_body_bytes)
    except _TooLarge:
        m.requests.labels(name, "too_large").inc()
        _log(logging.INFO, "body too large", {"source": name, "outcome": "too_large"})
        return answer(413, {"error": "too_large", "limit_bytes": source.max_body_bytes})
    except _Disconnected:
        return None

    try:
        source.verify(
            body, headers, secrets=source.keys, now=st.clock(), tolerance=source.tolerance
        )
    except SignatureError as exc:
        m.requests.labels(name, "bad_signature").inc()
        m.signature_failures.labels(name, exc.reason).inc()
        _log(
            logging.WARNING,
            "signature rejected",
            {
                "source": name,
                "outcome": "bad_signature",
                "reason": exc.reason,
                "detail": exc.detail,
                "client": client,
            },
        )
        return answer(401, {"error": "invalid_signature"})

    if source.scheme == "slack" and not form and b"url_verification" in body:
        challenge = _slack_challenge(body)
        if challenge is not None:
            # Slack's one-time handshake when the URL is registered: echo it, store nothing
            # (api.slack.com/events/url_verification accepts plain text, a form or JSON).
            return answer(200, {"challenge": challenge})

    try:
        event = parse_interaction(body) if form else parse_event(body, headers, source)
    except EnvelopeError as exc:
        m.requests.labels(name, "bad_request").inc()
        _log(
            logging.INFO,
            "invalid event",
            {"source": name, "outcome": "bad_request", "field": exc.field, "detail": exc.detail},
        )
        return answer(400, {"error": "invalid_event", "field": exc.field, "detail": exc.detail})

    bucket: TokenBucket | None = None
    if source.rate_limit is not None:
        bucket = st.buckets.get(name)
        if bucket is None:
            rl = source.rate_limit
            bucket = st.buckets[name] = TokenBucket(rl.per_second, rl.burst, clock=st.monotonic)
        wait = bucket.take()
        if wait > 0:
            known = await _known(st, name, event.event_id)
            if known is None:
                m.requests.labels(name, "rate_limited").inc()
                _log(logging.WARNING, "rate limited", {"source": name, "outcome": "rate_limited"})
                later = {"Retry-After": retry_after_header(wait)}
                return answer(429, {"error": "rate_limited"}, later)
            return _stored(st, name, event, False, known, started, headers, form)

    try:
        inserted, entry_id = await st.inbox.put(
            name,
            event.event_id,
            event.event_type,
            body,
            audit_headers(headers, source.secret_texts, client),
            event.event_time,
            # A test delivery proves the endpoint works; it runs no recipe.
            status="done" if event.event_type == TEST_EVENT_TYPE else "pending",
            timeout=st.config.store_timeout_seconds,
        )
    except Exception as exc:
        if bucket is not None:
            bucket.give_back()  # nothing stored: the sender's retry is charged instead
        unavailable = answer(
            503,
            {"error": "unavailable", "detail": "cannot store the event; retry later"},
            {"Retry-After": str(st.config.retry_after_seconds)},
        )
        fields = {"source": name, "event_id": event.event_id, "event_type": event.event_type}
        if isinstance(exc, InboxError):  # the store cannot commit, or not in time: an outage
            m.requests.labels(name, "unavailable").inc()
            fields.update(outcome="unavailable", error=str(exc))
            _log(logging.ERROR, "cannot store event", fields)
            return unavailable
        # Anything else is a bug, not an outage: logged with its traceback, counted apart.
        # The answer is still 503 + Retry-After, the one 5xx a sender may get (it retries;
        # nothing was stored for it).
        m.requests.labels(name, "internal_error").inc()
        fields.update(outcome="internal_error", error=f"{type(exc).__name__}: {exc}")
        log.error("unexpected error storing event", exc_info=True, extra=fields)
        return unavailable
    if bucket is not None and not inserted:
        bucket.give_back()  # a duplicate stored nothing: it must not use up the budget
    return _stored(st, name, event, inserted, entry_id, started, headers, form)


async def _known(st: ReceiverState, source: str, event_id: str) -> int | None:
    """The entry id of ``(source, event_id)`` if stored; None if not, or if unknown."""
    try:
        entry = await st.inbox.find(source, event_id)
    except InboxError:
        return None  # cannot tell: the rate limit applies
    return None if entry is None else entry.id


def _stored(
    st: ReceiverState,
    name: str,
    event: ParsedEvent,
    inserted: bool,
    entry_id: int,
    started: float,
    headers: Mapping[str, str],
    form: bool,
) -> Answer:
    """The 200 answer (and metrics and log line) for an event that is in the inbox: an empty
    body for a Slack interaction (its acknowledgement), else the JSON status."""
    event_id, event_type = event.event_id, event.event_type
    m = st.metrics
    outcome = "accepted" if inserted else "duplicate"
    m.requests.labels(name, outcome).inc()
    if not inserted:
        m.duplicates.labels(name).inc()
    elapsed = st.monotonic() - started
    m.ack_seconds.labels(name).observe(elapsed)
    fields = {
        "source": name,
        "event_id": event_id,
        "event_type": event_type,
        "outcome": outcome,
        "entry_id": entry_id,
        "ms": round(elapsed * 1000, 2),
    }
    retry = headers.get("x-slack-retry-num")
    if retry is not None:  # Slack's own retry of an event: the same event_id, a duplicate
        fields["retry"] = retry[:10]
        fields["retry_reason"] = headers.get("x-slack-retry-reason", "")[:40]
    if not fast_info(log, outcome, fields):
        _log(logging.INFO, outcome, fields)
    if form:
        return 200, b"", []
    ack = b'{"status":"%s","event_id":%s}' % (outcome.encode(), json.dumps(event_id).encode())
    return 200, ack, []


async def send_answer(send: Send, result: Answer) -> None:
    """Send an `Answer` as an ASGI response."""
    status, body, extra = result
    headers = [
        *([(b"content-type", b"application/json")] if body else []),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def webhook_asgi(st: ReceiverState, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /webhooks/<source>`` as plain ASGI."""
    name = scope["path"][len("/webhooks/") :]
    client = scope.get("client")
    result = await handle_webhook(
        st, name, scope_headers(scope), client[0] if client else None, receive
    )
    if result is not None:
        await send_answer(send, result)
