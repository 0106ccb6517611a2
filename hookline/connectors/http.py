"""``http.request``: any HTTP API (accounting systems and everything else) over `httpx.Client`.

The client is built by `hookline.connectors.build_client("http")`: TLS verified (a private CA
via ``SSL_CERT_FILE``), no redirects followed silently, no retries (the step runner owns them).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import httpx

from hookline.connectors._http import (
    error_for_exception,
    error_for_status,
    json_or_text,
    safe_url,
)
from hookline.connectors.errors import PermanentError

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class RequestOutput(TypedDict):
    status: int
    headers: dict[str, str]
    body: Any


def _message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "errors"):
            if key in body:
                value = body[key]
                if isinstance(value, dict) and "message" in value:
                    return str(value["message"])
                return str(value)
    return str(body)


def request(
    client: httpx.Client,
    *,
    url: str,
    method: Method = "POST",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    json: dict[str, Any] | list[Any] | None = None,
    form: dict[str, str] | None = None,
    expected_status: list[int] | None = None,
    timeout: float | None = None,
    idempotency_header: str | None = None,
    idempotency_key: str | None = None,
) -> RequestOutput:
    """Send one HTTP request; outputs the status, headers and parsed (JSON or text) body.

    Any 2xx is success unless ``expected_status`` lists the accepted statuses. Otherwise 429
    and 5xx raise TransientError, the rest PermanentError with the server's message.
    ``idempotency_header`` (e.g. ``Idempotency-Key``) sends the step's idempotency key.
    """
    if json is not None and form is not None:
        raise PermanentError("http.request: give json or form, not both", connector="http")
    if not url.startswith(("https://", "http://")):
        raise PermanentError(
            f"http.request: url must start with https:// or http://, not {url[:40]!r}",
            connector="http",
        )
    sent = dict(headers or {})
    if idempotency_header and idempotency_key:
        sent.setdefault(idempotency_header, idempotency_key)
    what = f"{method} {safe_url(url)}"
    try:
        response = client.request(
            method,
            url,
            headers=sent,
            params=params,
            json=json,
            data=form,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
    except httpx.HTTPError as exc:
        mapped = error_for_exception("http", exc, what=what)
        if mapped is None:
            raise PermanentError(f"http: {what} failed: {exc}", connector="http") from None
        raise mapped from None
    body = json_or_text(response) if response.content else None
    ok = (
        response.status_code in expected_status
        if expected_status
        else 200 <= response.status_code < 300
    )
    if not ok:
        raise error_for_status(
            "http", response.status_code, response.headers, _message(body), what=what
        )
    return {"status": response.status_code, "headers": dict(response.headers), "body": body}
