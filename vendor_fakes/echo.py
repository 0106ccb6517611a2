"""Generic HTTP endpoint for ``http.request``: echoes every request back as JSON.

``/status/<code>`` answers that status with ``{"message": "status <code>"}``; any other path
answers 200 ``{"method", "path", "query", "headers", "json", "form", "body"}``.
"""

from __future__ import annotations

from typing import Any

from vendor_fakes.base import FakeServer, Request, Response


class FakeEcho(FakeServer):
    name = "echo"

    def env(self) -> dict[str, str]:
        return {"HOOKLINE_FAKE_ECHO_URL": self.url, "ACCOUNTING_API_URL": f"{self.url}/accounting"}

    def error_response(self, status: int, request: Request) -> Response:
        return Response(status, {"message": f"injected HTTP {status}"})

    def route(self, request: Request) -> Response:
        if request.path.startswith("/status/"):
            code = int(request.path.rsplit("/", 1)[1])
            return Response(code, {"message": f"status {code}"} if code != 204 else None)
        is_form = "x-www-form-urlencoded" in (request.header("Content-Type") or "")
        body: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": request.headers,
            "json": None if is_form else request.json,
            "form": request.json if is_form else None,
            "body": request.body.decode(errors="replace"),
        }
        return Response(200, body)
