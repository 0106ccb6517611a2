"""Connection settings: the ``connections:`` section of hookline.yaml, or the environment alone.

Each connection has built-in defaults that read the conventional environment variables
(``SLACK_BOT_TOKEN``, ``SERVICENOW_INSTANCE``, ...). Keys given in hookline.yaml override those
defaults key by key, so ``connections: {}`` or no section at all still works from the
environment. Values are resolved (``${NAME}`` / ``${NAME:-default}``) when a client is built,
so a missing secret fails the step that needs it, naming the variable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from hookline.config import HooklineConfig, resolve
from hookline.connectors._http import error_for_exception
from hookline.connectors.errors import (
    ConnectorError,
    NotConfiguredError,
    PermanentError,
    TransientError,
)
from hookline.errors import ConfigError

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(default=10.0, gt=0, description="Seconds before a call times out.")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value


class SlackSettings(_Settings):
    """``connections.slack``."""

    token: SecretStr | None = Field(default=None, description="Bot token (xoxb-...).")
    api_url: str = Field(
        default="https://slack.com/api/", description="Web API base URL, ending in /api/."
    )
    webhook_url: SecretStr | None = Field(
        default=None, description="Incoming-webhook URL for slack.post_webhook."
    )

    @field_validator("api_url")
    @classmethod
    def _slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


class ServiceNowSettings(_Settings):
    """``connections.servicenow``."""

    instance: str | None = Field(
        default=None, description="https://<name>.service-now.com, another https URL, or a name."
    )
    username: str | None = Field(default=None, description="Integration user.")
    password: SecretStr | None = Field(default=None, description="Its password.")


class SalesforceSettings(_Settings):
    """``connections.salesforce``."""

    instance_url: str | None = Field(default=None, description="https://<my>.my.salesforce.com")
    session_id: SecretStr | None = Field(default=None, description="OAuth access token.")
    username: str | None = Field(default=None, description="API user (password login).")
    password: SecretStr | None = Field(default=None, description="Its password.")
    security_token: SecretStr | None = Field(default=None, description="Its security token.")
    domain: str = Field(default="login", description="'login', 'test' or a My Domain prefix.")
    api_version: str = Field(default="59.0", description="REST API version, e.g. 59.0.")


class InventorySettings(_Settings):
    """``connections.inventory``."""

    url: str | None = Field(default=None, description="Inventory API base URL.")
    token: SecretStr | None = Field(default=None, description="Bearer token.")


class HttpSettings(_Settings):
    """``connections.http``: defaults for http.request."""

    timeout: float = Field(default=30.0, gt=0, description="Default seconds per request.")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="If set, the only hosts http.request may call: names, '*.example.com', "
        "IPs or CIDRs.",
    )
    deny_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts http.request must never call, on top of link-local and cloud "
        "metadata addresses (always refused unless allow_hosts names them).",
    )


SETTINGS: dict[str, type[_Settings]] = {
    "slack": SlackSettings,
    "servicenow": ServiceNowSettings,
    "salesforce": SalesforceSettings,
    "inventory": InventorySettings,
    "http": HttpSettings,
}

#: What each connection reads when hookline.yaml does not say otherwise.
ENV_DEFAULTS: dict[str, dict[str, str]] = {
    "slack": {
        "token": "${SLACK_BOT_TOKEN:-}",
        "api_url": "${SLACK_API_URL:-https://slack.com/api/}",
        "webhook_url": "${SLACK_WEBHOOK_URL:-}",
        "timeout": "${SLACK_TIMEOUT:-10}",
    },
    "servicenow": {
        "instance": "${SERVICENOW_INSTANCE:-}",
        "username": "${SERVICENOW_USERNAME:-}",
        "password": "${SERVICENOW_PASSWORD:-}",
        "timeout": "${SERVICENOW_TIMEOUT:-10}",
    },
    "salesforce": {
        "instance_url": "${SALESFORCE_INSTANCE_URL:-}",
        "session_id": "${SALESFORCE_SESSION_ID:-}",
        "username": "${SALESFORCE_USERNAME:-}",
        "password": "${SALESFORCE_PASSWORD:-}",
        "security_token": "${SALESFORCE_SECURITY_TOKEN:-}",
        "domain": "${SALESFORCE_DOMAIN:-login}",
        "api_version": "${SALESFORCE_API_VERSION:-59.0}",
        "timeout": "${SALESFORCE_TIMEOUT:-10}",
    },
    "inventory": {
        "url": "${INVENTORY_API_URL:-}",
        "token": "${INVENTORY_API_TOKEN:-}",
        "timeout": "${INVENTORY_TIMEOUT:-10}",
    },
    "http": {"timeout": "${HTTP_TIMEOUT:-30}"},
}


#: ``token: prefect-secret:slack-bot-token`` reads the Prefect Secret block ``slack-bot-token``.
SECRET_PREFIX = "prefect-secret:"

SecretLoader = Callable[[str], str]
"""``secrets(name) -> value``. Raises `LookupError` when no secret has that name; any other
exception is a failure to read it (a network error or a 5xx is retried as transient)."""


def _load_secret(connection: str, key: str, name: str, secrets: SecretLoader | None) -> str:
    where = f"connections.{connection}.{key}"
    if secrets is None:
        raise NotConfiguredError(
            f"{connection} is not configured: {where} names the Prefect Secret block {name!r}, "
            f"but secrets can only be read inside a Hookline flow run ({anchor(connection)})",
            connector=connection,
        )
    what = f"{where}: reading the Prefect Secret block {name!r}"
    try:
        return secrets(name)
    except LookupError:
        raise NotConfiguredError(
            f"{connection} is not configured: {where}: there is no Prefect Secret block "
            f"{name!r} (create it, or fix the name) ({anchor(connection)})",
            connector=connection,
        ) from None
    except ConnectorError:
        raise
    except Exception as exc:
        # The Prefect API down or overloaded is not a configuration problem: retry the step.
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(status, int) and (status == 429 or status >= 500):
            raise TransientError(
                f"{connection}: {what} failed: HTTP {status}", connector=connection, status=status
            ) from None
        mapped = error_for_exception(connection, exc, what=what)
        if mapped is not None:
            raise mapped from None
        raise PermanentError(
            f"{connection}: {what} failed: {type(exc).__name__}: {exc} ({anchor(connection)})",
            connector=connection,
        ) from None


def anchor(connection: str) -> str:
    """Where docs/connectors.md explains a connection."""
    return f"docs/connectors.md#{connection}"


def raw_settings(connection: str, config: HooklineConfig | None) -> dict[str, Any]:
    """The unresolved settings: built-in env defaults overridden by hookline.yaml, key by key."""
    raw: dict[str, Any] = dict(ENV_DEFAULTS[connection])
    if config is not None:
        raw.update(config.connections.get(connection) or {})
    return raw


def variable_for(raw: Mapping[str, Any], key: str, connection: str) -> str:
    """The environment variable a setting reads, or its hookline.yaml path if it reads none."""
    match = _REF.search(str(raw.get(key, "")))
    return match.group(1) if match else f"connections.{connection}.{key}"


def load_settings(
    connection: str,
    config: HooklineConfig | None = None,
    environ: Mapping[str, str] | None = None,
    secrets: SecretLoader | None = None,
) -> _Settings:
    """Resolve and validate one connection's settings.

    A value ``prefect-secret:<block name>`` is read with ``secrets(<block name>)``; the caller
    (the flow layer) supplies that loader so that connectors import nothing of Prefect.

    Raises:
        KeyError: ``connection`` is not one of `SETTINGS`.
        NotConfiguredError: a referenced variable is unset, a secret cannot be loaded, or a
            value is invalid; the message names the variable or the secret.
    """
    model = SETTINGS[connection]
    raw = raw_settings(connection, config)
    try:
        values = resolve(raw, where=f"connections.{connection}", environ=environ)
    except ConfigError as exc:
        raise NotConfiguredError(
            f"{connection} is not configured: {exc} ({anchor(connection)})",
            connector=connection,
        ) from None
    for key, value in values.items():
        if isinstance(value, str) and value.startswith(SECRET_PREFIX):
            values[key] = _load_secret(connection, key, value[len(SECRET_PREFIX) :], secrets)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else ""
            where = variable_for(raw, key, connection) if key in raw else f"connections.{key}"
            problem = f"{where}: {err['msg']}"
            if err["type"] == "extra_forbidden":
                problem += f" (valid keys: {', '.join(model.model_fields)})"
            problems.append(problem)
        raise NotConfiguredError(
            f"{connection} is misconfigured: {'; '.join(problems)} ({anchor(connection)})",
            connector=connection,
        ) from None


def require(
    connection: str,
    settings: _Settings,
    raw: Mapping[str, Any],
    *keys: str,
) -> None:
    """Raise `NotConfiguredError` naming the variables behind the unset ``keys``."""
    missing = [k for k in keys if getattr(settings, k) is None]
    if missing:
        names = " and ".join(variable_for(raw, k, connection) for k in missing)
        raise NotConfiguredError(
            f"{connection} is not configured: set {names} ({anchor(connection)})",
            connector=connection,
            unset=len(missing) == len(keys),
        )
