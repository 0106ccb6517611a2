"""ServiceNow actions over an injected `pysnc.ServiceNowClient` (Table API).

Idempotency: `create_incident` first looks its ``correlation_id`` up (by default the engine's
reserved ``idempotency_key``) among open incidents, so a retry of the same step finds the
incident it opened instead of opening a second one, while a per-service correlation id
(``solveforce:svc_voice_001``) opens a new incident once the previous one is resolved.

`make_client` builds the client with pysnc's mounted urllib3 retries turned off
(``auto_retry=False``): the engine's step runner owns retries.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from typing import Any, TypedDict

import requests
from pydantic import Field, SecretStr
from pysnc import ServiceNowClient
from pysnc.exceptions import (
    AuthenticationException,
    DeleteException,
    InsertException,
    InstanceException,
    NotFoundException,
    RequestException,
    RoleException,
    UpdateException,
)

from hookline.connectors._http import connector_errors, json_or_text, requests_session, shorten
from hookline.connectors.errors import ConnectorError, PermanentError
from hookline.connectors.registry import ClientContext, Connector
from hookline.connectors.settings import ConnectorSettings

#: ServiceNow's incident.correlation_id is a string(100).
CORRELATION_MAX = 100
#: incident.state values that mean the incident is already resolved or closed.
RESOLVED_STATES = {"6", "7", "8"}


class IncidentOutput(TypedDict):
    number: str
    sys_id: str
    link: str
    created: bool


class UpdateIncidentOutput(TypedDict):
    number: str
    sys_id: str
    link: str


class ResolveIncidentOutput(TypedDict):
    number: str | None
    sys_id: str | None
    link: str | None
    resolved: bool


class GetIncidentOutput(TypedDict):
    found: bool
    number: str | None
    sys_id: str | None
    link: str | None
    state: str | None
    resolved: bool


class RecordOutput(TypedDict):
    sys_id: str
    number: str | None
    link: str


def error_message(response: requests.Response) -> str:
    """ServiceNow's ``{"error": {"message", "detail"}, "status": "failure"}`` as one line."""
    body = json_or_text(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = str(body["error"].get("message") or "")
        detail = body["error"].get("detail")
        return f"{message} ({detail})" if detail else message
    return str(body)


class ServiceNowSettings(ConnectorSettings):
    """``connections.servicenow``."""

    instance: str | None = Field(
        default=None, description="https://<name>.service-now.com, another https URL, or a name."
    )
    username: str | None = Field(default=None, description="Integration user.")
    password: SecretStr | None = Field(default=None, description="Its password.")


def make_client(settings: ServiceNowSettings, context: ClientContext) -> ServiceNowClient:
    """pysnc's client over a requests session with a timeout and no retries.

    Raises:
        NotConfiguredError: pysnc refuses the instance (an ``http://`` URL).
    """
    session = requests_session(
        "servicenow", timeout=settings.timeout, environ=context.environ, message_of=error_message
    )
    password = settings.password.get_secret_value() if settings.password else ""
    session.auth = (str(settings.username), password)
    try:
        # auto_retry=False: pysnc would mount urllib3 retries (429/5xx, 4 attempts) on the
        # instance URL; the engine's step runner owns retries (docs/connectors.md#retries).
        return ServiceNowClient(str(settings.instance), auth=session, auto_retry=False)
    except InstanceException as exc:
        raise context.misconfigured("instance", str(exc)) from None


_PYSNC_ERRORS = (
    AuthenticationException,
    RoleException,
    NotFoundException,
    RequestException,
    InsertException,
    UpdateException,
    DeleteException,
)


def _errors(what: str) -> AbstractContextManager[None]:
    # HTTP errors arrive already mapped by the session hook (hookline.connectors._http);
    # this catches the network failures and what pysnc raises on its own.
    return connector_errors("servicenow", what, _pysnc_error)


def _pysnc_error(exc: Exception, what: str) -> ConnectorError | None:
    if not isinstance(exc, _PYSNC_ERRORS):
        return None
    return PermanentError(f"servicenow: {what} failed: {shorten(str(exc))}", connector="servicenow")


def correlation_value(key: str) -> str:
    """``key`` if it fits incident.correlation_id and an encoded query, else a stable digest.

    ``^`` separates encoded-query terms, so a key containing one could widen the lookup
    (``x^ORactive=true``); digesting it is safer than relying on an escape.
    """
    if len(key) <= CORRELATION_MAX and "^" not in key:
        return key
    return "hookline-" + hashlib.sha256(key.encode()).hexdigest()


def _find(
    client: ServiceNowClient, table: str, field: str, value: str, *, active: bool = False
) -> Any | None:
    if "^" in value:
        raise PermanentError(
            f"servicenow: {field} {value!r} contains '^', which no {table} {field} has",
            connector="servicenow",
        )
    record = client.GlideRecord(table, batch_size=1)
    record.add_query(field, value)
    if active:
        record.add_query("active", "true")
    # Newest first: with several matches (an old resolved incident and a new one), the
    # latest is the one a step means.
    record.order_by_desc("sys_created_on")
    record.limit = 1
    with _errors(f"looking up {table} {field}={value!r}"):
        record.query()
        return record if record.next() else None


def _find_incident(
    client: ServiceNowClient,
    *,
    number: str | None,
    correlation_id: str | None,
    sys_id: str | None,
    what: str,
) -> tuple[Any | None, str]:
    keys = {"number": number, "correlation_id": correlation_id, "sys_id": sys_id}
    given = [(k, v) for k, v in keys.items() if v]
    if len(given) != 1:
        raise PermanentError(
            f"servicenow {what}: give exactly one of number, correlation_id or sys_id",
            connector="servicenow",
        )
    field, value = given[0]
    if field == "correlation_id":
        value = correlation_value(value)
    if field == "correlation_id":
        # Prefer the open incident; fall back to the latest, to report it already resolved.
        found = _find(client, "incident", field, value, active=True)
        if found is not None:
            return found, f"{field}={value!r}"
    return _find(client, "incident", field, value), f"{field}={value!r}"


def _set(record: Any, name: str, value: Any) -> None:
    # pysnc does not mark a field it has not seen in the record as changed, so an update
    # (which sends changed fields only) would silently drop it: seed it first, then change it.
    if record.get_element(name) is None:
        record.set_value(name, None)
    record.set_value(name, value)


def _check(name: str, value: int | None, high: int) -> None:
    if value is not None and not 1 <= value <= high:
        raise PermanentError(
            f"servicenow create_incident: {name} must be 1..{high}, not {value}",
            connector="servicenow",
        )


def _incident_output(record: Any) -> UpdateIncidentOutput:
    return {
        "number": str(record.get_value("number")),
        "sys_id": str(record.get_value("sys_id")),
        "link": str(record.get_link(no_stack=True)),
    }


def create_incident(
    client: ServiceNowClient,
    *,
    short_description: str,
    description: str | None = None,
    priority: int | None = None,
    impact: int | None = None,
    urgency: int | None = None,
    category: str | None = None,
    subcategory: str | None = None,
    assignment_group: str | None = None,
    caller_id: str | None = None,
    correlation_id: str | None = None,
    only_open: bool = True,
    fields: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> IncidentOutput:
    """Open an incident unless an open one has the same correlation_id (then return that).

    ``only_open=False`` also reuses a resolved or closed incident with that correlation_id.
    """
    _check("priority", priority, 5)
    _check("impact", impact, 3)
    _check("urgency", urgency, 3)
    key = correlation_id or idempotency_key
    correlation = correlation_value(key) if key else None
    if correlation is not None:
        existing = _find(client, "incident", "correlation_id", correlation, active=only_open)
        if existing is not None:
            return {**_incident_output(existing), "created": False}
    values: dict[str, Any] = dict(fields or {})
    named = {
        "short_description": short_description,
        "description": description,
        "priority": priority,
        "impact": impact,
        "urgency": urgency,
        "category": category,
        "subcategory": subcategory,
        "assignment_group": assignment_group,
        "caller_id": caller_id,
        "correlation_id": correlation,
    }
    values.update({k: str(v) for k, v in named.items() if v is not None})
    if correlation is not None:
        values.setdefault("correlation_display", "Hookline")
    record = client.GlideRecord("incident")
    record.initialize()
    for name, value in values.items():
        record.set_value(name, value)
    with _errors("creating an incident"):
        record.insert()
    return {**_incident_output(record), "created": True}


def update_incident(
    client: ServiceNowClient,
    *,
    number: str | None = None,
    correlation_id: str | None = None,
    sys_id: str | None = None,
    fields: dict[str, Any] | None = None,
    work_notes: str | None = None,
    comments: str | None = None,
    idempotency_key: str | None = None,
) -> UpdateIncidentOutput:
    """Set fields and/or add work notes or comments on an incident found by number or id."""
    record, where = _find_incident(
        client, number=number, correlation_id=correlation_id, sys_id=sys_id, what="update"
    )
    if record is None:
        raise PermanentError(
            f"servicenow update_incident: no incident with {where}", connector="servicenow"
        )
    values: dict[str, Any] = dict(fields or {})
    if work_notes:
        values["work_notes"] = work_notes
    if comments:
        values["comments"] = comments
    for name, value in values.items():
        _set(record, name, value)
    if values:
        with _errors(f"updating incident {where}"):
            record.update()
    return _incident_output(record)


def get_incident(
    client: ServiceNowClient,
    *,
    number: str | None = None,
    correlation_id: str | None = None,
    sys_id: str | None = None,
    idempotency_key: str | None = None,
) -> GetIncidentOutput:
    """Look an incident up: ``found``, its ``state`` and whether it is already ``resolved``
    (resolved, closed or cancelled), e.g. before acting on a click from an old alert."""
    record, _ = _find_incident(
        client, number=number, correlation_id=correlation_id, sys_id=sys_id, what="get_incident"
    )
    if record is None:
        return {
            "found": False,
            "number": None,
            "sys_id": None,
            "link": None,
            "state": None,
            "resolved": False,
        }
    state = str(record.get_value("state"))
    return {
        **_incident_output(record),
        "found": True,
        "state": state,
        "resolved": state in RESOLVED_STATES,
    }


def resolve_incident(
    client: ServiceNowClient,
    *,
    number: str | None = None,
    correlation_id: str | None = None,
    sys_id: str | None = None,
    close_notes: str = "Resolved by Hookline",
    close_code: str = "Solution provided",
    missing_ok: bool = False,
    idempotency_key: str | None = None,
) -> ResolveIncidentOutput:
    """Resolve an incident (state 6); already resolved counts as done, resolved=False."""
    record, where = _find_incident(
        client, number=number, correlation_id=correlation_id, sys_id=sys_id, what="resolve"
    )
    if record is None:
        if missing_ok:
            return {"number": None, "sys_id": None, "link": None, "resolved": False}
        raise PermanentError(
            f"servicenow resolve_incident: no incident with {where} "
            "(set missing_ok: true if that is expected)",
            connector="servicenow",
        )
    if str(record.get_value("state")) in RESOLVED_STATES:
        return {**_incident_output(record), "resolved": False}
    _set(record, "state", "6")
    _set(record, "close_code", close_code)
    _set(record, "close_notes", close_notes)
    with _errors(f"resolving incident {where}"):
        record.update()
    return {**_incident_output(record), "resolved": True}


def create_record(
    client: ServiceNowClient,
    *,
    table: str,
    fields: dict[str, Any],
    idempotency_key: str | None = None,
) -> RecordOutput:
    """Insert a record into any table (change_request, problem, u_custom, ...)."""
    if not fields:
        raise PermanentError(
            f"servicenow create_record: give the fields of the new {table} record",
            connector="servicenow",
        )
    record = client.GlideRecord(table)
    record.initialize()
    for name, value in fields.items():
        record.set_value(name, value)
    with _errors(f"creating a {table} record"):
        record.insert()
    number = record.get_value("number")
    return {
        "sys_id": str(record.get_value("sys_id")),
        "number": str(number) if number else None,
        "link": str(record.get_link(no_stack=True)),
    }


CONNECTOR = Connector(
    name="servicenow",
    settings=ServiceNowSettings,
    client=make_client,
    requires=("instance", "username", "password"),
    actions=(create_incident, get_incident, update_incident, resolve_incident, create_record),
)
