"""Salesforce actions over an injected `simple_salesforce.Salesforce` (REST sObject API).

`make_client` builds the client on a requests session with a timeout, no urllib3 retries (the
engine's step runner owns retries) and a hook that maps HTTP errors, Salesforce's
``[{"errorCode", "message", "fields"}]`` included, to our errors.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import Any, TypedDict
from urllib.parse import quote

import requests
from pydantic import Field, SecretStr
from simple_salesforce.api import Salesforce, SFType
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
)

from hookline.connectors._http import (
    SDKError,
    connector_errors,
    json_or_text,
    requests_session,
    shorten,
)
from hookline.connectors.errors import ConnectorError, PermanentError, TransientError
from hookline.connectors.registry import ClientContext, Connector
from hookline.connectors.settings import ConnectorSettings, anchor

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class UpdateRecordOutput(TypedDict):
    object: str
    id: str


class UpsertOutput(TypedDict):
    object: str
    id: str | None
    created: bool


def error_message(response: requests.Response) -> str:
    """Salesforce's error array as ``CODE: message [fields]; ...``."""
    body = json_or_text(response)
    if isinstance(body, list):
        parts = []
        for item in body:
            if isinstance(item, dict):
                text = f"{item.get('errorCode', 'ERROR')}: {item.get('message', '')}"
                if item.get("fields"):
                    text += f" [{', '.join(str(f) for f in item['fields'])}]"
                parts.append(text)
        if parts:
            return "; ".join(parts)
    return str(body)


class SalesforceSettings(ConnectorSettings):
    """``connections.salesforce``."""

    instance_url: str | None = Field(default=None, description="https://<my>.my.salesforce.com")
    session_id: SecretStr | None = Field(default=None, description="OAuth access token.")
    username: str | None = Field(default=None, description="API user (password login).")
    password: SecretStr | None = Field(default=None, description="Its password.")
    security_token: SecretStr | None = Field(default=None, description="Its security token.")
    domain: str = Field(default="login", description="'login', 'test' or a My Domain prefix.")
    api_version: str = Field(default="59.0", description="REST API version, e.g. 59.0.")


def make_client(settings: SalesforceSettings, context: ClientContext) -> Salesforce:
    """simple-salesforce's client: with ``instance_url`` + ``session_id`` if given, else
    after a SOAP login with username, password and security token.

    Raises:
        PermanentError: the login was refused (``INVALID_LOGIN``).
        TransientError: the login failed with a 429/5xx or a network error.
    """
    session = requests_session(
        "salesforce", timeout=settings.timeout, environ=context.environ, message_of=error_message
    )
    if settings.instance_url is not None and settings.session_id is not None:
        return Salesforce(
            instance_url=settings.instance_url,
            session_id=settings.session_id.get_secret_value(),
            session=session,
            version=settings.api_version,
        )
    # The SOAP login answers a bad password with HTTP 500 and a fault that simple-salesforce
    # turns into SalesforceAuthenticationFailed; our 5xx-is-transient hook must not see it.
    hooks = list(session.hooks["response"])
    session.hooks["response"].clear()
    try:
        with connector_errors("salesforce", "login", _login_error(settings.username)):
            return Salesforce(
                username=settings.username,
                password=settings.password.get_secret_value() if settings.password else "",
                security_token=(
                    settings.security_token.get_secret_value() if settings.security_token else ""
                ),
                domain=settings.domain,
                session=session,
                version=settings.api_version,
            )
    finally:
        session.hooks["response"].extend(hooks)


def _login_error(username: str | None) -> SDKError:
    def error(exc: Exception, what: str) -> ConnectorError | None:
        if not isinstance(exc, SalesforceAuthenticationFailed):
            return None
        # A non-SOAP answer (a 503 page) leaves the HTTP status as the code: that is transient.
        if isinstance(exc.code, int) and (exc.code == 429 or exc.code >= 500):
            return TransientError(
                f"salesforce: {what} failed: HTTP {exc.code}",
                connector="salesforce",
                status=exc.code,
            )
        return PermanentError(
            f"salesforce: {what} as {username} failed: {exc.code}: "
            f"{shorten(exc.auth_message)} "
            f"({anchor('salesforce')})",
            connector="salesforce",
        )

    return error


def _errors(what: str) -> AbstractContextManager[None]:
    # HTTP errors are mapped by the session hook; this covers clients built elsewhere and
    # network failures.
    return connector_errors("salesforce", what, _salesforce_error)


def _salesforce_error(exc: Exception, what: str) -> ConnectorError | None:
    if not isinstance(exc, SalesforceError):
        return None
    status = exc.status if isinstance(exc.status, int) else None
    message = f"salesforce: {what} failed: HTTP {status}: {shorten(str(exc.content))}"
    if isinstance(exc, SalesforceGeneralError) and status is not None and status >= 500:
        return TransientError(message, connector="salesforce", status=status)
    if isinstance(exc, SalesforceExpiredSession):
        message += " (check SALESFORCE_SESSION_ID; docs/connectors.md#salesforce)"
    return PermanentError(message, connector="salesforce", status=status)


def _sobject(client: Salesforce, name: str) -> SFType:
    # What ``client.Account`` does, without attribute lookup: ``object: query`` or ``bulk``
    # must name an sObject, not a method of the client.
    return SFType(
        _name("object", name),
        client.session_id,
        client.sf_instance,
        sf_version=client.sf_version,
        proxies=client.proxies,
        session=client.session,
        salesforce=client,
    )


def _name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise PermanentError(
            f"salesforce: {kind} {value!r} is not an API name (letters, digits, _)",
            connector="salesforce",
        )
    return value


def update_record(
    client: Salesforce,
    *,
    object: str,
    id: str,
    fields: dict[str, Any],
    idempotency_key: str | None = None,
) -> UpdateRecordOutput:
    """Set fields on one record by its Salesforce id (PATCH /sobjects/{object}/{id})."""
    sobject = _sobject(client, object)
    with _errors(f"updating {object} {id}"):
        sobject.update(quote(id, safe=""), fields)
    return {"object": object, "id": id}


def upsert(
    client: Salesforce,
    *,
    object: str,
    external_id_field: str,
    external_id: str,
    fields: dict[str, Any],
    idempotency_key: str | None = None,
) -> UpsertOutput:
    """Create or update the record whose external id field equals external_id."""
    sobject = _sobject(client, object)
    field = _name("external_id_field", external_id_field)
    # The external id is in the URL path, so it must not be part of the body.
    body = {k: v for k, v in fields.items() if k != field}
    with _errors(f"upserting {object} {field}={external_id!r}"):
        response = sobject.upsert(f"{field}/{quote(external_id, safe='')}", body, raw_response=True)
    data = json_or_text(response) if response.content else {}
    record_id = data.get("id") if isinstance(data, dict) else None
    return {
        "object": object,
        "id": str(record_id) if record_id else None,
        "created": response.status_code == 201,
    }


def update_account(
    client: Salesforce,
    *,
    account_id: str,
    service_type: str,
    service_date: str,
    service_status: str = "Active",
    fields: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> UpdateRecordOutput:
    """Record a new service on an Account (Latest_Service_Addition__c, dates, status)."""
    values = {
        "Latest_Service_Addition__c": service_type,
        "Last_Service_Date__c": service_date,
        "Service_Status__c": service_status,
        **(fields or {}),
    }
    return update_record(client, object="Account", id=account_id, fields=values)


CONNECTOR = Connector(
    name="salesforce",
    settings=SalesforceSettings,
    client=make_client,
    # a password login, or an OAuth session; a missing setting is named from the group most
    # nearly given (the password login, if neither is begun)
    requires=(("username", "password"), ("instance_url", "session_id")),
    actions=(update_record, upsert, update_account),
)
