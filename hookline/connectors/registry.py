"""Connector declarations, and the registry everything else reads them from.

A vendor module declares what it offers in one `Connector`::

    CONNECTOR = Connector(
        name="inventory",
        settings=InventorySettings,   # connections.inventory; its fields name their env vars
        client=make_client,           # (settings, ClientContext) -> the client actions take
        requires=("url", "token"),    # none set: not configured (preview); some: an error
        actions=(upsert_service, remove_service),  # inventory.upsert_service, ...
    )

`register` adds it to `CONNECTORS` (by name: what `build_client` takes and `Action.connector`
says), its actions to `ACTIONS` (``<connection>.<function name>``) and its settings' defaults
to `ENV_DEFAULTS`; `hookline.connectors` registers the built-in connectors. The recipe
validator (`hookline check`), the dry run, a flow's preview mode and `hookline up`'s banner
read only these. docs/connectors.md#adding-a-connector says how to add one.
"""

from __future__ import annotations

import inspect
import os
import re
import ssl
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hookline.config import HooklineConfig
from hookline.connectors._http import ca_file, ssl_context
from hookline.connectors.errors import NotConfiguredError
from hookline.connectors.settings import (
    ConnectorSettings,
    SecretLoader,
    anchor,
    check_required,
    env_defaults,
    load_settings,
    raw_settings,
    variable_for,
)

S = TypeVar("S", bound=ConnectorSettings)

#: The reserved parameter the engine fills; recipes cannot set it.
IDEMPOTENCY_KEY = "idempotency_key"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ClientContext:
    """What a client factory gets besides its settings."""

    connection: str
    """The ``connections.<connection>`` section (and docs anchor) the settings came from."""
    raw: Mapping[str, Any]
    """The unresolved settings (``${SLACK_BOT_TOKEN:-}``), to name variables in errors."""
    environ: Mapping[str, str]

    def variable(self, key: str) -> str:
        """The environment variable (or hookline.yaml key) setting ``key`` reads."""
        return variable_for(self.raw, key, self.connection)

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying SSL context for one client: it trusts ``SSL_CERT_FILE`` or
        ``REQUESTS_CA_BUNDLE`` if either is set, else the system CAs.

        Always one, never None: urllib (slack_sdk's transport) given no context builds a
        default one for every connection, which loads the whole CA bundle each time: about
        20 ms CPU per Slack call here (bench/README.md, "Sustained")."""
        return ssl_context(self.environ)

    def verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify=``: httpx reads neither CA variable by itself in every version
        (True: httpx's own CAs, loaded once per client)."""
        return self.ssl_context() if ca_file(self.environ) else True

    def misconfigured(self, key: str, problem: str) -> NotConfiguredError:
        """The error for a setting the vendor's SDK refused (say, not an https URL)."""
        return NotConfiguredError(
            f"{self.connection} is misconfigured: {self.variable(key)}: {problem} "
            f"({anchor(self.connection)})",
            connector=self.connection,
        )


@dataclass(frozen=True)
class Connector(Generic[S]):
    """One connector: its settings, how its client is made, its actions."""

    name: str
    """What `build_client` takes and `Action.connector` says: ``slack``, ``slack_webhook``."""
    actions: tuple[Callable[..., Any], ...]
    """``action(client, *, ...) -> TypedDict``; each is ``<connection>.<function name>``."""
    settings: type[S] | None = None
    """The model of ``connections.<connection>``; fields name their environment variables."""
    client: Callable[[S, ClientContext], Any] | None = None
    """Makes the client from resolved settings; raises `NotConfiguredError` or a
    `ConnectorError` (a failed login). None: `provided_by` hands it out."""
    requires: tuple[str, ...] | tuple[tuple[str, ...], ...] = ()
    """Settings without which there is no client: a tuple of keys, or of alternative groups
    (``(("username", "password"), ("instance_url", "session_id"))``). None of them set: not
    configured (`hookline up` previews its steps); some: an error naming the rest."""
    section: str | None = None
    """The ``connections:`` section and action prefix, when not ``name`` (``slack_webhook``
    reads ``connections.slack``; its action is ``slack.post_webhook``)."""
    mrkdwn: frozenset[str] = frozenset()
    """Parameters whose text is Slack mrkdwn: template values inserted there are escaped."""
    provided_by: str | None = None
    """Who provides the client when there is no `client` factory (the worker's memory)."""

    def __post_init__(self) -> None:
        where = f"connector {self.name!r}"
        if not _NAME.match(self.name) or (self.section and not _NAME.match(self.section)):
            raise ValueError(f"{where}: names are lower_snake_case, like 'slack' or 'servicenow'")
        if (self.client is None) == (self.provided_by is None):
            raise ValueError(f"{where}: give a client factory, or say who provides the client")
        if self.client is not None and self.settings is None:
            raise ValueError(f"{where}: a client factory needs a settings model")
        if not self.actions:
            raise ValueError(f"{where}: declares no actions")
        fields = self.settings.model_fields if self.settings is not None else {}
        unknown = [k for group in self.alternatives for k in group if k not in fields]
        if unknown:
            valid = ", ".join(fields) or "none"
            raise ValueError(f"{where}: requires unknown settings {unknown}; valid: {valid}")

    @property
    def connection(self) -> str:
        """The ``connections:`` section, docs anchor and action prefix."""
        return self.section or self.name

    @property
    def alternatives(self) -> tuple[tuple[str, ...], ...]:
        """`requires` as groups of settings, any one of which suffices."""
        if all(isinstance(r, str) for r in self.requires):
            return (typing.cast(tuple[str, ...], self.requires),) if self.requires else ()
        return typing.cast(tuple[tuple[str, ...], ...], self.requires)


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
    def from_function(
        cls,
        name: str,
        connector: str,
        func: Callable[..., Any],
        mrkdwn: frozenset[str] = frozenset(),
    ) -> Action:
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
            mrkdwn=mrkdwn & names,
        )


#: Registered connectors by name (what `build_client` accepts), in registration order.
CONNECTORS: dict[str, Connector[Any]] = {}
#: Every action recipes can use, by ``<connection>.<function name>``.
ACTIONS: dict[str, Action] = {}
#: What each ``connections:`` section reads when hookline.yaml does not say otherwise.
ENV_DEFAULTS: dict[str, dict[str, str]] = {}

_sections: dict[str, type[ConnectorSettings]] = {}


def register(connector: Connector[Any]) -> Connector[Any]:
    """Make ``connector`` and its actions available to recipes, `build_client` and previews.

    Raises:
        ValueError: the name or an action name is taken, its section is read by another
            connector with another settings model, or a setting cannot come from the
            environment; nothing is registered then.
    """
    name, section = connector.name, connector.connection
    if name in CONNECTORS:
        raise ValueError(f"connector {name!r} is already registered")
    model = connector.settings
    known = _sections.get(section)
    if model is not None and known is not None and known is not model:
        raise ValueError(
            f"connector {name!r}: connections.{section} is read with {known.__name__} "
            f"already, not {model.__name__}"
        )
    defaults = env_defaults(section, model) if model is not None else None
    actions: dict[str, Action] = {}
    for func in connector.actions:
        action = f"{section}.{func.__name__}"
        if action in ACTIONS or action in actions:
            raise ValueError(f"connector {name!r}: action {action!r} is already registered")
        actions[action] = Action.from_function(action, name, func, connector.mrkdwn)
    CONNECTORS[name] = connector
    ACTIONS.update(actions)
    if model is not None and defaults is not None:
        _sections[section] = model
        ENV_DEFAULTS[section] = defaults
    return connector


def unregister(name: str) -> None:
    """Forget the connector ``name`` and its actions (tests that register their own)."""
    connector = CONNECTORS.pop(name)
    for action in [a for a, spec in ACTIONS.items() if spec.connector == name]:
        del ACTIONS[action]
    section = connector.connection
    if not any(c.connection == section for c in CONNECTORS.values()):
        _sections.pop(section, None)
        ENV_DEFAULTS.pop(section, None)


def get_action(name: str) -> Action:
    """The action called ``name``.

    Raises:
        KeyError: no such action; the message lists the valid names.
    """
    try:
        return ACTIONS[name]
    except KeyError:
        raise KeyError(f"unknown action {name!r}; valid: {', '.join(sorted(ACTIONS))}") from None


def _connector(name: str) -> Connector[Any]:
    try:
        return CONNECTORS[name]
    except KeyError:
        valid = ", ".join(CONNECTORS)
        raise KeyError(f"unknown connector {name!r}; valid: {valid}") from None


def _settings(
    connector: Connector[Any],
    config: HooklineConfig | None,
    environ: Mapping[str, str],
    secrets: SecretLoader | None,
) -> tuple[ConnectorSettings, dict[str, Any]]:
    """Its settings, checked for `Connector.requires`, and their unresolved form."""
    section, model = connector.connection, connector.settings
    if model is None:  # pragma: no cover - Connector's own check: a factory needs settings
        raise KeyError(connector.name)
    settings = load_settings(section, model, config, environ, secrets)
    raw = raw_settings(section, model, config)
    check_required(section, settings, raw, connector.alternatives)
    return settings, raw


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
        ConnectorError: the client's own setup failed (a Salesforce password login).
    """
    spec = _connector(connector)
    if spec.client is None:
        raise NotConfiguredError(
            f"{connector} is not configured here: {spec.provided_by}", connector=connector
        )
    env = os.environ if environ is None else environ
    settings, raw = _settings(spec, config, env, secrets)
    if timeout is not None and 0 < timeout < settings.timeout:
        settings = settings.model_copy(update={"timeout": timeout})
    return spec.client(settings, ClientContext(spec.connection, raw, env))


def configured(
    connector: str,
    config: HooklineConfig | None = None,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """False only when ``connector`` has no configuration at all: none of its required
    settings is given. Under `hookline up` its steps then record what they would send.

    Reads settings only: no Prefect Secret, no network. A half-configured or invalid
    connector counts as configured, so that its steps fail and say why.
    """
    spec = _connector(connector)
    if spec.client is None:
        return True  # provided where it runs
    try:
        _settings(spec, config, os.environ if environ is None else environ, None)
    except NotConfiguredError as exc:
        return not exc.unset
    return True


def unconfigured(
    config: HooklineConfig | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The connectors with no configuration at all (`configured`), in registration order."""
    return [name for name in CONNECTORS if not configured(name, config, environ)]
