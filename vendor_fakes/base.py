"""A tiny threaded HTTP(S) server that records calls and fails on demand.

Every fake vendor subclasses `FakeServer` and implements `route`. Besides the vendor's API each
fake serves a control API under ``/_hookline/`` so that a test in another process can drive it:

    GET  /_hookline/calls        every recorded call, oldest first (JSON list)
    POST /_hookline/fail         {"count": 1, "status": 500, "retry_after": null,
                                  "delay": 0, "path": null}  -> the next calls fail
    POST /_hookline/reset        forget calls, failures and stored data
    GET  /_hookline/state        the vendor's stored data (incidents, records, ...)
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

CONTROL = "/_hookline"


@dataclass
class Call:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    body: str
    status: int = 0
    received_at: float = 0.0
    """time.monotonic() when the request arrived."""
    received_wall: float = 0.0
    """time.time() when the request arrived: comparable with another process's clock
    (bench/sustained.py: accepted by the receiver -> the step's vendor call)."""
    abandoned_at: float | None = None
    """time.monotonic() when the client closed the connection before a delayed answer."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Failure:
    """What the next matching calls answer instead of the real thing."""

    count: int
    status: int | None = 500
    retry_after: float | str | None = None
    delay: float = 0.0
    path: str | None = None
    method: str | None = None


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeServer
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:
            # The handshake happens in the handler thread, so one slow client cannot stall
            # the accept loop.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out or distrust the certificate are expected in tests


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class FakeServer:
    """Base class: bind to 127.0.0.1 port 0, serve in a thread, record, inject failures."""

    name = "fake"

    def __init__(self, *, tls: ssl.SSLContext | None = None, latency: float = 0.0) -> None:
        self.latency = latency
        """Seconds every vendor call waits before its answer (a SaaS API's latency); control
        calls answer at once."""
        self.calls: list[Call] = []
        self._failures: list[Failure] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._server.tls = tls
        self._thread: threading.Thread | None = None
        self.reset_state()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>`` (or http:// without TLS), no trailing slash."""
        host, port = self._server.server_address[:2]
        scheme = "https" if self._server.tls is not None else "http"
        return f"{scheme}://{host!s}:{port}"

    @property
    def control_url(self) -> str:
        return self.url + CONTROL

    def start(self) -> FakeServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test API ----------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int | None = 500,
        retry_after: float | str | None = None,
        delay: float = 0.0,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """The next ``count`` matching calls wait ``delay`` s, then answer ``status`` with the
        vendor's error body. ``status=None`` handles the call normally (the change is made) and
        delays only the answer: with a client timeout below ``delay`` that is a lost response.
        A call matches if its path contains ``path`` and its method is ``method`` (if given).
        """
        with self._lock:
            self._failures.append(Failure(count, status, retry_after, delay, path, method))

    def reset(self) -> None:
        """Forget calls, pending failures and stored data."""
        with self._lock:
            self.calls.clear()
            self._failures.clear()
            self.reset_state()

    def calls_to(self, fragment: str) -> list[Call]:
        """Recorded calls whose path contains ``fragment``."""
        with self._lock:
            return [c for c in self.calls if fragment in c.path]

    # -- for subclasses ----------------------------------------------------------------------

    def reset_state(self) -> None:
        """Clear the vendor's stored data."""

    def state(self) -> Any:
        """The vendor's stored data, JSON-serialisable."""
        return {}

    def env(self) -> dict[str, str]:
        """Environment variables that point a Hookline connector at this fake."""
        return {}

    def route(self, request: Request) -> Response:
        return Response(404, {"error": "not found"})

    def error_response(self, status: int, request: Request) -> Response:
        """The vendor's body for an injected failure."""
        return Response(status, {"error": f"injected HTTP {status}"})

    # -- plumbing ----------------------------------------------------------------------------

    def _take_failure(self, request: Request) -> Failure | None:
        with self._lock:
            for failure in self._failures:
                if (failure.path is None or failure.path in request.path) and (
                    failure.method is None or failure.method.upper() == request.method
                ):
                    failure.count -= 1
                    if failure.count <= 0:
                        self._failures.remove(failure)
                    return failure
        return None

    def _serve(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items()}
        content_type = headers.get("Content-Type", "")
        parsed: Any = None
        if raw and "json" in content_type:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
        elif raw and "x-www-form-urlencoded" in content_type:
            parsed = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        request = Request(
            method=handler.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=headers,
            body=raw,
            json=parsed,
        )
        if parts.path.startswith(CONTROL + "/"):
            self._send(handler, self._control(request))
            return
        call = Call(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=headers,
            json=parsed,
            body=raw.decode(errors="replace"),
            received_at=time.monotonic(),
            received_wall=time.time(),
        )
        with self._lock:
            self.calls.append(call)
        failure = self._take_failure(request)
        response: Response
        if failure is not None and failure.status is not None:
            response = self.error_response(failure.status, request)
            if failure.retry_after is not None:
                response.headers["Retry-After"] = _retry_after(failure.retry_after)
        else:
            with self._lock:
                response = self.route(request)
        delay = self.latency + (failure.delay if failure is not None else 0.0)
        if delay and self._delay(handler, call, delay):
            return
        call.status = response.status
        self._send(handler, response)

    def _delay(self, handler: _Handler, call: Call, seconds: float) -> bool:
        """Wait ``seconds`` before answering; True if the answer must not be sent (stopping,
        or the client gave up: that time is recorded as ``call.abandoned_at``)."""
        deadline = time.monotonic() + seconds
        conn = handler.connection
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping.is_set():
                return True
            try:
                readable, _, _ = select.select([conn], [], [], min(left, 0.02))
                # the request was read whole: readable now means the client closed
                closed = bool(readable) and conn.recv(1) == b""
            except (OSError, ValueError):
                closed = True
            if closed:
                call.abandoned_at = time.monotonic()
                return True
        return self._stopping.is_set()

    def _send(self, handler: _Handler, response: Response) -> None:
        body = response.encode()
        try:
            handler.send_response(response.status)
            if body:
                handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(body)))
            for key, value in response.headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            if body and handler.command != "HEAD":
                handler.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout test)

    def _control(self, request: Request) -> Response:
        action = request.path[len(CONTROL) + 1 :]
        if action == "calls" and request.method == "GET":
            with self._lock:
                return Response(200, [c.to_dict() for c in self.calls])
        if action == "state" and request.method == "GET":
            with self._lock:
                return Response(200, self.state())
        if action == "reset" and request.method == "POST":
            self.reset()
            return Response(200, {"ok": True})
        if action == "fail" and request.method == "POST":
            spec: Mapping[str, Any] = request.json or {}
            self.fail_next(
                int(spec.get("count", 1)),
                status=spec.get("status", 500),
                retry_after=spec.get("retry_after"),
                delay=float(spec.get("delay", 0.0)),
                path=spec.get("path"),
                method=spec.get("method"),
            )
            return Response(200, {"ok": True})
        return Response(404, {"error": f"unknown control endpoint {request.method} {action}"})


def _retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def now_iso() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
