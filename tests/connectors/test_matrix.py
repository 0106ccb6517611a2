"""Every action against its fake through the real SDK: bad credentials, 429 + Retry-After,
500 then success, timeout. The vendor files test the happy paths and validation errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from hookline.connectors import ACTIONS, build_client, get_action
from hookline.connectors.errors import PermanentError, TransientError
from vendor_fakes import FakeVendors


@dataclass(frozen=True)
class Case:
    #: Environment overrides with wrong credentials (given the running fakes).
    bad_credentials: Callable[[FakeVendors], dict[str, str]]
    #: Prepares the fake and returns the action's parameters.
    params: Callable[[FakeVendors, Any], dict[str, Any]]
    #: The fake that serves the action.
    fake: str


def _posted(fakes: FakeVendors, client: Any) -> dict[str, Any]:
    out = ACTIONS["slack.post_message"].func(client, channel="#a", text="x")
    return {"channel": out["channel"], "ts": out["ts"]}


def _incident(fakes: FakeVendors, client: Any) -> dict[str, Any]:
    out = ACTIONS["servicenow.create_incident"].func(
        client, short_description="x", correlation_id="matrix"
    )
    return {"number": out["number"]}


def _account(fakes: FakeVendors, client: Any) -> str:
    return fakes.salesforce.add_record("Account", {"Name": "Acme"})


def SLACK_BAD(f: FakeVendors) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": "xoxb-bad-token"}


def WEBHOOK_BAD(f: FakeVendors) -> dict[str, str]:
    return {"SLACK_WEBHOOK_URL": f"{f.slack.url}/services/T0/B0/bad-webhook-secret"}


def SN_BAD(f: FakeVendors) -> dict[str, str]:
    return {"SERVICENOW_PASSWORD": "bad-password"}


def SF_BAD(f: FakeVendors) -> dict[str, str]:
    return {"SALESFORCE_SESSION_ID": "bad-session"}


def INV_BAD(f: FakeVendors) -> dict[str, str]:
    return {"INVENTORY_API_TOKEN": "bad-token"}


def NO_CREDENTIALS(f: FakeVendors) -> dict[str, str]:
    return {}


CASES: dict[str, Case] = {
    "slack.post_message": Case(SLACK_BAD, lambda f, c: {"channel": "#a", "text": "x"}, "slack"),
    "slack.update_message": Case(SLACK_BAD, lambda f, c: {**_posted(f, c), "text": "y"}, "slack"),
    "slack.post_alert": Case(SLACK_BAD, lambda f, c: {"channel": "#a", "title": "t"}, "slack"),
    "slack.update_alert": Case(SLACK_BAD, lambda f, c: {**_posted(f, c), "title": "t"}, "slack"),
    "slack.post_webhook": Case(WEBHOOK_BAD, lambda f, c: {"text": "x"}, "slack"),
    "servicenow.create_incident": Case(
        SN_BAD, lambda f, c: {"short_description": "x", "correlation_id": "m"}, "servicenow"
    ),
    "servicenow.get_incident": Case(SN_BAD, lambda f, c: _incident(f, c), "servicenow"),
    "servicenow.update_incident": Case(
        SN_BAD, lambda f, c: {**_incident(f, c), "work_notes": "n"}, "servicenow"
    ),
    "servicenow.resolve_incident": Case(
        SN_BAD, lambda f, c: {**_incident(f, c), "close_notes": "n"}, "servicenow"
    ),
    "servicenow.create_record": Case(
        SN_BAD,
        lambda f, c: {"table": "problem", "fields": {"short_description": "x"}},
        "servicenow",
    ),
    "salesforce.update_record": Case(
        SF_BAD,
        lambda f, c: {"object": "Account", "id": _account(f, c), "fields": {"Name": "B"}},
        "salesforce",
    ),
    "salesforce.upsert": Case(
        SF_BAD,
        lambda f, c: {
            "object": "Account",
            "external_id_field": "SolveForce_Account_Id__c",
            "external_id": "acc_1",
            "fields": {"Name": "A"},
        },
        "salesforce",
    ),
    "salesforce.update_account": Case(
        SF_BAD,
        lambda f, c: {
            "account_id": _account(f, c),
            "service_type": "voice",
            "service_date": "2024-01-15",
        },
        "salesforce",
    ),
    "inventory.upsert_service": Case(
        INV_BAD, lambda f, c: {"service_id": "s1", "service_type": "voice"}, "inventory"
    ),
    "inventory.remove_service": Case(INV_BAD, lambda f, c: {"service_id": "s1"}, "inventory"),
    # The echo server has no credentials; /status/401 answers what a real API would.
    "http.request": Case(NO_CREDENTIALS, lambda f, c: {"url": f.echo.url + "/a"}, "echo"),
}


#: Connectors without a vendor behind them (memory, timer: the worker's inbox database).
NO_VENDOR = {"memory", "timer"}


def test_every_vendor_action_has_a_case() -> None:
    assert set(CASES) == {n for n, a in ACTIONS.items() if a.connector not in NO_VENDOR}


def _run(name: str, env: dict[str, str], fakes: FakeVendors, **overrides: str) -> Any:
    action = get_action(name)
    client = build_client(action.connector, environ={**env, **overrides})
    params = CASES[name].params(fakes, build_client(action.connector, environ=env))
    return lambda: action.func(client, **params)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_credentials_are_permanent(name: str, env: dict[str, str], fakes: FakeVendors) -> None:
    bad = CASES[name].bad_credentials(fakes)
    call = _run(name, env, fakes, **bad)
    if name == "http.request":
        client = build_client("http", environ=env)
        call = partial(get_action(name).func, client, url=fakes.echo.url + "/status/401")
    with pytest.raises(PermanentError) as caught:
        call()
    assert not isinstance(caught.value, TransientError)
    # Slack answers HTTP 200 {"ok": false, "error": "invalid_auth"}; the others 401 (404 for an
    # unknown incoming-webhook URL).
    assert "invalid_auth" in str(caught.value) or caught.value.status in {401, 404}
    for secret in bad.values():
        assert secret.rsplit("/", 1)[-1] not in str(caught.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_429_is_transient_with_retry_after(
    name: str, env: dict[str, str], fakes: FakeVendors
) -> None:
    call = _run(name, env, fakes)
    getattr(fakes, CASES[name].fake).fail_next(1, status=429, retry_after=3)
    with pytest.raises(TransientError) as caught:
        call()
    assert caught.value.retry_after == 3.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_500_then_success(name: str, env: dict[str, str], fakes: FakeVendors) -> None:
    call = _run(name, env, fakes)
    getattr(fakes, CASES[name].fake).fail_next(1, status=500)
    with pytest.raises(TransientError) as caught:
        call()
    assert caught.value.status == 500
    assert call() is not None


@pytest.mark.parametrize("name", sorted(CASES))
def test_timeout_is_transient(name: str, env: dict[str, str], fakes: FakeVendors) -> None:
    call = _run(name, env, fakes)
    # Every client times out after 1 s in these tests (conftest's env).
    getattr(fakes, CASES[name].fake).fail_next(1, status=None, delay=1.6)
    with pytest.raises(TransientError, match="timed out"):
        call()
