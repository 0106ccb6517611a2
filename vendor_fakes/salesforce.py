"""Fake Salesforce REST API: ``/services/data/vXX.X/sobjects/<object>/<id>`` (GET, PATCH,
DELETE), ``POST /sobjects/<object>`` and upsert ``PATCH /sobjects/<object>/<field>/<value>``.

Speaks like Salesforce: bearer session id, errors as ``[{"message", "errorCode", "fields"}]``
(INVALID_SESSION_ID 401, NOT_FOUND 404, INVALID_FIELD / MALFORMED_ID 400), upsert answers
201 ``{"id", "success", "errors", "created": true}`` or 200 with ``"created": false``.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from vendor_fakes.base import FakeServer, Request, Response

SESSION_ID = "00DHOOKLINE!fake.salesforce.session"
USERNAME = "integration@hookline.example"
PASSWORD = "fake-salesforce-password"
SECURITY_TOKEN = "fakeSecurityToken"
_LOGIN = re.compile(r"^/services/Soap/u/\d+\.\d+$")
_FAULT = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>'
    "<faultcode>sf:INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: Invalid username, "
    "password, security token; or user locked out.</faultstring><detail><sf:LoginFault>"
    "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>Invalid username, "
    "password, security token; or user locked out.</sf:exceptionMessage></sf:LoginFault>"
    "</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
)
API_VERSION = "59.0"

#: sObject -> (id prefix, custom fields it has).
OBJECTS: dict[str, tuple[str, set[str]]] = {
    "Account": (
        "001",
        {
            "Latest_Service_Addition__c",
            "Last_Service_Date__c",
            "Service_Status__c",
            "SolveForce_Account_Id__c",
        },
    ),
    "Contact": ("003", {"SolveForce_Contact_Id__c"}),
    "Case": ("500", {"SolveForce_Ticket_Id__c"}),
}
_PATH = re.compile(
    r"^/services/data/v(\d+\.\d+)/sobjects/([A-Za-z0-9_]+)(?:/([^/]+))?(?:/([^/]+))?$"
)
_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def sf_error(status: int, code: str, message: str, fields: list[str] | None = None) -> Response:
    return Response(status, [{"message": message, "errorCode": code, "fields": fields or []}])


class FakeSalesforce(FakeServer):
    name = "salesforce"

    def reset_state(self) -> None:
        self.records: dict[str, dict[str, dict[str, Any]]] = {o: {} for o in OBJECTS}
        self._ids = itertools.count(1)

    def state(self) -> Any:
        return {obj: list(rows.values()) for obj, rows in self.records.items()}

    def env(self) -> dict[str, str]:
        return {
            "SALESFORCE_INSTANCE_URL": self.url,
            "SALESFORCE_SESSION_ID": SESSION_ID,
            "SALESFORCE_API_VERSION": API_VERSION,
        }

    def add_record(self, sobject: str, fields: dict[str, Any]) -> str:
        """Seed a record; returns its 18-character id."""
        with self._lock:
            record_id = f"{OBJECTS[sobject][0]}HOOK{next(self._ids):011d}"
            self.records[sobject][record_id] = {"Id": record_id, **fields}
            return record_id

    def error_response(self, status: int, request: Request) -> Response:
        if _LOGIN.match(request.path):
            return Response(status, "<html>Service Unavailable</html", content_type="text/html")
        if status == 401:
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if status == 429:
            return sf_error(429, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        return sf_error(status, "SERVER_ERROR", "An unexpected error occurred (injected).")

    def login_domain(self) -> str:
        """A ``SALESFORCE_DOMAIN`` that makes simple-salesforce's SOAP login reach this fake.

        simple-salesforce logs in at ``https://{domain}.salesforce.com/services/Soap/u/{v}``;
        ending the domain in ``?`` turns the rest of that URL into a query string.
        """
        return f"{self.url.removeprefix('https://')}/services/Soap/u/{API_VERSION}?"

    def _login(self, request: Request) -> Response:
        body = request.body.decode(errors="replace")
        user = re.search(r"<n1:username>(.*?)</n1:username>", body)
        secret = re.search(r"<n1:password>(.*?)</n1:password>", body)
        ok = (
            user
            and secret
            and (user.group(1), secret.group(1))
            == (
                USERNAME,
                PASSWORD + SECURITY_TOKEN,
            )
        )
        if not ok:
            return Response(500, _FAULT, content_type="text/xml")
        server = f"{self.url}/services/Soap/u/{API_VERSION}/00DHOOKLINE"
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<serverUrl>{server}</serverUrl><sessionId>{SESSION_ID}</sessionId>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Response(200, xml, content_type="text/xml")

    def route(self, request: Request) -> Response:
        if _LOGIN.match(request.path) and request.method == "POST":
            return self._login(request)
        if request.header("Authorization") != f"Bearer {SESSION_ID}":
            return self.error_response(401, request)
        match = _PATH.match(request.path)
        if match is None:
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        _version, sobject, first, second = match.groups()
        if sobject not in OBJECTS:
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        rows = self.records[sobject]
        if first is None:
            if request.method == "POST":
                return self._create(sobject, rows, request)
            return sf_error(
                405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed"
            )
        if second is not None:
            if request.method != "PATCH":
                return sf_error(405, "METHOD_NOT_ALLOWED", "Use PATCH to upsert")
            return self._upsert(sobject, rows, first, second, request)
        if not _ID.match(first):
            return sf_error(
                400, "MALFORMED_ID", f"{sobject} ID: id value of incorrect type: {first}"
            )
        record = rows.get(first)
        if record is None:
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if request.method == "GET":
            return Response(200, {"attributes": {"type": sobject}, **record})
        if request.method == "PATCH":
            fields = self._fields(sobject, request)
            if isinstance(fields, Response):
                return fields
            record.update(fields)
            return Response(204)
        if request.method == "DELETE":
            del rows[first]
            return Response(204)
        return sf_error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed")

    @staticmethod
    def _fields(sobject: str, request: Request) -> dict[str, Any] | Response:
        body = request.json
        if not isinstance(body, dict):
            return sf_error(400, "JSON_PARSER_ERROR", "The request body is not a JSON object")
        custom = OBJECTS[sobject][1]
        for name in body:
            if name in {"Id", "attributes"}:
                return sf_error(400, "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to set {name}")
            if name.endswith("__c") and name not in custom:
                return sf_error(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type {sobject}",
                )
        date = body.get("Last_Service_Date__c")
        if date is not None and not re.match(r"^\d{4}-\d{2}-\d{2}", str(date)):
            return sf_error(
                400,
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of date from VALUE_STRING value {date}",
                ["Last_Service_Date__c"],
            )
        return dict(body)

    def _create(self, sobject: str, rows: dict[str, dict[str, Any]], request: Request) -> Response:
        fields = self._fields(sobject, request)
        if isinstance(fields, Response):
            return fields
        record_id = self.add_record(sobject, fields)
        return Response(201, {"id": record_id, "success": True, "errors": []})

    def _upsert(
        self,
        sobject: str,
        rows: dict[str, dict[str, Any]],
        field: str,
        value: str,
        request: Request,
    ) -> Response:
        if field != "Id" and field not in OBJECTS[sobject][1]:
            return sf_error(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field}",
            )
        fields = self._fields(sobject, request)
        if isinstance(fields, Response):
            return fields
        matches = [r for r in rows.values() if str(r.get(field)) == value]
        if len(matches) > 1:
            return Response(
                300,
                [f"/services/data/v{API_VERSION}/sobjects/{sobject}/{r['Id']}" for r in matches],
            )
        if matches:
            matches[0].update(fields)
            return Response(
                200, {"id": matches[0]["Id"], "success": True, "errors": [], "created": False}
            )
        record_id = self.add_record(sobject, {field: value, **fields})
        return Response(201, {"id": record_id, "success": True, "errors": [], "created": True})
