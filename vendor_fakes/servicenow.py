"""Fake ServiceNow Table API: ``/api/now/table/<table>[/<sys_id>]`` with basic auth.

Speaks like ServiceNow: ``sysparm_query`` (``field=value`` terms joined by ``^``, ``^^`` a
literal caret, ``ORDERBY``/``ORDERBYDESC``), ``sysparm_limit``/``sysparm_offset``,
``sysparm_display_value`` (``false``/``true``/``all``), the ``X-Total-Count`` header, and errors
as ``{"error": {"message", "detail"}, "status": "failure"}``.
"""

from __future__ import annotations

import base64
import itertools
import re
import uuid
from typing import Any

from vendor_fakes.base import FakeServer, Request, Response, now_iso

USERNAME = "hookline.integration"
PASSWORD = "fake-servicenow-password"

PREFIXES = {"incident": "INC", "change_request": "CHG", "problem": "PRB", "sc_task": "SCTASK"}
INCIDENT_COLUMNS = (
    "short_description", "description", "category", "subcategory", "assignment_group",
    "caller_id", "correlation_id", "correlation_display", "close_code", "close_notes",
)  # fmt: skip
_TABLE = re.compile(r"^/api/now/(?:v\d+/)?table/([A-Za-z0-9_]+)(?:/([A-Za-z0-9]+))?$")


def error(status: int, message: str, detail: str | None = None) -> Response:
    return Response(status, {"error": {"message": message, "detail": detail}, "status": "failure"})


def split_query(query: str) -> list[str]:
    """Split an encoded query on ``^`` but not on the escaped ``^^``."""
    terms, current, i = [], "", 0
    while i < len(query):
        if query[i] == "^":
            if query[i + 1 : i + 2] == "^":
                current += "^"
                i += 2
                continue
            terms.append(current)
            current = ""
        else:
            current += query[i]
        i += 1
    terms.append(current)
    return [t for t in terms if t]


class FakeServiceNow(FakeServer):
    name = "servicenow"

    def reset_state(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in PREFIXES}
        self._numbers = itertools.count(10001)

    def state(self) -> Any:
        return {table: list(rows.values()) for table, rows in self.tables.items()}

    @property
    def incidents(self) -> list[dict[str, Any]]:
        return list(self.tables["incident"].values())

    def env(self) -> dict[str, str]:
        return {
            "SERVICENOW_INSTANCE": self.url,
            "SERVICENOW_USERNAME": USERNAME,
            "SERVICENOW_PASSWORD": PASSWORD,
        }

    def error_response(self, status: int, request: Request) -> Response:
        if status == 429:
            return error(429, "Rate limit exceeded", "Too many requests for user")
        if status == 401:
            return error(401, "User Not Authenticated", "Required to provide Auth information")
        return error(status, "Internal server error", "Transaction failed (injected)")

    def route(self, request: Request) -> Response:
        auth = request.header("Authorization") or ""
        expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        if auth != f"Basic {expected}":
            return self.error_response(401, request)
        match = _TABLE.match(request.path)
        if match is None:
            return error(400, "Requested URI does not represent any resource")
        table, sys_id = match.groups()
        if table not in self.tables and not table.startswith("u_"):
            return error(400, f"Invalid table {table}")
        rows = self.tables.setdefault(table, {})
        if request.method == "GET" and sys_id is None:
            return self._list(rows, request)
        if request.method == "POST" and sys_id is None:
            return self._insert(table, rows, request)
        if sys_id is None:
            return error(405, "Method not supported")
        row = rows.get(sys_id)
        if row is None:
            return error(
                404,
                "No Record found",
                "Record doesn't exist or ACL restricts the record retrieval",
            )
        if request.method == "GET":
            return Response(200, {"result": self._show(row, request)})
        if request.method in {"PATCH", "PUT"}:
            return self._update(row, request)
        if request.method == "DELETE":
            del rows[sys_id]
            return Response(204)
        return error(405, "Method not supported")

    @staticmethod
    def _show(row: dict[str, Any], request: Request) -> dict[str, Any]:
        mode = request.query.get("sysparm_display_value", "false")
        fields = request.query.get("sysparm_fields")
        if fields:
            row = {k: v for k, v in row.items() if k in fields.split(",")}
        if mode == "all":
            return {k: {"value": v, "display_value": v} for k, v in row.items()}
        return dict(row)

    def _list(self, rows: dict[str, dict[str, Any]], request: Request) -> Response:
        found = list(rows.values())
        for term in split_query(request.query.get("sysparm_query", "")):
            if term.startswith("ORDERBYDESC"):
                key = term[len("ORDERBYDESC") :]
                # Creation order breaks ties (timestamps have one-second resolution).
                found = found[::-1]
                found.sort(key=lambda r: str(r.get(key, "")), reverse=True)
            elif term.startswith("ORDERBY"):
                key = term[len("ORDERBY") :]
                found.sort(key=lambda r: str(r.get(key, "")))
            elif "!=" in term:
                name, value = term.split("!=", 1)
                found = [r for r in found if str(r.get(name, "")) != value]
            elif "=" in term:
                name, value = term.split("=", 1)
                found = [r for r in found if str(r.get(name, "")) == value]
            else:
                return error(400, f"Invalid query term {term!r}")
        total = len(found)
        offset = int(request.query.get("sysparm_offset") or 0)
        limit = int(request.query.get("sysparm_limit") or 10000)
        page = [self._show(r, request) for r in found[offset : offset + limit]]
        return Response(200, {"result": page}, headers={"X-Total-Count": str(total)})

    @staticmethod
    def _values(request: Request) -> dict[str, Any] | Response:
        body = request.json
        if not isinstance(body, dict):
            return error(400, "Exception while reading request", "Request body is not JSON")
        values: dict[str, Any] = {}
        for key, value in body.items():
            if isinstance(value, dict):  # pysnc may send {"value": ..., "display_value": ...}
                value = value.get("value")
            values[key] = "" if value is None else str(value)
        return values

    def _insert(self, table: str, rows: dict[str, dict[str, Any]], request: Request) -> Response:
        values = self._values(request)
        if isinstance(values, Response):
            return values
        if table == "incident" and not values.get("short_description"):
            return error(
                403,
                "Operation Failed",
                "Data Policy Exception: \n\tShort description is mandatory",
            )
        for name in ("impact", "urgency", "priority", "state"):
            if values.get(name) and not values[name].isdigit():
                return error(400, "Operation Failed", f"Invalid value for {name}: {values[name]}")
        sys_id = uuid.uuid4().hex
        row: dict[str, Any] = {
            "sys_id": sys_id,
            "sys_created_on": now_iso(),
            "sys_updated_on": now_iso(),
            "active": "true",
        }
        if table in PREFIXES:
            row["number"] = f"{PREFIXES[table]}{next(self._numbers):07d}"
        if table == "incident":
            # ServiceNow returns every column, empty ones included.
            row.update({"state": "1", "impact": "3", "urgency": "3", "priority": "5"})
            row.update({k: "" for k in INCIDENT_COLUMNS if k not in row})
        row.update(values)
        row["work_notes"] = row["comments"] = ""
        rows[sys_id] = row
        return Response(201, {"result": self._show(row, request)})

    def _update(self, row: dict[str, Any], request: Request) -> Response:
        values = self._values(request)
        if isinstance(values, Response):
            return values
        if values.get("state") == "6" and not (
            (values.get("close_code") or row.get("close_code"))
            and (values.get("close_notes") or row.get("close_notes"))
        ):
            return error(
                403,
                "Operation Failed",
                "Data Policy Exception: \n\tResolution code, Resolution notes are mandatory",
            )
        for journal in ("work_notes", "comments"):
            if values.get(journal):
                row.setdefault(f"{journal}_history", []).append(values.pop(journal))
        row.update(values)
        if row.get("state") in {"6", "7", "8"}:
            row["active"] = "false"
        row["sys_updated_on"] = now_iso()
        return Response(200, {"result": self._show(row, request)})
