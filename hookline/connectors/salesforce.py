"""Salesforce actions over an injected `simple_salesforce.Salesforce` (REST sObject API).

The client is built by `hookline.connectors.build_client("salesforce")` on a requests session
with a timeout, no urllib3 retries (the engine's step runner owns retries) and a hook that maps
HTTP errors, Salesforce's ``[{"errorCode", "message", "fields"}]`` included, to our errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypedDict
from urllib.parse import quote

import requests
from simple_salesforce.api import Salesforce, SFType
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
)

from hookline.connectors._http import error_for_exception, json_or_text, shorten
from hookline.connectors.errors import ConnectorError, PermanentError, TransientError

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


@contextmanager
def _errors(what: str) -> Iterator[None]:
    # HTTP errors are mapped by the session hook; this covers clients built elsewhere and
    # network failures.
    try:
        yield
    except ConnectorError:
        raise
    except SalesforceError as exc:
        status = exc.status if isinstance(exc.status, int) else None
        message = f"salesforce: {what} failed: HTTP {status}: {shorten(str(exc.content))}"
        if isinstance(exc, SalesforceGeneralError) and status is not None and status >= 500:
            raise TransientError(message, connector="salesforce", status=status) from None
        if isinstance(exc, SalesforceExpiredSession):
            message += " (check SALESFORCE_SESSION_ID; docs/connectors.md#salesforce)"
        raise PermanentError(message, connector="salesforce", status=status) from None
    except (OSError, requests.RequestException) as exc:
        mapped = error_for_exception("salesforce", exc, what=what)
        if mapped is None:
            raise
        raise mapped from None


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
