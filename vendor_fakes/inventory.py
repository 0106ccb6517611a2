"""Fake inventory API implementing the contract in docs/connectors.md#inventory.

    PUT    /v1/services/{service_id}   create (201) or replace (200); body {"service": {...}}
    GET    /v1/services/{service_id}   200 {"service": {...}} or 404
    GET    /v1/services                200 {"services": [...]}
    DELETE /v1/services/{service_id}   204, or 404 when there is no such service
Errors: {"error": {"code", "message"}}; 401 without the bearer token, 422 on bad input.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from vendor_fakes.base import FakeServer, Request, Response, now_iso

TOKEN = "inv-hookline-fake-token"
STATUSES = {"active", "provisioning", "suspended", "degraded", "outage", "retired"}
PREFIX = "/v1/services"


def inv_error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


class FakeInventory(FakeServer):
    name = "inventory"

    def reset_state(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}

    def state(self) -> Any:
        return {"services": list(self.services.values())}

    def env(self) -> dict[str, str]:
        return {"INVENTORY_API_URL": f"{self.url}/v1", "INVENTORY_API_TOKEN": TOKEN}

    def error_response(self, status: int, request: Request) -> Response:
        if status == 429:
            return inv_error(429, "rate_limited", "slow down")
        if status == 401:
            return inv_error(401, "unauthorized", "invalid bearer token")
        return inv_error(status, "internal", "inventory database unavailable (injected)")

    def route(self, request: Request) -> Response:
        if request.header("Authorization") != f"Bearer {TOKEN}":
            return self.error_response(401, request)
        if request.path == PREFIX and request.method == "GET":
            return Response(200, {"services": list(self.services.values())})
        if not request.path.startswith(PREFIX + "/"):
            return inv_error(404, "not_found", f"no route {request.path}")
        service_id = unquote(request.path[len(PREFIX) + 1 :])
        if request.method == "GET":
            found = self.services.get(service_id)
            if found is None:
                return inv_error(404, "not_found", f"no service {service_id}")
            return Response(200, {"service": found})
        if request.method == "PUT":
            return self._put(service_id, request)
        if request.method == "DELETE":
            if self.services.pop(service_id, None) is None:
                return inv_error(404, "not_found", f"no service {service_id}")
            return Response(204)
        return inv_error(405, "method_not_allowed", request.method)

    def _put(self, service_id: str, request: Request) -> Response:
        body = request.json
        if not isinstance(body, dict):
            return inv_error(400, "bad_request", "body must be a JSON object")
        if body.get("service_id", service_id) != service_id:
            return inv_error(422, "validation_error", "service_id in body and path differ")
        if not isinstance(body.get("service_type"), str) or not body["service_type"]:
            return inv_error(422, "validation_error", "service_type is required")
        if body.get("status", "active") not in STATUSES:
            valid = ", ".join(sorted(STATUSES))
            return inv_error(422, "validation_error", f"status must be one of {valid}")
        created = service_id not in self.services
        service = {**body, "service_id": service_id, "updated_at": now_iso()}
        self.services[service_id] = service
        return Response(201 if created else 200, {"service": service})
