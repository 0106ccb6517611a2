"""Shared plumbing: HTTP status and network failures -> connector errors, TLS, timeouts.

Every connector funnels failures through `error_for_status` and `error_for_exception`, so
"what is transient" is decided in exactly one place.
"""

from __future__ import annotations

import email.utils
import socket
import ssl
import time
import urllib.error
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests
from requests.adapters import HTTPAdapter

from hookline.connectors.errors import ConnectorError, PermanentError, TransientError

#: Longest vendor message kept in an error (a 5xx HTML page is not useful past this).
MAX_MESSAGE = 500


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), else None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def shorten(text: str) -> str:
    """One line, at most MAX_MESSAGE characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def safe_url(url: str) -> str:
    """``scheme://host[:port]/path`` without credentials or query string (they may hold secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def error_for_status(
    connector: str,
    status: int,
    headers: Mapping[str, str],
    message: str,
    *,
    what: str,
    now: float | None = None,
) -> ConnectorError:
    """The error for a vendor's HTTP error answer: 429 and 5xx are transient, the rest not."""
    detail = shorten(message) if message else "(no message)"
    text = f"{connector}: {what} failed: HTTP {status}: {detail}"
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(_header(headers, "Retry-After"), now=now)
        return TransientError(text, connector=connector, status=status, retry_after=retry_after)
    if status == 401:
        text += f" (check the credentials: docs/connectors.md#{connector})"
    return PermanentError(text, connector=connector, status=status)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo.extend([e.__cause__, e.__context__])
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
        todo.extend(a for a in e.args if isinstance(a, BaseException))
    return seen


def error_for_exception(connector: str, exc: BaseException, *, what: str) -> ConnectorError | None:
    """The error for a network failure (timeout, refused, reset, TLS), or None if it is not one."""
    chain = _chain(exc)
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or any(
        "CERTIFICATE_VERIFY_FAILED" in str(e) for e in chain
    ):
        return PermanentError(
            f"{connector}: {what} failed: the server's TLS certificate is not trusted "
            "(a private CA can be given with SSL_CERT_FILE)",
            connector=connector,
        )
    timeouts = (
        TimeoutError,
        requests.Timeout,
        httpx.TimeoutException,
    )
    if any(isinstance(e, timeouts) for e in chain):
        return TransientError(f"{connector}: {what} timed out", connector=connector)
    network = (
        ConnectionError,  # refused, reset, aborted (builtin OSError subclasses)
        requests.ConnectionError,
        httpx.TransportError,
        urllib.error.URLError,
        socket.gaierror,
    )
    hit = next((e for e in chain if isinstance(e, network)), None)
    if hit is not None:
        reason = next(
            (type(e).__name__ for e in chain if isinstance(e, ConnectionError | socket.gaierror)),
            type(hit).__name__,
        )
        return TransientError(f"{connector}: {what} failed: {reason}", connector=connector)
    return None


SDKError = Callable[[Exception, str], ConnectorError | None]
"""Maps an SDK's own exception (and what was being done) to our error; None: not one of its."""


def _none(exc: Exception, what: str) -> None:
    return None


@contextmanager
def connector_errors(connector: str, what: str, sdk_error: SDKError = _none) -> Iterator[None]:
    """Raise what fails in the block as our errors: the SDK's exceptions as ``sdk_error`` maps
    them, network failures (``OSError``, which ``requests``' exceptions are) as
    `error_for_exception` does. Our own errors (the session hook's) and anything else go up
    as they are."""
    try:
        yield
    except ConnectorError:
        raise
    except Exception as exc:
        mapped = sdk_error(exc, what)
        if mapped is None and isinstance(exc, OSError):
            mapped = error_for_exception(connector, exc, what=what)
        if mapped is None:
            raise
        raise mapped from None


def ca_file(environ: Mapping[str, str]) -> str | None:
    """The private CA bundle to trust: ``SSL_CERT_FILE``, else ``REQUESTS_CA_BUNDLE``."""
    return environ.get("SSL_CERT_FILE") or environ.get("REQUESTS_CA_BUNDLE") or None


def ssl_context(environ: Mapping[str, str]) -> ssl.SSLContext:
    """A verifying SSL context that trusts the system CAs, or only the CA file if one is set."""
    return ssl.create_default_context(cafile=ca_file(environ))


class TimeoutAdapter(HTTPAdapter):
    """A requests adapter with a default timeout and no urllib3 retries.

    pysnc and simple-salesforce never pass a timeout; without this a hung vendor hangs the step.
    ``max_retries=0``: the engine's step runner owns retries (see docs/connectors.md#retries).
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, *args, **kwargs)


class _Session(requests.Session):
    """A session whose CA bundle is the one we chose, not the process's REQUESTS_CA_BUNDLE.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` from ``os.environ`` override
    ``session.verify``; connectors take their environment as an argument (``environ``), so the
    bundle chosen from it must win, as it does for the httpx and slack_sdk clients.
    """

    def merge_environment_settings(  # type: ignore[override]
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None or verify is True:
            settings["verify"] = self.verify
        return settings


def requests_session(
    connector: str,
    *,
    timeout: float,
    environ: Mapping[str, str],
    message_of: Callable[[requests.Response], str],
) -> requests.Session:
    """A requests session that verifies TLS, times out, never retries, and raises our errors.

    The response hook turns every 4xx/5xx into a `TransientError`/`PermanentError` before the
    SDK sees it, because SDKs drop the status and the ``Retry-After`` header on the way up.
    """
    session = _Session()
    session.verify = ca_file(environ) or True
    adapter = TimeoutAdapter(timeout)
    session.mount("https://", adapter)
    session.mount("http://", adapter)

    def raise_for_status(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.status_code >= 400:
            what = f"{response.request.method} {safe_url(response.url)}"
            raise error_for_status(
                connector,
                response.status_code,
                response.headers,
                message_of(response),
                what=what,
            )

    session.hooks["response"].append(raise_for_status)
    return session


def json_or_text(response: requests.Response | httpx.Response) -> Any:
    """The parsed JSON body, else the text."""
    try:
        return response.json()
    except ValueError:
        return response.text
