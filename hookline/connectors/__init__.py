"""Vendor actions that recipe steps call: ``uses: slack.post_message`` and friends.

Each action is a plain, synchronous, typed function ``action(client, *, ...) -> TypedDict`` over
an injected vendor client that `build_client` makes from settings. Actions know nothing of
Prefect, recipes or the receiver; the engine wraps a call in a task and owns retries
(`TransientError` only, honouring ``retry_after``). Errors: `hookline.connectors.errors`.

Every action accepts the reserved keyword ``idempotency_key`` (the engine fills it with
``<source>:<event_id>:<recipe>:<step>``; recipes cannot set it).
"""

from __future__ import annotations

import inspect
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from hookline.config import HooklineConfig
from hookline.connectors import http, inventory, memory, salesforce, servicenow, slack
from hookline.connectors._http import (
    ca_file,
    error_for_exception,
    requests_session,
    shorten,
    ssl_context,
)
from hookline.connectors.errors import (
    ConnectorError,
    NotConfiguredError,
    PermanentError,
    TransientError,
)
from hookline.connectors.settings import (
    HttpSettings,
    InventorySettings,
    SalesforceSettings,
    SecretLoader,
    ServiceNowSettings,
    SlackSettings,
    anchor,
    load_settings,
    raw_settings,
    require,
)

__all__ = [
    "ACTIONS",
    "CONNECTORS",
    "Action",
    "ConnectorError",
    "NotConfiguredError",
    "PermanentError",
    "TransientError",
    "build_client",
    "get_action",
]

#: The reserved parameter the engine fills; recipes cannot set it.
IDEMPOTENCY_KEY = "idempotency_key"


@dataclass(frozen=True)
class Action:
    """One action recipes can use: its function, parameters and output keys."""

    name: str
    connector: str
    func: Callable[..., Any]
    description: str
    params: inspect.Signature
    outputs: tuple[str, ...]
    mrkdwn: frozenset[str] = frozenset()
    """Parameters whose text is Slack mrkdwn: values a recipe template inserts into them are
    escaped (``&``, ``<``, ``>``) unless the recipe marks them ``| mrkdwn``."""

    @classmethod
    def from_function(cls, name: str, connector: str, func: Callable[..., Any]) -> Action:
        """Describe ``func``: its signature without the client, its TypedDict's keys."""
        signature = inspect.signature(func, eval_str=True)
        params = list(signature.parameters.values())[1:]
        returns = signature.return_annotation
        outputs = tuple(typing.get_type_hints(returns)) if returns is not signature.empty else ()
        doc = inspect.getdoc(func) or ""
        names = {p.name for p in params}
        return cls(
            name=name,
            connector=connector,
            func=func,
            description=doc.splitlines()[0] if doc else "",
            params=signature.replace(parameters=params),
            outputs=outputs,
            mrkdwn=slack.MRKDWN_PARAMS & names if connector.startswith("slack") else frozenset(),
        )


_FUNCS: list[tuple[str, str, Callable[..., Any]]] = [
    ("slack.post_message", "slack", slack.post_message),
    ("slack.update_message", "slack", slack.update_message),
    ("slack.post_alert", "slack", slack.post_alert),
    ("slack.update_alert", "slack", slack.update_alert),
    ("slack.post_webhook", "slack_webhook", slack.post_webhook),
    ("servicenow.create_incident", "servicenow", servicenow.create_incident),
    ("servicenow.update_incident", "servicenow", servicenow.update_incident),
    ("servicenow.resolve_incident", "servicenow", servicenow.resolve_incident),
    ("servicenow.create_record", "servicenow", servicenow.create_record),
    ("salesforce.update_record", "salesforce", salesforce.update_record),
    ("salesforce.upsert", "salesforce", salesforce.upsert),
    ("salesforce.update_account", "salesforce", salesforce.update_account),
    ("inventory.upsert_service", "inventory", inventory.upsert_service),
    ("inventory.remove_service", "inventory", inventory.remove_service),
    ("http.request", "http", http.request),
    ("memory.remember", "memory", memory.remember),
    ("memory.recall", "memory", memory.recall),
]

ACTIONS: dict[str, Action] = {
    name: Action.from_function(name, connector, func) for name, connector, func in _FUNCS
}

#: What `build_client` accepts (``slack_webhook`` reads ``connections.slack.webhook_url``).
CONNECTORS = (
    "slack",
    "slack_webhook",
    "servicenow",
    "salesforce",
    "inventory",
    "http",
    "memory",
)


def get_action(name: str) -> Action:
    """The action called ``name``.

    Raises:
        KeyError: no such action; the message lists the valid names.
    """
    try:
        return ACTIONS[name]
    except KeyError:
        raise KeyError(f"unknown action {name!r}; valid: {', '.join(sorted(ACTIONS))}") from None


def build_client(
    connector: str,
    config: HooklineConfig | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    secrets: SecretLoader | None = None,
    timeout: float | None = None,
) -> Any:
    """Make the vendor client an action of ``connector`` takes, from hookline.yaml + environment.

    ``secrets(name) -> str`` reads settings written ``prefect-secret:<name>`` (the flow layer
    passes one backed by Prefect Secret blocks). ``timeout`` lowers the connection's own
    timeout for this client: the engine passes the step's, so that a call the step gave up on
    really ends (a worker thread cannot be cancelled) instead of running on beside its retry.

    Raises:
        KeyError: unknown connector.
        NotConfiguredError: a required setting is missing or invalid; names the variable.
        TransientError: a Prefect Secret block could not be read right now (API down, 5xx).
        ConnectorError: Salesforce password login failed.
    """
    env = os.environ if environ is None else environ
    if connector not in CONNECTORS:
        raise KeyError(f"unknown connector {connector!r}; valid: {', '.join(CONNECTORS)}")
    if connector == "memory":
        # The store lives in the worker's inbox database; only the worker can hand it out.
        raise NotConfiguredError(
            "memory is not configured here: the memory store is provided by the Hookline "
            "worker (hookline worker / hookline up), backed by its inbox database",
            connector="memory",
        )
    settings_name = "slack" if connector == "slack_webhook" else connector
    settings = load_settings(settings_name, config, env, secrets)
    if timeout is not None and 0 < timeout < settings.timeout:
        settings = settings.model_copy(update={"timeout": timeout})
    raw = raw_settings(settings_name, config)
    if isinstance(settings, SlackSettings):
        return _slack(connector, settings, raw, env)
    if isinstance(settings, ServiceNowSettings):
        return _servicenow(settings, raw, env)
    if isinstance(settings, SalesforceSettings):
        return _salesforce(settings, raw, env)
    if isinstance(settings, InventorySettings):
        require("inventory", settings, raw, "url", "token")
        token = settings.token.get_secret_value() if settings.token else ""
        return httpx.Client(
            base_url=str(settings.url).rstrip("/") + "/",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            verify=_verify(env),
            timeout=settings.timeout,
        )
    if isinstance(settings, HttpSettings):
        policy = http.HostPolicy(settings.allow_hosts, settings.deny_hosts)
        return httpx.Client(
            verify=_verify(env),
            timeout=settings.timeout,
            event_hooks={"request": [policy.hook]},
        )
    raise KeyError(connector)  # pragma: no cover - SETTINGS and CONNECTORS agree


def _verify(env: Mapping[str, str]) -> Any:
    # httpx reads neither SSL_CERT_FILE nor REQUESTS_CA_BUNDLE by itself in every version.
    return ssl_context(env) if ca_file(env) else True


def _slack(
    connector: str, settings: SlackSettings, raw: Mapping[str, Any], env: Mapping[str, str]
) -> Any:
    from slack_sdk import WebClient
    from slack_sdk.webhook import WebhookClient

    # slack_sdk's urllib needs an SSLContext to trust a private CA; None means system CAs.
    context = ssl_context(env) if ca_file(env) else None
    # retry_handlers=[]: slack_sdk retries connection errors by default; the engine's step
    # runner owns retries, and two layers would multiply attempts (docs/connectors.md#retries).
    if connector == "slack_webhook":
        require("slack", settings, raw, "webhook_url")
        url = settings.webhook_url.get_secret_value() if settings.webhook_url else ""
        # float seconds: slack_sdk hands its timeout to urllib, which takes fractions
        return WebhookClient(
            url=url,
            timeout=settings.timeout,  # type: ignore[arg-type]
            ssl=context,
            retry_handlers=[],
        )
    require("slack", settings, raw, "token")
    token = settings.token.get_secret_value() if settings.token else ""
    return WebClient(
        token=token,
        base_url=settings.api_url,
        timeout=settings.timeout,  # type: ignore[arg-type]
        ssl=context,
        retry_handlers=[],
    )


def _servicenow(
    settings: ServiceNowSettings, raw: Mapping[str, Any], env: Mapping[str, str]
) -> Any:
    from pysnc import ServiceNowClient
    from pysnc.exceptions import InstanceException

    require("servicenow", settings, raw, "instance", "username", "password")
    session = requests_session(
        "servicenow", timeout=settings.timeout, environ=env, message_of=servicenow.error_message
    )
    password = settings.password.get_secret_value() if settings.password else ""
    session.auth = (str(settings.username), password)
    try:
        # auto_retry=False: pysnc would mount urllib3 retries (429/5xx, 4 attempts) on the
        # instance URL; the engine's step runner owns retries (docs/connectors.md#retries).
        return ServiceNowClient(str(settings.instance), auth=session, auto_retry=False)
    except InstanceException as exc:
        name = raw.get("instance", "")
        raise NotConfiguredError(
            f"servicenow is misconfigured: {_var(name, 'SERVICENOW_INSTANCE')}: {exc} "
            f"({anchor('servicenow')})",
            connector="servicenow",
        ) from None


def _var(raw_value: Any, fallback: str) -> str:
    text = str(raw_value)
    if text.startswith("${"):
        return text[2:].split(":")[0].rstrip("}")
    return fallback


def _salesforce(
    settings: SalesforceSettings, raw: Mapping[str, Any], env: Mapping[str, str]
) -> Any:
    from simple_salesforce.api import Salesforce
    from simple_salesforce.exceptions import SalesforceAuthenticationFailed

    session = requests_session(
        "salesforce", timeout=settings.timeout, environ=env, message_of=salesforce.error_message
    )
    if settings.session_id is not None or settings.instance_url is not None:
        require("salesforce", settings, raw, "instance_url", "session_id")
        return Salesforce(
            instance_url=settings.instance_url,
            session_id=settings.session_id.get_secret_value() if settings.session_id else "",
            session=session,
            version=settings.api_version,
        )
    require("salesforce", settings, raw, "username", "password")
    # The SOAP login answers a bad password with HTTP 500 and a fault that simple-salesforce
    # turns into SalesforceAuthenticationFailed; our 5xx-is-transient hook must not see it.
    hooks = list(session.hooks["response"])
    session.hooks["response"].clear()
    try:
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
    except SalesforceAuthenticationFailed as exc:
        # A non-SOAP answer (a 503 page) leaves the HTTP status as the code: that is transient.
        if isinstance(exc.code, int) and (exc.code == 429 or exc.code >= 500):
            raise TransientError(
                f"salesforce: login failed: HTTP {exc.code}",
                connector="salesforce",
                status=exc.code,
            ) from None
        raise PermanentError(
            f"salesforce: login as {settings.username} failed: {exc.code}: "
            f"{shorten(exc.auth_message)} "
            f"({anchor('salesforce')})",
            connector="salesforce",
        ) from None
    except OSError as exc:
        mapped = error_for_exception("salesforce", exc, what="login")
        if mapped is None:
            raise
        raise mapped from None
    finally:
        session.hooks["response"].extend(hooks)
