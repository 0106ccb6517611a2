"""The receiver's OpenAPI 3.0 document (served at /openapi.json; schemathesis fuzzes it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _json(schema: str) -> dict[str, Any]:
    """A JSON body of the document's schema ``schema``."""
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _strings(*names: str) -> dict[str, Any]:
    """String properties."""
    return {name: {"type": "string"} for name in names}


def _get(summary: str, operation_id: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "operationId": operation_id, "responses": responses}}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": _json("Error")}
    if retry_after:
        out["headers"] = {
            "Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}
        }
    return out


def openapi_schema(sources: Sequence[str]) -> dict[str, Any]:
    """The document; ``sources`` are listed as examples of the path parameter."""
    sig_headers = [
        ("X-SolveForce-Signature", "solveforce: sha256=<hex HMAC-SHA256(secret, body)>"),
        ("X-Hub-Signature-256", "github: sha256=<hex>"),
        ("X-Slack-Signature", "slack: v0=<hex>"),
        ("X-Slack-Request-Timestamp", "slack: Unix seconds"),
        ("Stripe-Signature", "stripe: t=<ts>,v1=<hex>"),
        ("webhook-id", "Standard Webhooks message id"),
        ("webhook-timestamp", "Standard Webhooks: Unix seconds"),
        ("webhook-signature", "Standard Webhooks: v1,<base64>"),
    ]
    params: list[dict[str, Any]] = [
        {
            "name": "source",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "examples": {s: {"value": s} for s in sources} or {"example": {"value": "solveforce"}},
        }
    ]
    params += [
        {
            "name": n,
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": d,
        }
        for n, d in sig_headers
    ]
    return {
        "openapi": "3.0.3",
        "info": {"title": "Hookline receiver", "version": "1"},
        "paths": {
            "/webhooks/{source}": {
                "post": {
                    "summary": "Receive one signed webhook event",
                    "operationId": "receive_webhook",
                    "parameters": params,
                    "requestBody": {"required": True, "content": _json("Event")},
                    "responses": {
                        "200": {
                            "description": "Stored (accepted) or already stored (duplicate);"
                            " a Slack interactivity form is answered with an empty body.",
                            "content": _json("Ack"),
                        },
                        "400": _error("Invalid JSON or envelope; `field` says which."),
                        "401": _error("Missing or invalid signature."),
                        "403": _error("Client address outside the source's allowlist."),
                        "404": _error(
                            "Unknown source, or an optional source with no secret set"
                            " (`source_not_configured`)."
                        ),
                        "405": _error("Method not allowed."),
                        "413": _error("Body over the limit."),
                        "415": _error(
                            "Not application/json (slack sources also take"
                            " application/x-www-form-urlencoded)."
                        ),
                        "429": _error("Rate limited.", retry_after=True),
                        "503": _error("Cannot store the event now.", retry_after=True),
                    },
                }
            },
            "/healthz": _get("Alive", "healthz", {"200": {"description": "The process answers."}}),
            "/readyz": _get(
                "Ready: inbox writable, Prefect reachable, extra checks",
                "readyz",
                {
                    "200": {"description": "Every check passes."},
                    "503": {"description": "At least one check fails; the list says which."},
                },
            ),
            "/metrics": _get(
                "Prometheus metrics", "metrics", {"200": {"description": "Prometheus text format."}}
            ),
        },
        "components": {
            "schemas": {
                "Event": {
                    "type": "object",
                    "description": "SolveForce envelope; other sources send their own JSON.",
                    "properties": {
                        **_strings("event_type", "event_id", "timestamp"),
                        "data": {"type": "object"},
                        "account": {"type": "object"},
                    },
                },
                "Ack": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"type": "string", "enum": ["accepted", "duplicate"]},
                        **_strings("event_id", "challenge"),
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": _strings("error", "field", "detail"),
                },
            }
        },
    }
