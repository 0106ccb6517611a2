"""Connection settings: the ``connections:`` section of hookline.yaml, or the environment alone.

Each connector declares its settings model next to its actions (``SlackSettings`` in
``connectors/slack.py``); the model's fields name the environment variables they read by
default (``SLACK_BOT_TOKEN``, ``SERVICENOW_INSTANCE``, ...; see `ConnectorSettings`). Keys
given in hookline.yaml override those defaults key by key, so ``connections: {}`` or no
section at all still works from the environment. Values are resolved (``${NAME}`` /
``${NAME:-default}``) when a client is built, so a missing secret fails the step that needs
it, naming the variable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class ConnectorSettings(BaseModel):
    """Base of every connection's settings model (``connections.<section>`` in hookline.yaml).

    Each field reads the environment variable ``<SECTION>_<FIELD>`` (``SLACK_TIMEOUT``) when
    hookline.yaml does not set it; a field names another variable with
    ``Field(json_schema_extra={"env": "SLACK_BOT_TOKEN"})``, or none (hookline.yaml only) with
    ``{"env": None}``. `env_defaults` turns that into the ``${NAME:-default}`` defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(default=10.0, gt=0, description="Seconds before a call times out.")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value


def env_defaults(section: str, model: type[ConnectorSettings]) -> dict[str, str]:
    """What each setting of ``connections.<section>`` reads when hookline.yaml does not say:
    ``{"token": "${SLACK_BOT_TOKEN:-}", "timeout": "${SLACK_TIMEOUT:-10}", ...}``.

    Raises:
        ValueError: a field that reads a variable has a default no variable can spell (a list:
            give it ``json_schema_extra={"env": None}``).
    """
    out: dict[str, str] = {}
    for key, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        name = extra.get("env", f"{section}_{key}".upper())
        if name is None:
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, bool):
            text = str(default).lower()
        elif isinstance(default, float):
            text = f"{default:g}"
        elif default is None or isinstance(default, str | int):
            text = "" if default is None else str(default)
        else:
            raise ValueError(
                f"{model.__name__}.{key}: a {type(default).__name__} default cannot come from "
                f"the environment variable {name}; give the field "
                '`json_schema_extra={"env": None}` (set in hookline.yaml only)'
            )
        out[key] = f"${{{name}:-{text}}}"
    return out


_env_defaults = functools.cache(env_defaults)  # read at every client build; models are frozen


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


def raw_settings(
    connection: str, model: type[ConnectorSettings], config: HooklineConfig | None
) -> dict[str, Any]:
    """The unresolved settings: built-in env defaults overridden by hookline.yaml, key by key."""
    raw: dict[str, Any] = dict(_env_defaults(connection, model))
    if config is not None:
        raw.update(config.connections.get(connection) or {})
    return raw


def variable_for(raw: Mapping[str, Any], key: str, connection: str) -> str:
    """The environment variable a setting reads, or its hookline.yaml path if it reads none."""
    match = _REF.search(str(raw.get(key, "")))
    return match.group(1) if match else f"connections.{connection}.{key}"


def load_settings(
    connection: str,
    model: type[ConnectorSettings],
    config: HooklineConfig | None = None,
    environ: Mapping[str, str] | None = None,
    secrets: SecretLoader | None = None,
) -> ConnectorSettings:
    """Resolve and validate ``connections.<connection>`` into ``model``.

    A value ``prefect-secret:<block name>`` is read with ``secrets(<block name>)``; the caller
    (the flow layer) supplies that loader so that connectors import nothing of Prefect.

    Raises:
        NotConfiguredError: a referenced variable is unset, a secret cannot be loaded, or a
            value is invalid; the message names the variable or the secret.
    """
    raw = raw_settings(connection, model, config)
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


def check_required(
    connection: str,
    settings: ConnectorSettings,
    raw: Mapping[str, Any],
    alternatives: tuple[tuple[str, ...], ...],
) -> None:
    """Raise `NotConfiguredError` unless one of ``alternatives`` (groups of settings that
    together suffice) is complete; it names the variables missing from the group most nearly
    given (the first, if none is begun). ``unset``: no setting of any group is given.
    """
    if not alternatives:
        return
    given = [sum(getattr(settings, k) is not None for k in keys) for keys in alternatives]
    if any(n == len(keys) for n, keys in zip(given, alternatives, strict=True)):
        return
    keys = alternatives[given.index(max(given))]
    missing = [k for k in keys if getattr(settings, k) is None]
    names = " and ".join(variable_for(raw, k, connection) for k in missing)
    raise NotConfiguredError(
        f"{connection} is not configured: set {names} ({anchor(connection)})",
        connector=connection,
        unset=max(given) == 0,
    )
