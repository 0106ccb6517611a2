"""Inventory actions over an injected `httpx.Client` whose base URL is ``INVENTORY_API_URL``.

The REST contract the inventory service must speak is in docs/connectors.md#inventory:
``PUT /services/{service_id}`` (create or replace, 201/200) and ``DELETE /services/{id}``
(204, or 404 when already gone). Both are idempotent, so a retried step is harmless.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr

from hookline.connectors._http import error_for_exception, error_for_status, json_or_text
from hookline.connectors.errors import PermanentError
from hookline.connectors.registry import ClientContext, Connector
from hookline.connectors.settings import ConnectorSettings

ServiceStatus = Literal["active", "provisioning", "suspended", "degraded", "outage", "retired"]


class InventorySettings(ConnectorSettings):
    """``connections.inventory``."""

    url: str | None = Field(
        default=None,
        description="Inventory API base URL.",
        json_schema_extra={"env": "INVENTORY_API_URL"},
    )
    token: SecretStr | None = Field(
        default=None, description="Bearer token.", json_schema_extra={"env": "INVENTORY_API_TOKEN"}
    )


def make_client(settings: InventorySettings, context: ClientContext) -> httpx.Client:
    """An httpx client on the inventory API's base URL, with its bearer token."""
    token = settings.token.get_secret_value() if settings.token else ""
    return httpx.Client(
        base_url=str(settings.url).rstrip("/") + "/",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        verify=context.verify(),
        timeout=settings.timeout,
    )


class UpsertServiceOutput(TypedDict):
    service_id: str
    created: bool
    status: str


class RemoveServiceOutput(TypedDict):
    service_id: str
    removed: bool


def error_message(body: Any) -> str:
    """The inventory API's ``{"error": {"code", "message"}}`` as one line."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code, message = body["error"].get("code"), body["error"].get("message")
        return f"{code}: {message}" if code else str(message)
    return str(body)


def check_id(name: str, value: str) -> None:
    """Refuse an id that is not one path segment of its own: empty, ``.`` or ``..`` would
    address the collection (``DELETE /services/..`` is ``DELETE /``) instead of one item."""
    if not isinstance(value, str) or value.strip() in ("", ".", ".."):
        raise PermanentError(
            f"inventory: {name} {value!r} is not a valid id (empty, '.' and '..' are refused: "
            "they would address the whole collection)",
            connector="inventory",
        )


def _send(
    client: httpx.Client,
    method: str,
    service_id: str,
    *,
    json: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    ok: tuple[int, ...],
) -> httpx.Response:
    check_id("service_id", service_id)
    path = f"services/{quote(service_id, safe='')}"
    what = f"{method} /{path}"
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    try:
        response = client.request(method, path, json=json, headers=headers)
    except httpx.HTTPError as exc:
        mapped = error_for_exception("inventory", exc, what=what)
        if mapped is None:
            raise PermanentError(
                f"inventory: {what} failed: {exc}", connector="inventory"
            ) from None
        raise mapped from None
    if response.status_code not in ok:
        body = json_or_text(response) if response.content else ""
        raise error_for_status(
            "inventory", response.status_code, response.headers, error_message(body), what=what
        )
    return response


def upsert_service(
    client: httpx.Client,
    *,
    service_id: str,
    service_type: str,
    status: ServiceStatus = "active",
    account_id: str | None = None,
    location: dict[str, Any] | str | None = None,
    attributes: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> UpsertServiceOutput:
    """Create or replace a service in the inventory (PUT /services/{service_id})."""
    body: dict[str, Any] = {
        "service_id": service_id,
        "service_type": service_type,
        "status": status,
        "account_id": account_id,
        "location": location,
        "attributes": attributes or {},
    }
    response = _send(
        client, "PUT", service_id, json=body, idempotency_key=idempotency_key, ok=(200, 201)
    )
    return {"service_id": service_id, "created": response.status_code == 201, "status": status}


def remove_service(
    client: httpx.Client,
    *,
    service_id: str,
    idempotency_key: str | None = None,
) -> RemoveServiceOutput:
    """Remove a service (DELETE /services/{service_id}); already gone gives removed=False."""
    response = _send(
        client, "DELETE", service_id, idempotency_key=idempotency_key, ok=(200, 204, 404)
    )
    return {"service_id": service_id, "removed": response.status_code != 404}


CONNECTOR = Connector(
    name="inventory",
    settings=InventorySettings,
    client=make_client,
    requires=("url", "token"),
    actions=(upsert_service, remove_service),
)
