"""Vendor actions that recipe steps call: ``uses: slack.post_message`` and friends.

Each action is a plain, synchronous, typed function ``action(client, *, ...) -> TypedDict``
over an injected vendor client that `build_client` makes from settings. Actions know nothing
of Prefect, recipes or the receiver; the engine wraps a call in a task and owns retries
(`TransientError` only, honouring ``retry_after``). Errors: `hookline.connectors.errors`.

Each vendor module declares its settings, client factory and actions in one `Connector`
(`hookline.connectors.registry`); the built-in ones are registered here, in this order.

Every action accepts the reserved keyword ``idempotency_key`` (the engine fills it with
``<source>:<event_id>:<recipe>:<step>``; recipes cannot set it).
"""

from __future__ import annotations

from hookline.connectors import http, inventory, memory, salesforce, servicenow, slack, timer
from hookline.connectors.errors import (
    ConnectorError,
    NotConfiguredError,
    PermanentError,
    TransientError,
)
from hookline.connectors.registry import (
    ACTIONS,
    CONNECTORS,
    ENV_DEFAULTS,
    IDEMPOTENCY_KEY,
    Action,
    ClientContext,
    Connector,
    build_client,
    configured,
    get_action,
    register,
    unconfigured,
    unregister,
)

__all__ = [
    "ACTIONS",
    "CONNECTORS",
    "ENV_DEFAULTS",
    "IDEMPOTENCY_KEY",
    "Action",
    "ClientContext",
    "Connector",
    "ConnectorError",
    "NotConfiguredError",
    "PermanentError",
    "TransientError",
    "build_client",
    "configured",
    "get_action",
    "register",
    "unconfigured",
    "unregister",
]

for _connector in (
    slack.CONNECTOR,
    slack.WEBHOOK_CONNECTOR,
    servicenow.CONNECTOR,
    salesforce.CONNECTOR,
    inventory.CONNECTOR,
    http.CONNECTOR,
    memory.CONNECTOR,
    timer.CONNECTOR,
):
    register(_connector)
